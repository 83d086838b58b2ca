"""Stand-in dataset files in the real on-disk format, for trying the pipeline without the data.

Usage:
    python scripts/make_standin_data.py --dataset cifar10 --root DIR      # then: dataset.root=DIR
    python scripts/make_standin_data.py --dataset cifar100 --root DIR --train 1000 --test 200

Writes a few hundred random images per split where ``dataset.root=DIR`` makes train.py look for them
(``DIR/cifar-10-batches-py/``, ``DIR/train_32x32.mat``, ``DIR/train/<class>/``...), and ``DIR/STANDIN.txt``.
Runs on them record ``"standin": true`` in results.json's ``data_fingerprint``. Their numbers mean nothing
and are never comparable with the paper: the images are random. The finetuning sets (flowers102,
oxford_pets, ...) get a fixed handful of images (add ``batch_size=2``). The writers are data/standin.py's,
the same the tests read through the real readers.

Exit status: 0 when written, 2 for an unknown dataset, bad sizes or a root that cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: data/


def main(argv: list[str] | None = None) -> int:
    from data.standin import STANDIN_DATASETS, write_standin

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=STANDIN_DATASETS)
    parser.add_argument("--root", required=True, type=Path, help="the directory dataset.root will name")
    parser.add_argument("--train", type=int, default=500, help="training images (default 500)")
    parser.add_argument("--test", type=int, default=200, help="test images (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        summary = write_standin(args.dataset, args.root, n_train=args.train, n_test=args.test, seed=args.seed)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary)
    print(
        f"try it: python train.py dataset={args.dataset} dataset.root={args.root} ... "
        "(stand-in images: the numbers are never comparable with the paper)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
