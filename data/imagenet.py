"""ImageNet as two ImageFolder trees, ``root/train/<class>/*`` and ``root/val/<class>/*``.

The validation images must be sorted into class folders (the official tarball's val/ is flat; the usual
``valprep.sh`` script sorts it). Training uses the standard RandomResizedCrop(224) + horizontal flip,
evaluation Resize(256) + CenterCrop(224); both normalise with the standard ImageNet statistics.
"""

from pathlib import Path

from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from data.augment import AugmentSpec
from data.errors import DatasetNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SIZE = 224


def load_imagenet_folders(root: str | Path) -> tuple[ImageFolder, ImageFolder]:
    """Scan ``root/train`` and ``root/val``; both must exist and hold the same class folders."""
    root = Path(root).expanduser()
    missing = [str(root / d) for d in ("train", "val") if not (root / d).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"imagenet: missing director{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}. "
            f"Expected ImageFolder trees {root}/train/<class>/<image> and {root}/val/<class>/<image> "
            "(ImageNet cannot be downloaded automatically: get ILSVRC2012 from https://image-net.org, sort "
            "val/ into class folders, and set dataset.root=... to the directory holding train/ and val/)"
        )
    try:
        train, val = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    except FileNotFoundError as err:  # ImageFolder finds no class folders or no images
        raise DatasetNotFoundError(f"imagenet: {err} (under {root}; set dataset.root=...)") from err
    if train.classes != val.classes:
        raise ValueError(
            f"imagenet: {root}/train has {len(train.classes)} classes and {root}/val {len(val.classes)}; "
            "their class folders must be the same"
        )
    return train, val


def imagenet_transform(spec: AugmentSpec) -> T.Compose:
    """Training transform when ``spec`` asks for augmentation, else the evaluation transform."""
    if spec.crop_pad > 0 or spec.hflip:
        steps = [T.RandomResizedCrop(IMAGENET_SIZE), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(256), T.CenterCrop(IMAGENET_SIZE)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
