"""SVHN and Fashion-MNIST (Table 5) read through torchvision from small files written here in the real
formats: SVHN's MATLAB .mat (X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0) and Fashion-MNIST's
IDX files (big-endian magic 2051 / 2049, then the dimensions, then the bytes), by data/standin.py's
writers (the readers are torchvision's and scipy's, so the check is independent)."""

import numpy as np
import pytest
import torch

from data import DatasetNotFoundError, build_data
from data.standin import write_fashion_mnist, write_svhn
from data.svhn_fashion import FASHION_MEAN, FASHION_STD, SVHN_MEAN, SVHN_STD, load_fashion_mnist, load_svhn


def test_svhn_reads_train_plus_extra_and_maps_label_10_to_0(tmp_path):
    written = write_svhn(tmp_path)
    train_x, train_y, test_x, test_y = load_svhn(tmp_path)
    np.testing.assert_array_equal(train_x, np.concatenate([written["train"][0], written["extra"][0]]))
    np.testing.assert_array_equal(train_y, np.concatenate([written["train"][1], written["extra"][1]]))
    np.testing.assert_array_equal(test_x, written["test"][0])
    np.testing.assert_array_equal(test_y, written["test"][1])
    assert train_x.dtype == np.uint8 and train_y.min() >= 0 and train_y.max() <= 9
    only_train = load_svhn(tmp_path, extra=False)
    assert len(only_train[0]) == 40


def test_svhn_through_build_data_normalised_with_the_official_constants(tmp_path):
    written = write_svhn(tmp_path)
    b = build_data("svhn", root=tmp_path, batch_size=16, augment="none", download=False)
    assert (b.num_train, b.num_classes, b.in_chans, b.image_size) == (64, 10, 3, 32)
    x, y = next(iter(b.test))
    expected = (written["test"][0].astype(np.float64) / 255 - np.array(SVHN_MEAN)) / np.array(SVHN_STD)
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    assert y.tolist() == written["test"][1].tolist()
    assert build_data("svhn", root=tmp_path, batch_size=16, download=False, svhn_extra=False).num_train == 40
    aa = build_data("svhn", root=tmp_path, batch_size=16, augment="autoaugment", download=False)
    assert next(iter(aa.train))[0].shape == (16, 3, 32, 32)


def test_fashion_mnist_round_trips_and_trains_with_basic_and_cutout(tmp_path):
    written = write_fashion_mnist(tmp_path)
    train_x, train_y, test_x, test_y = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(train_x[..., 0], written["train"][0])
    np.testing.assert_array_equal(train_y, written["train"][1])
    np.testing.assert_array_equal(test_x[..., 0], written["t10k"][0])
    np.testing.assert_array_equal(test_y, written["t10k"][1])
    b = build_data("fashion_mnist", root=tmp_path, batch_size=10, augment="none", download=False)
    x, y = next(iter(b.test))
    assert y.tolist() == written["t10k"][1][:10].tolist()
    assert x.shape == (10, 1, 28, 28) and (b.num_train, b.in_chans) == (30, 1)
    expected = (written["t10k"][0][:10].astype(np.float64) / 255 - FASHION_MEAN[0]) / FASHION_STD[0]
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=1e-5)
    for augment in ("basic", "cutout"):
        xb, _ = next(
            iter(
                build_data(
                    "fashion_mnist", root=tmp_path, batch_size=10, augment=augment, download=False
                ).train
            )
        )
        assert xb.shape == (10, 1, 28, 28) and torch.isfinite(xb).all()
    with pytest.raises(ValueError, match="autoaugment"):
        build_data("fashion_mnist", root=tmp_path, batch_size=10, augment="autoaugment", download=False)


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"train_32x32\.mat"):
        build_data("svhn", root=tmp_path, batch_size=8, download=False)
    with pytest.raises(DatasetNotFoundError, match="FashionMNIST"):
        build_data("fashion_mnist", root=tmp_path, batch_size=8, download=False)
