"""Images/s of the tensor loader vs torchvision's DataLoader (PIL transforms, worker processes).

Usage (from the repository root):

    python benchmarks/bench_data.py                       # 20k images, batch 256, basic and cutout, 2 workers
    python benchmarks/bench_data.py --num-images 50000 --repeats 5 --device cuda

Random uint8 images are written to a temporary directory as CIFAR-10 python pickles, so both loaders
read them through data.cifar's reader, exactly as a real run. Each loader does one warm-up epoch (the
DataLoader starts its workers there), then ``--repeats`` timed training epochs; the script prints the
median images/s of each and the ratio tensor / torchvision. On a GPU the tensor loader's batches are
synchronised before the clock stops.
"""

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: sam/, models/, data/, trainer/

from data import build_data


def write_fake_cifar10(root: Path, num_images: int, seed: int = 0) -> None:
    """CIFAR-10 layout: data_batch_1..5, test_batch, batches.meta; rows of R, G, B planes, str keys (as the
    official Python 2 pickles load in torchvision)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    files = [f"data_batch_{i}" for i in range(1, 6)]
    for name, n in zip(files, np.array_split(np.arange(num_images), 5), strict=True):
        entry = {"data": rng.integers(0, 256, (len(n), 3072), dtype=np.uint8), "labels": [0] * len(n)}
        (d / name).write_bytes(pickle.dumps(entry, protocol=2))
    entry = {"data": rng.integers(0, 256, (100, 3072), dtype=np.uint8), "labels": [0] * 100}
    (d / "test_batch").write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def images_per_second(loader, repeats: int, device: torch.device) -> float:
    """Median over ``repeats`` epochs, after one warm-up epoch."""
    rates = []
    for ep in range(repeats + 1):
        loader.set_epoch(ep)
        start, n = time.perf_counter(), 0
        for x, _ in loader:
            n += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if ep > 0:
            rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-images", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loader (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision path")
    parser.add_argument("--augment", nargs="+", default=["basic", "cutout"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of the main process (the tensor loader). Default 1: a conservative "
        "comparison (1 core against 2 workers), and on a shared machine more threads only contend",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    print(
        f"{args.num_images} CIFAR-shaped images, batch {args.batch_size}, device {device}, "
        f"torch threads {torch.get_num_threads()}, torchvision workers {args.workers}, "
        f"median of {args.repeats} epochs after 1 warm-up"
    )
    print(f"{'augment':<12}{'tensor img/s':>14}{'torchvision img/s':>20}{'ratio':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        write_fake_cifar10(Path(tmp), args.num_images)
        for augment in args.augment:
            rates = {}
            for loader in ("tensor", "torchvision"):
                bundle = build_data(
                    "cifar10",
                    root=tmp,
                    batch_size=args.batch_size,
                    augment=augment,
                    loader=loader,
                    num_workers=args.workers,
                    device=device,
                    download=False,
                )
                rates[loader] = images_per_second(bundle.train, args.repeats, device)
                del bundle  # stops the DataLoader's persistent workers before the next measurement
            ratio = rates["tensor"] / rates["torchvision"]
            print(f"{augment:<12}{rates['tensor']:>14,.0f}{rates['torchvision']:>20,.0f}{ratio:>8.1f}x")


if __name__ == "__main__":
    main()
