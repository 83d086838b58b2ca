"""analysis/evaluation/: each metric of scripts/evaluate.py against an independent computation.

ECE and NLL on hand-made predictions worked out by hand; feature rank on features built with a known
rank and known variances; the probe on a linearly separable set (0 error) and on pure noise (chance);
each corruption's known effect (noise variance, flip fraction, contrast scale, brightness shift, blur of a
point, pixelate blocks, JPEG error against quality) and the reading of CIFAR-10-C's on-disk layout.
"""

import math

import numpy as np
import pytest
import torch

from analysis.evaluation.calibration import calibration_bins, calibration_report, expected_calibration_error
from analysis.evaluation.corruptions import FAMILIES, corrupt, read_corrupted
from analysis.evaluation.features import feature_rank, linear_probe, logits_and_features


# ------------------------------------------------------------------------------------------ calibration
def test_ece_and_nll_on_hand_made_predictions():
    # 4 examples, 2 classes. Confidences 0.9, 0.9 (bin 14: (14/15, 1]? no: 0.9 is in (13/15, 14/15]),
    # 0.6, 0.6 (bin 9: (9/15, 10/15]). Bin of 0.9: both correct -> acc 1, conf 0.9 -> gap 0.1.
    # Bin of 0.6: one correct -> acc 0.5, conf 0.6 -> gap 0.1. ECE = 2/4*0.1 + 2/4*0.1 = 0.1 = 10%.
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0])
    bins = calibration_bins(probs, labels, 15)
    assert [b.count for b in bins if b.count] == [2, 2]
    assert expected_calibration_error(bins) == pytest.approx(10.0)
    # NLL: -(ln .9 + ln .9 + ln .6 + ln .4) / 4, from logits whose softmax is probs
    report = calibration_report(probs.log(), labels)
    expected_nll = -(2 * math.log(0.9) + math.log(0.6) + math.log(0.4)) / 4
    assert report["nll"] == pytest.approx(expected_nll)
    assert report["ece_pct"] == pytest.approx(10.0)


def test_ece_bin_edges_are_right_closed_and_perfect_calibration_is_zero():
    # confidence exactly 2/3 = 10/15 belongs to bin 9, (9/15, 10/15]
    probs = torch.tensor([[2 / 3, 1 / 3]], dtype=torch.float64)
    bins = calibration_bins(probs, torch.tensor([0]), 15)
    assert bins[9].count == 1
    # 10 examples at confidence 0.7 of which exactly 7 are right: calibrated, ECE 0
    probs = torch.tensor([[0.7, 0.3]] * 10, dtype=torch.float64)
    labels = torch.tensor([0] * 7 + [1] * 3)
    assert expected_calibration_error(calibration_bins(probs, labels)) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ features
@pytest.mark.parametrize("rank", [1, 3, 7])
def test_feature_rank_of_features_with_known_rank(rank):
    gen = torch.Generator().manual_seed(rank)
    basis = torch.linalg.qr(torch.randn(32, rank, generator=gen, dtype=torch.float64))[
        0
    ]  # (32, rank) orthonormal
    coords = torch.randn(500, rank, generator=gen, dtype=torch.float64)
    feats = coords @ basis.T + 5.0  # rank-`rank` after centring (the offset must not count)
    assert feature_rank(feats, 0.99) == rank


def test_feature_rank_counts_components_to_the_variance_threshold():
    # independent axes with variances 100, 10, 2, 0.1 (total 112.1): cumulative 0.892, 0.9813, 0.9991, 1
    gen = np.random.default_rng(0)
    z = gen.standard_normal((20000, 4))
    z = (z - z.mean(0)) / z.std(0)
    z = np.linalg.qr(z)[0] * np.sqrt(len(z))  # exactly orthogonal unit-variance columns
    feats = z * np.sqrt([100.0, 10.0, 2.0, 0.1])
    assert feature_rank(feats, 0.99) == 3
    assert feature_rank(feats, 0.98) == 2
    assert feature_rank(feats, 0.85) == 1


@pytest.mark.slow  # scikit-learn import + 12 L-BFGS fits: ~8 s on two busy cores
def test_linear_probe_separates_a_separable_set_and_is_at_chance_on_noise():
    gen = np.random.default_rng(0)
    y = gen.integers(0, 3, 240)
    x = gen.standard_normal((240, 5)) + 8.0 * np.eye(5)[y]  # class k sits 8 sigma out along axis k
    assert np.all(np.argmax(x[:, :3], axis=1) == y)  # separable by a linear rule, with a wide margin
    result = linear_probe(x[:160], y[:160], x[160:], y[160:], seed=0)
    assert result.test_error_pct == 0.0
    assert set(result.val_error_pct) == {1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0}
    noise_y = gen.integers(0, 3, 240)  # labels independent of x: nothing to find
    noise = linear_probe(x[:160], noise_y[:160], x[160:], noise_y[160:], seed=0)
    assert noise.test_error_pct > 45.0  # chance is 66.7%


def test_features_are_the_heads_input():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x = torch.randn(10, 4)
    logits, feats, labels = logits_and_features(
        model, model[2], [(x[:5], torch.zeros(5)), (x[5:], torch.ones(5))]
    )
    torch.testing.assert_close(feats, torch.relu(model[0](x)))
    torch.testing.assert_close(logits, model(x))
    assert labels.tolist() == [0] * 5 + [1] * 5


# ------------------------------------------------------------------------------------------ corruptions
def grey(value: int, n: int = 64, size: int = 32, channels: int = 3) -> np.ndarray:
    return np.full((n, size, size, channels), value, dtype=np.uint8)


@pytest.mark.parametrize("severity,sigma", [(1, 0.04), (3, 0.08), (5, 0.10)])
def test_gaussian_noise_has_the_severitys_variance(severity, sigma):
    x = grey(128)  # 0.502: the noise (|n| < 4 sigma = 0.4) never clips
    out = corrupt(x, "gaussian_noise", severity).astype(np.float64) / 255
    # truncation to uint8 subtracts U(0, 1/255) on average: mean shift -0.5/255, variance + (1/255)^2/12
    assert out.mean() == pytest.approx(128 / 255 - 0.5 / 255, abs=1e-3)
    assert out.var() == pytest.approx(sigma**2 + (1 / 255) ** 2 / 12, rel=0.03)


def test_shot_noise_variance_is_x_over_c():
    x = grey(102)  # 0.4
    c = 100  # severity 3
    out = corrupt(x, "shot_noise", 3).astype(np.float64) / 255
    assert out.var() == pytest.approx(0.4 / c, rel=0.05)


def test_impulse_noise_flips_the_severitys_fraction_half_to_each_extreme():
    out = corrupt(grey(128, n=128), "impulse_noise", 5)  # c = 0.07
    assert np.mean(out != 128) == pytest.approx(0.07, abs=0.005)
    assert np.mean(out == 255) == pytest.approx(0.035, abs=0.004)
    assert np.mean(out == 0) == pytest.approx(0.035, abs=0.004)


def test_contrast_scales_deviations_from_each_images_channel_mean():
    gen = np.random.default_rng(0)
    x = gen.integers(64, 192, size=(8, 16, 16, 3)).astype(np.uint8)
    out = corrupt(x, "contrast", 2).astype(np.float64)  # c = 0.5
    xf = x.astype(np.float64) / 255
    mean = xf.mean(axis=(1, 2), keepdims=True)
    expected = np.floor(((xf - mean) * 0.5 + mean) * 255)
    np.testing.assert_array_equal(out, expected)


def test_brightness_raises_hsv_value_by_c_and_keeps_hue_and_saturation():
    import colorsys

    x = np.array([[[[200, 100, 50], [10, 20, 30]], [[0, 0, 0], [255, 240, 10]]]], dtype=np.uint8)
    out = corrupt(x, "brightness", 3)  # c = 0.15
    for i in range(2):
        for j in range(2):
            h, s, v = colorsys.rgb_to_hsv(*(x[0, i, j] / 255))
            expected = np.floor(np.clip(colorsys.hsv_to_rgb(h, s, min(v + 0.15, 1.0)), 0, 1) * 255)
            np.testing.assert_allclose(out[0, i, j], expected, atol=1)


def test_gaussian_blur_of_a_point_has_variance_sigma_squared_and_constant_images_stay():
    x = np.zeros((1, 33, 33, 1), dtype=np.float64)
    flat = corrupt(grey(77, n=2, size=16, channels=1), "gaussian_blur", 5)
    assert np.all(flat == 76) or np.all(flat == 77)  # a constant stays (up to the truncation of x/255*255)
    # the blur's impulse response: spread the uint8 point of 255, sigma = 1 at severity 5
    x = np.zeros((1, 33, 33, 1), dtype=np.uint8)
    x[0, 16, 16, 0] = 255
    from scipy.ndimage import gaussian_filter

    response = gaussian_filter(x[0, :, :, 0] / 255.0, sigma=1.0, mode="nearest", truncate=4.0)
    out = corrupt(x, "gaussian_blur", 5)[0, :, :, 0]
    np.testing.assert_array_equal(out, np.uint8(np.clip(response, 0, 1) * 255))
    rr = np.arange(33) - 16
    w = response / response.sum()
    assert (w.sum(1) * rr**2).sum() == pytest.approx(1.0, rel=0.01)  # variance along rows = sigma^2


def test_pixelate_makes_blocks_and_jpeg_error_grows_as_quality_falls():
    gen = np.random.default_rng(1)
    x = gen.integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    out = corrupt(x, "pixelate", 5)  # 32 -> int(32 * 0.65) = 20 -> 32 with box filters
    distinct_rows = len({out[0, i].tobytes() for i in range(32)})
    assert distinct_rows <= 20 < 32
    smooth = np.repeat(np.repeat(gen.integers(0, 256, size=(4, 8, 8, 3)), 4, 1), 4, 2).astype(np.uint8)
    errors = [np.abs(corrupt(smooth, "jpeg_compression", s).astype(float) - smooth).mean() for s in (1, 3, 5)]
    assert errors[0] < errors[1] < errors[2]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_keeps_shape_dtype_and_grows_with_severity_on_digits_sized_images(family):
    gen = np.random.default_rng(2)
    x = gen.integers(0, 256, size=(16, 8, 8, 1)).astype(np.uint8)
    outs = [corrupt(x, family, s, seed=0) for s in (1, 5)]
    assert all(o.shape == x.shape and o.dtype == np.uint8 for o in outs)
    change = [np.abs(o.astype(float) - x).mean() for o in outs]
    assert change[1] >= change[0] * 0.9  # severity 5 changes at least about as much as severity 1


def test_unknown_family_and_severity_are_refused():
    with pytest.raises(ValueError, match="unknown corruption 'fog'; implemented"):
        corrupt(grey(0, n=1), "fog", 1)
    with pytest.raises(ValueError, match="severity=6"):
        corrupt(grey(0, n=1), "contrast", 6)


def test_cifar10_c_files_are_read_in_their_on_disk_layout(tmp_path):
    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    labels = np.tile(np.arange(4, dtype=np.uint8), 5)  # 4 test images x 5 severities
    images = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    np.save(d / "labels.npy", labels)
    np.save(d / "fog.npy", images)
    files = read_corrupted(tmp_path, "cifar10")
    assert list(files) == ["fog"]
    imgs, lab = files["fog"]
    assert imgs[4 * 2, 0, 0, 0] == 8 and lab.tolist() == labels.tolist()  # severity 3 starts at row 2N
    assert read_corrupted(tmp_path, "cifar100") is None
    np.save(d / "bad.npy", images[:7])
    with pytest.raises(ValueError, match=r"bad\.npy"):
        read_corrupted(tmp_path, "cifar10")


class AlwaysClass(torch.nn.Module):
    """Predicts one class whatever the image: its error on a set is the share of other labels."""

    def __init__(self, k: int, num_classes: int):
        super().__init__()
        self.k, self.num_classes = k, num_classes

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), self.k), self.num_classes).float()


def test_corruption_errors_read_cifar10_c_files_per_severity_and_respect_a_class_subset(tmp_path):
    from analysis.evaluation.run_evaluation import EvalOptions, corruption_errors
    from data.build import DatasetArrays

    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    test_labels = np.array([0, 3, 3, 7], dtype=np.uint8)
    np.save(d / "labels.npy", np.tile(test_labels, 5))
    np.save(d / "contrast.npy", np.zeros((20, 32, 32, 3), np.uint8))
    arrays = DatasetArrays(
        np.zeros((4, 32, 32, 3), np.uint8), test_labels.astype(np.int64), np.zeros((4, 32, 32, 3), np.uint8),
        test_labels.astype(np.int64), 10, (0.5,) * 3, (0.25,) * 3, tuple("0123456789"),
    )  # fmt: skip
    result = corruption_errors(AlwaysClass(3, 10), arrays, "cifar10", str(tmp_path), None, EvalOptions())
    assert "files under" in result["source"] and result["not_implemented"] == []
    assert result["families"]["contrast"] == {str(s): 50.0 for s in range(1, 6)}  # labels 0 and 7 are wrong
    # a run trained on classes [3, 7] (relabelled 0, 1): label 0 images are dropped, 3 -> 0, 7 -> 1
    subset = corruption_errors(
        AlwaysClass(0, 2), arrays, "cifar10", str(tmp_path), None, EvalOptions(), [3, 7]
    )
    assert subset["families"]["contrast"]["1"] == pytest.approx(100 / 3)


@pytest.mark.parametrize("preprocessing", ["official", "torchvision"])
def test_evaluation_sees_the_test_images_the_runs_own_loader_gave_it_at_its_image_size(preprocessing):
    """A run trained at dataset.image_size is evaluated on its test loader's images: resized by its own
    preprocessing (the evaluation used to resize bilinearly whatever the run's, TF1 bicubic by default)."""
    from analysis.evaluation.run_evaluation import evaluation_batches
    from data.build import build_data, load_arrays

    size = 16  # digits are 8 x 8
    run_test = build_data(
        "digits", root="unused", batch_size=64, eval_batch_size=100, augment="none", image_size=size,
        preprocessing=preprocessing, device="cpu", num_workers=0,
    ).test  # fmt: skip
    arrays = load_arrays("digits", root="unused")
    ours = list(
        evaluation_batches(
            arrays.test_images, arrays.test_labels, arrays.mean, arrays.std, size, 100, preprocessing
        )
    )
    theirs = list(run_test)
    assert [x.shape for x, _ in ours] == [x.shape for x, _ in theirs]
    for (x, y), (x_run, y_run) in zip(ours, theirs):
        assert torch.equal(y, y_run)
        torch.testing.assert_close(x, x_run, rtol=0, atol=1e-5)
    other = "torchvision" if preprocessing == "official" else "official"
    x_other, _ = next(evaluation_batches(arrays.test_images, arrays.test_labels, arrays.mean, arrays.std,
                                         size, 100, other))  # fmt: skip
    assert (x_other - theirs[0][0]).abs().max() > 1e-2  # the two methods differ: the check can fail
