"""Common corruptions at 5 severities (Hendrycks & Dietterich, ICLR 2019), for any in-memory dataset.

``read_corrupted(root, "cifar10")`` reads the real CIFAR-10-C / CIFAR-100-C files when they are there
(``<root>/CIFAR-10-C/<corruption>.npy``: uint8 (5 * N, 32, 32, 3), severity 1 first, and ``labels.npy``).
Otherwise ``corrupt(images, family, severity, seed)`` makes them on the fly from uint8 (N, H, W, C) images,
with the CIFAR-C severity constants of Hendrycks' ``make_cifar_c.py`` (our own implementation; randomness
from a seeded numpy generator, so the draws differ but their distribution is the same). Outputs are
truncated to uint8 as that script's ``np.uint8(...)`` does.

Faithful (the same operation, at any image size): gaussian_noise, shot_noise, impulse_noise,
speckle_noise, contrast, brightness (V += c in HSV, written as rgb * min(V + c, 1) / V, which is the same
thing), jpeg_compression (PIL, as the reference). Faithful on 32x32 images, an approximation on other
sizes because their constants are in pixels of a 32x32 image: gaussian_blur (scipy's filter, which
skimage calls), defocus_blur (disk kernel + 3x3 anti-alias, REFLECT_101 borders as OpenCV), zoom_blur
(scipy zoom, order 1), pixelate (PIL box resampling; the size is ``int(H * c)``), glass_blur (the
reference's loop, including its numpy "swap" of multichannel pixels, which copies rather than swaps).
Not implemented (they need ImageMagick, frost photographs or OpenCV): motion_blur, snow, frost, fog,
spatter, elastic_transform, saturate. The mean corruption error we report is the plain mean of the errors
over families and severities (not Hendrycks' AlexNet-normalised mCE).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SEVERITIES = (1, 2, 3, 4, 5)
CIFAR_C_DIRS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.uint8(np.clip(x, 0, 1) * 255)  # truncates, as the reference's np.uint8(...)


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    x = x / 255.0
    return _to_uint8(x + rng.normal(size=x.shape, scale=c))


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [500, 250, 100, 75, 50][severity - 1]
    x = x / 255.0
    return _to_uint8(rng.poisson(x * c) / c)


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """skimage's 's&p': each value flips with probability c, to 1 or 0 with equal odds."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    x = x / 255.0
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return _to_uint8(out)


def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    x = x / 255.0
    return _to_uint8(x + x * rng.normal(size=x.shape, scale=c))


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    x = x / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)  # per image and channel
    return _to_uint8((x - means) * c + means)


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """HSV value + c, clipped: rgb = V * f(H, S), so rgb' = rgb * min(V + c, 1) / V (grey when V = 0)."""
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    x = x / 255.0
    v = x.max(axis=3, keepdims=True)
    v_new = np.minimum(v + c, 1.0)
    scaled = np.where(v > 0, x * v_new / np.where(v > 0, v, 1.0), v_new)
    return _to_uint8(scaled)


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    x = x / 255.0
    return _to_uint8(gaussian_filter(x, sigma=(0, c, c, 0), mode="nearest", truncate=4.0))


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    from scipy.ndimage import correlate1d

    half = 8 if radius <= 8 else int(radius)
    ax = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(ax, ax)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    if radius <= 8:  # OpenCV's 3x3 Gaussian, REFLECT_101 borders ('mirror' in scipy)
        k = np.exp(-(np.arange(-1, 2) ** 2) / (2 * alias_blur**2))
        k /= k.sum()
        disk = correlate1d(correlate1d(disk, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")
    else:
        raise ValueError("defocus radii above 8 are not used by the CIFAR severities")
    return disk


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import correlate

    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = _disk(radius, alias)[None, :, :, None]
    return _to_uint8(correlate(x / 255.0, kernel, mode="mirror"))


def _clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    from scipy.ndimage import zoom

    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out = zoom(img[top : top + ch, top : top + ch], (factor, factor, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim : trim + h, trim : trim + h]


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    top = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    factors = np.arange(1, top, 0.01)
    out = []
    for img in x / 255.0:
        acc = np.zeros_like(img)
        for f in factors:
            acc += _clipped_zoom(img, f)
        out.append((img + acc) / (len(factors) + 1))
    return _to_uint8(np.stack(out))


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][
        severity - 1
    ]
    blurred = np.uint8(
        gaussian_filter(x / 255.0, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0) * 255
    )
    h, w = x.shape[1:3]
    for img in blurred:
        for _ in range(iterations):
            for i in range(h - delta, delta, -1):
                for j in range(w - delta, delta, -1):
                    dx, dy = rng.integers(-delta, delta, size=2)  # high exclusive, as np.random.randint
                    img[i, j] = img[i + dy, j + dx]  # the reference's tuple "swap" of views is this copy
    return _to_uint8(
        gaussian_filter(blurred / 255.0, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)
    )


def _pil_each(x: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    out = []
    for img in x:
        pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        arr = np.asarray(fn(pil))
        out.append(arr[:, :, None] if arr.ndim == 2 else arr)
    return np.stack(out).astype(np.uint8)


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = [80, 65, 58, 50, 40][severity - 1]

    def encode(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert(img.mode)

    return _pil_each(x, encode)


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[1:3]
    small = (max(1, int(w * c)), max(1, int(h * c)))
    return _pil_each(x, lambda img: img.resize(small, Image.BOX).resize((w, h), Image.BOX))


FAMILIES: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
    "brightness": brightness,
    "contrast": contrast,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
FAITHFUL_ANY_SIZE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "contrast",
    "brightness",
    "jpeg_compression",
)
NOT_IMPLEMENTED = ("motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform", "saturate")


def corrupt(images: np.ndarray, family: str, severity: int, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, C) -> the same shape, corrupted at ``severity`` (1..5)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown corruption {family!r}; implemented: {', '.join(FAMILIES)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity={severity!r} must be one of {SEVERITIES}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    stream = list(FAMILIES).index(family) * 10 + severity
    return FAMILIES[family](images, severity, np.random.default_rng([seed, stream]))


def read_corrupted(root: str | Path, dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """{family: (images (5N, H, W, C) uint8, labels (5N,))} from <root>/CIFAR-10(0)-C, or None if absent."""
    if dataset not in CIFAR_C_DIRS:
        return None
    directory = Path(root).expanduser() / CIFAR_C_DIRS[dataset]
    labels_path = directory / "labels.npy"
    if not labels_path.is_file():
        return None
    labels = np.load(labels_path).astype(np.int64)
    out = {}
    for path in sorted(directory.glob("*.npy")):
        if path.name == "labels.npy":
            continue
        images = np.load(path)
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels) or len(images) % 5:
            raise ValueError(
                f"{path}: expected uint8 (5N, H, W, C) matching labels.npy ({len(labels)}), got "
                f"{images.dtype} {images.shape}"
            )
        out[path.stem] = (images, labels)
    return out or None
