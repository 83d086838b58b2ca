"""ImageNet as two ImageFolder trees, ``root/train/<class>/*`` and ``root/val/<class>/*``, and the image-file
pipeline it shares with the finetuning sets (Table 3).

The validation images must be sorted into class folders (the official tarball's val/ is flat; the usual
``valprep.sh`` script sorts it). Two preprocessings (``dataset.preprocessing``), both normalising with
the standard ImageNet statistics, at any resolution ``size`` (224 for Table 2; the model's for finetuning,
600 for EfficientNet-b7, as the SAM code's ``Imagenet(batch_size, image_size)`` source takes it):

* ``official`` (default; the SAM code's ``dataset_source_imagenet.py``, from the Flax/TPU ImageNet
  pipelines): training takes an Inception-style crop as ``tf.image.sample_distorted_bounding_box`` with
  the whole image as the box and the arguments ``_decode_and_random_crop`` passes:
  ``min_object_covered=0.1``, aspect ratio in [3/4, 4/3], area in [0.08, 1], 10 attempts (so every crop
  covers at least 10% of the image); a crop that is the whole image (all attempts failed) takes the
  evaluation path instead; the crop is resized to ``size`` x ``size`` **bicubic**, then flipped.
  Evaluation crops the centred square of side ``int(size / (size + 32) * min(h, w))`` (the code's
  ``CROP_PADDING = 32``: 224/256 at 224, 600/632 at 600) at offsets ``((h - side) + 1) // 2`` and resizes
  it to ``size`` bicubic.
* ``torchvision``: ``RandomResizedCrop(size)`` (area >= 0.08, bilinear) + flip; evaluation
  ``Resize(round(size / 0.875))`` + ``CenterCrop(size)`` (256 + 224 at 224), bilinear.

What stays different from the official pipeline: PIL's bicubic (antialiased, clipped to uint8) is not
TF1's ``resize_bicubic`` (no antialiasing, unclipped floats); the crop is drawn by our code from TF's
documented rules, with torch's RNG; no shuffle buffer (we shuffle the whole epoch).
"""

import math
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from data.augment import AugmentSpec
from data.errors import DatasetNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SIZE = 224
CROP_PADDING = 32  # the official eval crop: size / (size + 32) of the short side (600 / 632 at 600)
CENTER_CROP_FRACTION = 0.875  # torchvision's eval crop: Resize(size / 0.875) + CenterCrop(size)
PREPROCESSINGS = ("official", "torchvision")


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


class DistortedBoundingBoxCrop:
    """The official training crop (see module docstring), resized to ``size`` bicubic; a PIL transform.

    Draws from torch's global RNG (the torchvision loader seeds it per example). Per attempt: an aspect
    ratio w/h uniform in ``aspect_range``; a height uniform over the heights whose area (at that ratio)
    lies in ``area_range`` of the image, capped by the image; width = round(height * ratio); accepted when
    the crop fits, its area is in ``area_range`` and it covers at least ``min_object_covered`` of the
    image; then a uniform position. After ``max_attempts`` failures: the evaluation crop.
    """

    def __init__(
        self,
        size: int = IMAGENET_SIZE,
        min_object_covered: float = 0.1,
        aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
        area_range: tuple[float, float] = (0.08, 1.0),
        max_attempts: int = 10,
    ) -> None:
        self.size = size
        self.min_object_covered = min_object_covered
        self.aspect_range = aspect_range
        self.area_range = area_range
        self.max_attempts = max_attempts

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) of an accepted crop, or None when every attempt failed."""
        total = width * height
        min_area, max_area = self.area_range[0] * total, self.area_range[1] * total
        for _ in range(self.max_attempts):
            lo, hi = self.aspect_range
            ratio = lo + (hi - lo) * float(torch.rand(()))
            h_min = round(math.sqrt(min_area / ratio))
            h_max = min(round(math.sqrt(max_area / ratio)), height, int(width / ratio + 0.5))
            if h_min > h_max:
                continue
            h = h_min + int(torch.randint(h_max - h_min + 1, ()))
            w = round(h * ratio)
            area = w * h
            if not (min_area <= area <= max_area and 0 < w <= width and 0 < h <= height):
                continue
            if area < self.min_object_covered * total:
                continue
            top = int(torch.randint(height - h + 1, ()))
            left = int(torch.randint(width - w + 1, ()))
            return top, left, h, w
        return None

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        box = self.crop_box(width, height)
        if box is None or (box[2], box[3]) == (height, width):  # the whole image: the official eval path
            return official_center_crop(img, self.size)
        top, left, h, w = box
        # Crop first, then resize the crop alone (as decode_and_crop_jpeg + resize): no pixel from outside.
        return img.crop((left, top, left + w, top + h)).resize((self.size, self.size), Image.BICUBIC)


def official_center_crop(img: Image.Image, size: int = IMAGENET_SIZE) -> Image.Image:
    """The official evaluation crop: the centred square of side int(size / (size + 32) * short side),
    offsets ((h - side) + 1) // 2, resized to size x size bicubic."""
    width, height = img.size
    side = int(size / (size + CROP_PADDING) * min(height, width))
    top, left = ((height - side) + 1) // 2, ((width - side) + 1) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)


def imagenet_transform(
    spec: AugmentSpec, preprocessing: str = "official", size: int = IMAGENET_SIZE
) -> T.Compose:
    """Training transform at ``size`` when ``spec`` asks for augmentation, else the evaluation transform."""
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"dataset.preprocessing={preprocessing!r} is not one of {PREPROCESSINGS}")
    train = spec.crop_pad > 0 or spec.hflip
    if preprocessing == "official":
        eval_crop = partial(official_center_crop, size=size)  # picklable, for spawned workers
        steps = [DistortedBoundingBoxCrop(size), T.RandomHorizontalFlip()] if train else [eval_crop]
    elif train:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(round(size / CENTER_CROP_FRACTION)), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
