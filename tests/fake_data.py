"""Small datasets in the real on-disk formats, for tests that go through the real readers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _batch(rng: np.random.Generator, n: int, classes: int, label_key: str) -> dict:
    labels = rng.integers(0, classes, n)
    # class-dependent mean so a model can learn something; rows are R, G, B planes of 32x32
    base = (labels[:, None] * (200 // classes)).astype(np.int64)
    data = np.clip(base + rng.integers(0, 56, (n, 3072)), 0, 255).astype(np.uint8)
    return {"data": data, label_key: labels.tolist()}


def write_fake_cifar(root: Path, name: str, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
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


def write_fake_run(root: Path, name: str, **fields) -> Path:
    """A run directory with a results.json as train.py writes it (the fields compare/plot read)."""
    run = {
        "model": "wrn28_10",
        "dataset": "cifar100",
        "augment": "cutout",
        "optimizer": "sam",
        "rho": 0.1,
        "m": 32,
        "seed": 0,
        "epochs": 200,
        "label_noise": 0.0,
        "test_error": 15.0,
        "test_error_top5": None,
        "train_loss": 0.1,
        **fields,
    }
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(run))
    return run_dir


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
