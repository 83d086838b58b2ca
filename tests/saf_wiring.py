"""Test-only: ``python tests/saf_wiring.py ARGS`` is ``python tests/faults.py ARGS`` (train.py with the fault
hook) with SAF's example indices wired, the way the trainer is to wire them (issue 21).

SAF needs the training-set index of every row of each batch (``sam/variants/saf.py``). The shipped loaders
yield (x, y) only, so ``optimizer=saf`` is refused. Here, for the end-to-end tests of SAF (a real run through
train.py, kill -9 and resume), two patches stand in for that wiring:

* ``TensorLoader`` keeps ``batch_indices``: the positions ``perm[lo:hi]`` of the batch it just yielded
  (``data.sampling.draw_epoch`` is a pure function of (seed, epoch), so this is the loader's own order);
* ``trainer.build.build_variant`` gets ``example_indices=lambda: loader.batch_indices`` and
  ``num_examples=data.num_train`` for ``optimizer=saf``.

What the real wiring needs is exactly this: a loader attribute (or yield) with the current batch's
dataset indices (this rank's slice), and the two arguments to ``build_variant``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def install() -> None:
    import data.tensor_loader as tensor_loader
    import trainer.build as build
    from data.sampling import draw_epoch

    loader_cls = tensor_loader.TensorLoader
    plain_iter = loader_cls.__iter__

    def __iter__(self):
        if not self.train:
            yield from plain_iter(self)
            return
        draws = draw_epoch(
            self.num_examples,
            seed=self.seed,
            epoch=self.epoch,
            image_hw=self.image_hw,
            pad=self.spec.crop_pad,
            num_aa_policies=self._autoaugment.num_policies,
        )
        for (lo, hi), batch in zip(self._bounds[self.start_batch :], plain_iter(self)):
            self.batch_indices = draws.perm[lo:hi]
            yield batch

    loader_cls.__iter__ = __iter__
    built: dict = {}
    plain_build_data, plain_build_variant = build.build_data, build.build_variant

    def build_data(*args, **kwargs):
        built["data"] = plain_build_data(*args, **kwargs)
        return built["data"]

    def build_variant(name, *args, **kwargs):
        if name == "saf":
            loader = built["data"].train
            while not isinstance(loader, loader_cls):  # BatchCutoutLoader, ResizedLoader, RepeatedLoader
                loader = loader.loader
            kwargs["example_indices"] = lambda: loader.batch_indices
            kwargs["num_examples"] = built["data"].num_train
        return plain_build_variant(name, *args, **kwargs)

    build.build_data, build.build_variant = build_data, build_variant


def main() -> None:
    sys.path[0] = str(REPO)
    sys.path.insert(1, str(REPO / "tests"))
    install()
    import faults

    faults.main()


if __name__ == "__main__":
    main()
