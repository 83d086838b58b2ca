"""The trainer's plumbing around the SAM step: the epoch loop, checkpoints, preemption, tracking,
provenance and the DDP context. ``train.py`` uses it; ``import sam`` never loads it, so the optimizer
library stays torch-only (this package needs the ``[train]`` extra: hydra, wandb, tqdm)."""
