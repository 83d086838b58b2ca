"""The finetuning datasets of the paper's Table 3, read from their official on-disk formats.

Each becomes (train image paths, train labels, test image paths, test labels, class names); the images are
decoded per batch by the torchvision loader path, as ImageNet. Splits as the literature (and the paper's
TFDS sources) use them: the official train (+ validation where one exists) for finetuning, test for the
reported error.

| name | ``dataset.root`` holds | torchvision class | train / test |
|---|---|---|---|
| flowers102 | ``flowers-102/jpg/image_NNNNN.jpg``, ``imagelabels.mat``, ``setid.mat`` | Flowers102 (download) | train+val 2040 / test 6149 |
| oxford_pets | ``oxford-iiit-pet/images/*.jpg``, ``annotations/{trainval,test}.txt`` | OxfordIIITPet | trainval 3680 / test 3669 |
| stanford_cars | ``stanford_cars/{cars_train,cars_test}/``, ``devkit/{cars_meta,cars_train_annos}.mat``, ``cars_test_annos_withlabels.mat`` | StanfordCars | 8144 / 8041 |
| fgvc_aircraft | ``fgvc-aircraft-2013b/data/{images/,variants.txt,images_variant_{trainval,test}.txt}`` | FGVCAircraft (variant, 100 classes) | trainval 6667 / test 3333 |
| food101 | ``food-101/{images/<class>/,meta/{train,test}.json}`` | Food101 | 75750 / 25250 |
| birdsnap | ``birdsnap/{train,test}/<class>/*`` (ImageFolder; see below) | ImageFolder | as you split it |

Flowers102's torchvision class insists on the md5 of the official ``.mat`` files, so it is used to download
only and our reader parses the same files (1-based ``labels``, ``trnid``/``valid``/``tstid``). Stanford
Cars can no longer be downloaded (its URL is dead; torchvision says so). Birdsnap has no maintained loader:
the official release is a list of image URLs (many dead), so there is no canonical on-disk form; sort the
images you could fetch into ``birdsnap/train/<species>/`` and ``birdsnap/test/<species>/`` (the official
``test_images.txt`` names the 2443 test images) and the numbers will not be exactly the paper's test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.download_check import unreachable
from data.errors import STANDIN_COMMAND, DatasetNotFoundError


@dataclass(frozen=True)
class FileSplits:
    train_paths: list[str]
    train_labels: np.ndarray
    test_paths: list[str]
    test_labels: np.ndarray
    class_names: tuple[str, ...]


def _labels(values) -> np.ndarray:
    return np.asarray([int(v) for v in values], dtype=np.int64)


def _not_found(name: str, root: Path, expected: str, err: Exception, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name}: not found under dataset.root={root} ({err}). Expected {expected}. {how} Set dataset.root=... "
        f"to the directory that holds it. To try the pipeline without the data: "
        f"{STANDIN_COMMAND.format(name=name)}, then dataset.root=DIR (stand-in images, never comparable "
        "with the paper)."
    )


def load_flowers102(root: Path, download: bool) -> FileSplits:
    base = root / "flowers-102"
    needed = [base / "imagelabels.mat", base / "setid.mat", base / "jpg"]
    if download and not all(p.exists() for p in needed):
        from torchvision.datasets import Flowers102

        offline = unreachable(Flowers102._download_url_prefix)
        if offline is not None:
            raise _not_found(
                "flowers102",
                root,
                "flowers-102/",
                RuntimeError(f"cannot be downloaded: {offline}"),
                "dataset.download is already true: run once where the network is reachable.",
            )
        try:
            Flowers102(str(root), split="train", download=True)
        except Exception as err:
            raise _not_found("flowers102", root, "flowers-102/", err, "The download failed.") from err
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise _not_found(
            "flowers102",
            root,
            "flowers-102/jpg/image_00001.jpg..., flowers-102/imagelabels.mat, flowers-102/setid.mat",
            FileNotFoundError(", ".join(missing)),
            "dataset.download=true fetches them (https://www.robots.ox.ac.uk/~vgg/data/flowers/102/).",
        )
    from scipy.io import loadmat

    labels = loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]  # 1-based, image i -> labels[i-1]
    sets = loadmat(base / "setid.mat", squeeze_me=True)

    def split(*keys: str) -> tuple[list[str], np.ndarray]:
        ids = np.concatenate([np.atleast_1d(sets[k]) for k in keys]).astype(int)
        paths = [str(base / "jpg" / f"image_{i:05d}.jpg") for i in ids]
        return paths, _labels(np.atleast_1d(labels)[ids - 1] - 1)

    train = split("trnid", "valid")
    test = split("tstid")
    return FileSplits(*train, *test, tuple(str(c) for c in range(1, 103)))


def _torchvision_splits(
    name: str,
    make: Callable[[str], object],
    splits: tuple[str, str],
    expected: str,
    how: str,
    root: Path,
    download: bool = False,
) -> FileSplits:
    """Parse with the torchvision class; it exposes the file list and labels only as private attributes.

    ``how`` starting "dataset.download=true fetches them" is the advice for download=False; with download on,
    the host (the URL in ``how``) is probed first when ``expected``'s top folder is absent."""
    fetch = "dataset.download=true fetches them"
    if how.startswith(fetch) and download:
        url = how[how.index("https://") :].rstrip(").")
        how = f"dataset.download is already true: run once where the network is reachable ({url})."
        if not (root / expected.split("/", 1)[0]).exists():
            offline = unreachable(url)
            if offline is not None:
                raise _not_found(name, root, expected, RuntimeError(f"cannot be downloaded: {offline}"), how)
    try:
        train, test = make(splits[0]), make(splits[1])
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        raise _not_found(name, root, expected, err, how) from err

    def files_labels(ds) -> tuple[list[str], np.ndarray]:
        if hasattr(ds, "_samples"):  # StanfordCars
            return [str(p) for p, _ in ds._samples], _labels(t for _, t in ds._samples)
        files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
        if files is None or not hasattr(ds, "_labels"):
            raise RuntimeError(
                f"{type(ds).__name__}: this torchvision version hides its file list; update data/finegrained.py"
            )
        return [str(p) for p in files], _labels(ds._labels)

    return FileSplits(*files_labels(train), *files_labels(test), tuple(str(c) for c in train.classes))


def load_oxford_pets(root: Path, download: bool) -> FileSplits:
    from torchvision.datasets import OxfordIIITPet

    return _torchvision_splits(
        "oxford_pets",
        lambda s: OxfordIIITPet(str(root), split=s, download=download),
        ("trainval", "test"),
        "oxford-iiit-pet/images/*.jpg and oxford-iiit-pet/annotations/{trainval,test}.txt",
        "dataset.download=true fetches them (https://www.robots.ox.ac.uk/~vgg/data/pets/).",
        root,
        download,
    )


def load_stanford_cars(root: Path, download: bool) -> FileSplits:
    from torchvision.datasets import StanfordCars

    return _torchvision_splits(
        "stanford_cars",
        lambda s: StanfordCars(str(root), split=s, download=False),  # the official URL is dead
        ("train", "test"),
        "stanford_cars/{cars_train,cars_test}/, stanford_cars/devkit/{cars_meta,cars_train_annos}.mat and "
        "stanford_cars/cars_test_annos_withlabels.mat",
        "It cannot be downloaded any more (the official URL is dead): get a copy (e.g. from Kaggle) in this layout.",
        root,
    )


def load_fgvc_aircraft(root: Path, download: bool) -> FileSplits:
    from torchvision.datasets import FGVCAircraft

    return _torchvision_splits(
        "fgvc_aircraft",
        lambda s: FGVCAircraft(str(root), split=s, annotation_level="variant", download=download),
        ("trainval", "test"),
        "fgvc-aircraft-2013b/data/images/*.jpg, variants.txt and images_variant_{trainval,test}.txt",
        "dataset.download=true fetches them (https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/).",
        root,
        download,
    )


def load_food101(root: Path, download: bool) -> FileSplits:
    from torchvision.datasets import Food101

    return _torchvision_splits(
        "food101",
        lambda s: Food101(str(root), split=s, download=download),
        ("train", "test"),
        "food-101/images/<class>/<id>.jpg and food-101/meta/{train,test}.json",
        "dataset.download=true fetches them (5 GB, https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/).",
        root,
        download,
    )


def load_birdsnap(root: Path, download: bool) -> FileSplits:
    from torchvision.datasets import ImageFolder

    base = root / "birdsnap"
    missing = [str(base / d) for d in ("train", "test") if not (base / d).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"birdsnap: missing {', '.join(missing)}. Birdsnap has no maintained loader or download (the "
            "official release lists image URLs, many dead): sort the images into birdsnap/train/<species>/ and "
            "birdsnap/test/<species>/ (ImageFolder) and set dataset.root=... to their parent"
        )
    train, test = ImageFolder(str(base / "train")), ImageFolder(str(base / "test"))
    if train.classes != test.classes:
        raise ValueError(
            f"birdsnap: train has {len(train.classes)} classes and test {len(test.classes)}; they must match"
        )
    return FileSplits(
        [p for p, _ in train.samples],
        _labels(train.targets),
        [p for p, _ in test.samples],
        _labels(test.targets),
        tuple(train.classes),
    )


LOADERS = {
    "flowers102": load_flowers102,
    "oxford_pets": load_oxford_pets,
    "stanford_cars": load_stanford_cars,
    "fgvc_aircraft": load_fgvc_aircraft,
    "food101": load_food101,
    "birdsnap": load_birdsnap,
}
FINEGRAINED_DATASETS = tuple(LOADERS)


def load_finegrained(name: str, root: str | Path, download: bool) -> FileSplits:
    if name not in LOADERS:
        raise ValueError(f"dataset {name!r} is not one of {FINEGRAINED_DATASETS}")
    return LOADERS[name](Path(root).expanduser(), download)
