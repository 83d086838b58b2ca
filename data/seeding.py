"""Derive independent random streams from the run seed.

Every random choice in data/ (the train/val split, the label noise, each epoch's order and augmentation,
the per-batch cutout) draws from its own stream, keyed by the run seed and a fixed stream name, so
changing one of them (e.g. turning label noise on) never shifts the others.
"""

import zlib

import numpy as np

STREAM_SPLIT = "train_val_split"
STREAM_LABEL_NOISE = "label_noise"
STREAM_EPOCH = "epoch"
STREAM_BATCH_CUTOUT = "batch_cutout"  # the official per-batch cutout location (data.augment)


def derive_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit seed that is a pure function of (seed, stream, *keys)."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seeds and epochs must be non-negative integers, got seed={seed}, keys={keys}")
    # crc32 of the stream name gives a stable integer (Python's hash() of a str is salted per process).
    entropy = [int(seed), zlib.crc32(stream.encode()), *map(int, keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, stream, *keys))
