"""data/imagenet.py: the official SAM ImageNet preprocessing against its stated rules.

Crops are checked against the rules of ``tf.image.sample_distorted_bounding_box`` as the official code
calls it (coverage >= 0.1, aspect in [3/4, 4/3], inside the image, the eval crop when nothing fits); the
eval crop against the official arithmetic (side int(224/256 * short side), offsets ((h - side) + 1) // 2)
on an image that is constant exactly inside that square, so a crop one pixel off shows at the border.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from data import build_data
from data.imagenet import DistortedBoundingBoxCrop, official_center_crop


def test_training_crops_cover_at_least_ten_percent_with_the_stated_aspect_ratios():
    crop = DistortedBoundingBoxCrop()
    width, height = 500, 375
    torch.manual_seed(0)
    boxes = [crop.crop_box(width, height) for _ in range(2000)]
    assert all(b is not None for b in boxes)
    top, left, h, w = (np.array(v) for v in zip(*boxes, strict=True))
    area = h * w / (width * height)
    assert area.min() >= 0.1 and area.max() <= 1.0  # min_object_covered 0.1 overrides area_range's 0.08
    assert (area < 0.15).mean() > 0.01  # the lower end is reached, not a narrower range
    ratio = w / h
    assert (ratio >= 3 / 4 - 1 / h).all() and (ratio <= 4 / 3 + 1 / h).all()  # w = round(h * ratio)
    assert ratio.min() < 0.8 and ratio.max() > 1.25
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()


def test_no_fitting_crop_falls_back_to_the_eval_crop():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 600, 3), dtype=np.uint8))
    crop = DistortedBoundingBoxCrop()
    torch.manual_seed(0)
    assert crop.crop_box(600, 8) is None  # every crop of >= 10% is taller than 8 px at ratio <= 4/3
    assert np.array_equal(np.asarray(crop(img)), np.asarray(official_center_crop(img)))


@pytest.mark.parametrize(("width", "height"), [(300, 200), (257, 480), (224, 224)])
def test_eval_crop_is_the_centred_224_over_256_square_resized_bicubic(width, height):
    side = int(224 / 256 * min(width, height))
    top, left = ((height - side) + 1) // 2, ((width - side) + 1) // 2
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[top : top + side, left : left + side] = 200
    out = np.asarray(official_center_crop(Image.fromarray(pixels)))
    assert out.shape == (224, 224, 3)
    assert (out == 200).all()  # nothing from outside the square, even at the border
    # Bicubic, not bilinear: on a step edge bicubic overshoots, bilinear never does.
    edge = np.zeros((height, width, 3), dtype=np.uint8)
    edge[:, width // 2 :] = 200
    crossed = np.asarray(official_center_crop(Image.fromarray(edge))).astype(int)
    if side != 224:  # (a 224 square is not resized at all)
        assert crossed.max() > 200  # bicubic overshoots the step (bilinear would stay within [0, 200])


def test_build_data_offers_both_preprocessings_and_rejects_others(tmp_path):
    rng = np.random.default_rng(4)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (60 + 9 * i, 80, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.JPEG"
                )
    outs = {}
    for pre in ("official", "torchvision"):
        b = build_data("imagenet", root=tmp_path, batch_size=4, num_workers=0, preprocessing=pre)
        outs[pre] = next(iter(b.test))[0]
        assert outs[pre].shape == (4, 3, 224, 224) and next(iter(b.train))[0].shape == (4, 3, 224, 224)
    assert not torch.equal(outs["official"], outs["torchvision"])  # 224/256 bicubic vs 256 + 224 bilinear
    with pytest.raises(ValueError, match="'official', 'torchvision'"):
        build_data("imagenet", root=tmp_path, batch_size=4, preprocessing="tf")
