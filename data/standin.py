"""Small datasets in the real on-disk formats: stand-ins for trying the pipeline without the data, and
the files the tests read through the real readers (tests/fake_data.py imports them from here).

Every image is random (CIFAR's with a class-dependent mean, so a model learns something; the finetuning
sets' one flat grey level per label). Numbers trained on them mean nothing and are never comparable with
the paper: ``write_standin`` (scripts/make_standin_data.py) also leaves ``STANDIN.txt`` beside the files,
and runs on such a root record ``"standin": true`` in their data fingerprint.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

STANDIN_MARKER = "STANDIN.txt"


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _batch(rng: np.random.Generator, n: int, classes: int, label_key: str) -> dict:
    labels = rng.integers(0, classes, n)
    # class-dependent mean so a model can learn something; rows are R, G, B planes of 32x32
    base = (labels[:, None] * (200 // classes)).astype(np.int64)
    data = np.clip(base + rng.integers(0, 56, (n, 3072)), 0, 255).astype(np.uint8)
    return {"data": data, label_key: labels.tolist()}


def write_cifar(root: Path, name: str, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` or ``root/cifar-100-python`` with the official file names and keys.

    Keys are str: the official Python 2 pickles load that way with torchvision's ``encoding="latin1"``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        per = n_train // 5
        for i in range(1, 6):
            _dump(d / f"data_batch_{i}", _batch(rng, per, 10, "labels"))
        _dump(d / "test_batch", _batch(rng, n_test, 10, "labels"))
        _dump(d / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    elif name == "cifar100":
        d = root / "cifar-100-python"
        d.mkdir(parents=True, exist_ok=True)
        _dump(d / "train", _batch(rng, n_train, 100, "fine_labels"))
        _dump(d / "test", _batch(rng, n_test, 100, "fine_labels"))
        _dump(d / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    else:
        raise ValueError(f"name={name!r} is not one of cifar10, cifar100")
    return root


def write_svhn(root: Path, sizes=(("train", 40), ("extra", 24), ("test", 16)), seed: int = 0) -> dict:
    """``root/{train,extra,test}_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 is the digit 0).
    Returns {split: (images (N, 32, 32, 3), digits 0..9)}."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in sizes:
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        digits = rng.integers(0, 10, n)
        savemat(
            Path(root) / f"{split}_32x32.mat",
            {"X": images.transpose(1, 2, 3, 0), "y": np.where(digits == 0, 10, digits)[:, None]},
        )
        written[split] = (images, digits)
    return written


def write_fashion_mnist(root: Path, n_train: int = 30, n_test: int = 12, seed: int = 1) -> dict:
    """``root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, the unzipped IDX files
    (big-endian magic 2051 / 2049, the dimensions, then the bytes). Returns {prefix: (images, labels)}."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
        written[prefix] = (images, labels)
    return written


# ------------------------------------------------------------------------- the Table 3 sets, tiny
# Every image is one flat grey level that encodes its label (``30 + 60 * label``), so a batch tells us, by
# its pixels alone, whether each image arrived with its own label.
def level(label: int) -> int:
    return 30 + 60 * label


def jpg(path, label: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (level(label),) * 3).save(path, quality=95)


def write_flowers(root):
    from scipy.io import savemat

    base = root / "flowers-102"
    labels = [1, 2, 1, 3, 2, 3]  # 1-based, image i has labels[i-1]
    for i, lab in enumerate(labels, start=1):
        jpg(base / "jpg" / f"image_{i:05d}.jpg", lab - 1)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(
        base / "setid.mat",
        {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]), "tstid": np.array([[4, 5, 6]])},
    )
    return [0, 1, 0], [2, 1, 2]  # train (+val) and test labels, 0-based


def write_pets(root):
    base = root / "oxford-iiit-pet"
    train = [("Abyssinian_1", 1), ("beagle_2", 2), ("Abyssinian_3", 1)]
    test = [("beagle_4", 2), ("Abyssinian_5", 1)]
    (base / "annotations").mkdir(parents=True)
    for split, rows in (("trainval", train), ("test", test)):
        lines = [f"{name} {lab} {1 + lab % 2} 1" for name, lab in rows]
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for name, lab in rows:
            jpg(base / "images" / f"{name}.jpg", lab - 1)
    return [0, 1, 0], [1, 0]


def _struct(rows):
    dtype = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    return np.array([(1, 1, 10, 10, cls, fname) for cls, fname in rows], dtype=dtype).reshape(1, -1)


def write_cars(root):
    from scipy.io import savemat

    base = root / "stanford_cars"
    train = [(1, "00001.jpg"), (2, "00002.jpg"), (3, "00003.jpg")]
    test = [(3, "00001.jpg"), (1, "00002.jpg")]
    (base / "devkit").mkdir(parents=True)
    savemat(
        base / "devkit" / "cars_meta.mat",
        {"class_names": np.array([["AM General Hummer", "Acura RL", "Audi R8"]], dtype=object)},
    )
    savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _struct(train)})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _struct(test)})
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        for cls, fname in rows:
            jpg(base / folder / fname, cls - 1)
    return [0, 1, 2], [2, 0]


def write_aircraft(root):
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]
    train = [("1000001", "A300B4"), ("1000002", "Cessna 172"), ("1000003", "707-320")]
    test = [("1000004", "Cessna 172")]
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for split, rows in (("trainval", train), ("test", test)):
        (data / f"images_variant_{split}.txt").write_text("".join(f"{i} {v}\n" for i, v in rows))
        for i, v in rows:
            jpg(data / "images" / f"{i}.jpg", variants.index(v))
    return [1, 2, 0], [2]


def write_food(root):
    base = root / "food-101"
    train = {"apple_pie": ["apple_pie/11", "apple_pie/12"], "baklava": ["baklava/21"]}
    test = {"baklava": ["baklava/22"], "apple_pie": ["apple_pie/13"]}
    (base / "meta").mkdir(parents=True)
    classes = sorted(train)
    for split, meta in (("train", train), ("test", test)):
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
        for cls, items in meta.items():
            for item in items:
                jpg(base / "images" / f"{item}.jpg", classes.index(cls))
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    return [0, 0, 1], [1, 0]  # torchvision lists a split's classes in its json order


def write_birdsnap(root):
    for split, rows in (
        ("train", [("Acadian_Flycatcher", "a.jpg"), ("Zebra_Finch", "b.jpg")]),
        ("test", [("Zebra_Finch", "c.jpg"), ("Acadian_Flycatcher", "d.jpg")]),
    ):
        for cls, name in rows:
            jpg(root / "birdsnap" / split / cls / name, 0 if cls.startswith("Acadian") else 1)
    return [0, 1], [0, 1]  # ImageFolder: classes sorted, files sorted within each


FINETUNE_WRITERS = {  # each returns (train labels, test labels) in the loader's order
    "flowers102": write_flowers,
    "oxford_pets": write_pets,
    "stanford_cars": write_cars,
    "fgvc_aircraft": write_aircraft,
    "food101": write_food,
    "birdsnap": write_birdsnap,
}


def write_imagenet_tree(root: Path, classes: int = 3, per_class: int = 2, seed: int = 0) -> Path:
    """``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (val sorted into class folders), images of
    varied sizes and aspect ratios with random content, as the ImageFolder layout ImageNet is read from."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    sizes = [(64, 48), (40, 70), (90, 60), (50, 50)]
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = sizes[(c + i) % len(sizes)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{split}_{c}_{i}.JPEG", quality=90)
    return root


STANDIN_DATASETS = ("cifar10", "cifar100", "svhn", "fashion_mnist", "imagenet", *FINETUNE_WRITERS)


def write_standin(name: str, root: Path | str, n_train: int = 500, n_test: int = 200, seed: int = 0) -> str:
    """Stand-in files of dataset ``name`` under ``root`` (what ``dataset.root`` points at), in the real
    format, plus ``root/STANDIN.txt``; returns a one-line summary. ``n_*``: images per split (about; the
    finetuning sets are a fixed handful of images)."""
    if name not in STANDIN_DATASETS:
        raise ValueError(f"no stand-in writer for {name!r}; one of {', '.join(STANDIN_DATASETS)}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train={n_train} and n_test={n_test} must be positive")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if name in ("cifar10", "cifar100"):
        n_train = max(5, n_train - n_train % 5) if name == "cifar10" else n_train  # five equal batches
        write_cifar(root, name, n_train=n_train, n_test=n_test, seed=seed)
        counts = (n_train, n_test)
    elif name == "svhn":  # train + extra (the paper trains on both) + test
        extra = max(1, n_train // 2)
        train = max(1, n_train - extra)
        write_svhn(root, (("train", train), ("extra", extra), ("test", n_test)), seed)
        counts = (train + extra, n_test)
    elif name == "fashion_mnist":
        write_fashion_mnist(root, n_train, n_test, seed)
        counts = (n_train, n_test)
    elif name == "imagenet":
        per_class = max(1, -(-max(n_train, n_test) // 10))
        write_imagenet_tree(root, classes=10, per_class=per_class, seed=seed)
        counts = (10 * per_class, 10 * per_class)
    else:
        train, test = FINETUNE_WRITERS[name](root)
        counts = (len(train), len(test))
    (root / STANDIN_MARKER).write_text(
        f"Stand-in {name} files written by scripts/make_standin_data.py (seed {seed}): random images in the "
        "real on-disk format, for trying the pipeline. Numbers trained on them mean nothing and are never "
        "comparable with the paper.\n"
    )
    return f"{name}: stand-in files under {root} ({counts[0]} train / {counts[1]} test images)"


def is_standin(root: Path | str) -> bool:
    """Whether ``root`` holds stand-in files (write_standin's marker)."""
    return (Path(root).expanduser() / STANDIN_MARKER).is_file()
