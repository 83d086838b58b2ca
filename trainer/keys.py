"""Which config keys a resume or a comparison may ignore or fill in: shared by the trainer and the readers.

Plain constants (no Hydra, no torch), so that ``analysis/`` reads them without the trainer's imports.
"""

from __future__ import annotations

from typing import Any

# Keys that change how a run is executed or logged, not what it computes: they may differ on resume.
OPERATIONAL_KEYS = (
    "logger",
    "device",
    "compile",
    "dataset.root",
    "dataset.num_workers",
    "dataset.download",
    "trainer.log_every_n_steps",
    "trainer.progress_every_s",
    "trainer.checkpoint_interval_min",
    "trainer.save_final_model",
    "trainer.eval_batch_size",
    "trainer.max_nonfinite_steps",  # raised after an exit 3 to resume through a transient NaN streak
    "trainer.allow_data_change",
    "trainer.allow_config_change",
)

# Keys added after runs were written, each with the value that computes what the code did before the key
# existed. A checkpoint or results.json without the key matches a command that has this value (the
# resume is recorded); any other value is a real change, refused unless trainer.allow_config_change.
# Adding a key to the schema means adding it here too (tests/test_spec.py checks the format).
LEGACY_DEFAULTS: dict[str, Any] = {
    "trainer.allow_config_change": False,
    "label_noise_protocol": "flip",  # issue 20: exactly p*N moved to another class
    "dataset.cutout_mode": "per_image",  # issue 20: one square per image
    "dataset.autoaugment_crop_flip": True,  # issue 20: AutoAugment always followed by crop + flip
}
