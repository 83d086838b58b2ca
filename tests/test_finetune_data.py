"""The Table 3 datasets read from tiny files in each real on-disk format; class subsets; CIFAR at another
resolution.

Every image is one flat grey level that encodes its label (``30 + 60 * label``), so a batch tells us, by
its pixels alone, whether each image arrived with its own label; the expected labels and counts are the
ones this file wrote, not the loader's.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fake_data import FINETUNE_WRITERS as WRITERS

from data import DatasetNotFoundError, build_data
from data.imagenet import IMAGENET_MEAN, IMAGENET_STD


def labels_from_pixels(x: torch.Tensor) -> list[int]:
    grey = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return [round((g * 255 - 30) / 60) for g in grey.mean(dim=(1, 2, 3)).tolist()]


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_finetuning_dataset_reads_its_real_format(tmp_path, name):
    train_labels, test_labels = WRITERS[name](tmp_path)
    bundle = build_data(
        name,
        root=tmp_path,
        batch_size=1,
        eval_batch_size=2,
        augment="none",
        image_size=24,
        num_workers=0,
        download=False,
    )
    assert bundle.num_train == len(train_labels)
    assert bundle.image_size == 24 and bundle.in_chans == 3
    xs, ys = zip(*bundle.test)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (len(test_labels), 3, 24, 24)
    assert y.tolist() == test_labels  # in file order
    assert labels_from_pixels(x) == test_labels  # each image came with its own label
    bundle.train.set_epoch(0)
    seen = sorted(int(y) for _, y in bundle.train)
    assert seen == sorted(train_labels)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_missing_finetuning_dataset_names_the_layout(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match=f"{name}|dataset.root"):
        build_data(name, root=tmp_path, batch_size=1, num_workers=0, download=False)


def test_digits_class_subset_is_relabelled_in_the_given_order():
    from data.digits import load_digits_split

    _, _, test_x, test_y = load_digits_split()
    bundle = build_data(
        "digits", root=".", batch_size=32, eval_batch_size=1000, augment="none", classes=[7, 5]
    )
    assert bundle.num_classes == 2
    ((x, y),) = list(bundle.test)
    keep = np.isin(test_y, [7, 5])
    assert y.tolist() == [0 if t == 7 else 1 for t in test_y[keep]]
    # the images are the kept ones, in order (de-normalise and compare with the raw uint8 digits)
    raw = x[:, 0] * bundle.std[0] + bundle.mean[0]
    np.testing.assert_allclose(raw.numpy() * 255, test_x[keep][..., 0], atol=1e-3)
    with pytest.raises(ValueError, match=r"dataset.classes=\[5, 5\] is invalid"):
        build_data("digits", root=".", batch_size=32, classes=[5, 5])
    with pytest.raises(ValueError, match=r"in \[0, 10\)"):
        build_data("digits", root=".", batch_size=32, classes=[3, 10])


def test_image_size_upsamples_every_batch_bilinearly_with_torchvision_preprocessing():
    # preprocessing="torchvision" asked for by name: the default (official) became TF1's resize_bicubic, as
    # the SAM code (issue 20; tests/test_fidelity.py checks it).
    native = build_data("digits", root=".", batch_size=32, eval_batch_size=64, augment="none")
    big = build_data(
        "digits", root=".", batch_size=32, eval_batch_size=64, augment="none", image_size=20,
        preprocessing="torchvision",
    )  # fmt: skip
    (x8, _), (x20, _) = next(iter(native.test)), next(iter(big.test))
    assert x20.shape == (64, 1, 20, 20) and big.image_size == 20
    from torchvision.transforms.functional import InterpolationMode, resize

    expected = resize(x8, [20, 20], interpolation=InterpolationMode.BILINEAR, antialias=False)
    torch.testing.assert_close(x20, expected)
    assert not torch.equal(x20, F.interpolate(x8, size=(20, 20), mode="nearest"))


def test_train_repeats_make_an_epoch_of_consecutive_passes_and_resume_mid_epoch():
    base = build_data("digits", root=".", batch_size=256, augment="basic", seed=3)
    rep = build_data("digits", root=".", batch_size=256, augment="basic", seed=3, train_repeats=3)
    per_pass = len(base.train)
    assert len(rep.train) == 3 * per_pass
    rep.train.set_epoch(2)
    got = list(rep.train)
    expected = []
    for p in range(3):  # epoch 2 of the repeated loader = epochs 6, 7, 8 of the plain one
        base.train.set_epoch(2 * 3 + p)
        expected += list(base.train)
    assert len(got) == len(expected) == 3 * per_pass
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))
    k = per_pass + 2  # resume inside the second pass
    rep.train.set_epoch(2, start_batch=k)
    resumed = list(rep.train)
    assert len(resumed) == len(got) - k
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, got[k:]))
    with pytest.raises(ValueError, match="train_repeats=0"):
        build_data("digits", root=".", batch_size=256, train_repeats=0)
