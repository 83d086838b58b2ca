"""The embedded default dataset: scikit-learn's ``load_digits`` (1797 8x8 grey images, values 0..16).

It ships with scikit-learn, so a smoke run needs no download. Images become uint8 (N, 8, 8, 1) with
0..16 scaled to 0..255 (``round(v * 255 / 16)``). The train/test split is fixed: stratified by class,
360 test images (20%), ``random_state=0``, independent of the run seed, so test errors of different runs
are always measured on the same 360 images. Normalisation uses the mean / std of the 1437 training images.
"""

import numpy as np

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0  # fixed on purpose: not the run seed


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels); images (N, 8, 8, 1) uint8, labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return train_x, train_y, test_x, test_y


def digits_stats(train_images: np.ndarray) -> tuple[tuple[float], tuple[float]]:
    """Mean and std of the training pixels in [0, 1] (one channel)."""
    x = train_images.astype(np.float64) / 255.0
    return (float(x.mean()),), (float(x.std()),)
