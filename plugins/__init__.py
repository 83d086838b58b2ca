"""Your additions to the suite, one file each: importing this package imports every module in it.

A module here registers what it adds (``sam.variants.register_variant``) when imported; the trainer
imports this package before it validates a config, so ``optimizer=<name>`` then accepts the new name.
docs/adding-a-variant.md walks through a new SAM variant: one file here and one file in
``configs/optimizer/``. Not installed: it runs from the repository root like ``trainer/``.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
