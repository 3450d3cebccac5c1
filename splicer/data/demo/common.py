"""Helpers shared by the demo generators: seeded streams, split/label layouts, pixel conversions, noise fields.

Randomness comes from :func:`rng_for` (``numpy.random.default_rng([seed, crc32(family/dataset)])``), so the same
seed gives byte-identical arrays and each dataset's stream is independent of the others.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.format import save_dataset

__all__ = [
    "balanced",
    "balanced_splits",
    "band_noise",
    "bilinear",
    "check_params",
    "ellipse_dist",
    "grid",
    "natural",
    "rng_for",
    "save",
    "sigmoid",
    "smooth_noise",
    "split_codes",
    "to_u8",
    "to_u16",
]


def rng_for(seed: int, family: str, dataset: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(f"{family}/{dataset}".encode())])


def check_params(seed: int, **params: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    for key, value in params.items():
        minimum = 8 if "size" in key else 1
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"parameter {key!r} must be an int >= {minimum}, got {value!r}")


def split_codes(counts: Sequence[int]) -> np.ndarray:
    """Contiguous split blocks (train, then val, then test) so that ``select`` keeps memory-mapped views."""
    return np.repeat(np.arange(len(counts), dtype=np.uint8), counts)


def balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def balanced_splits(rng: np.random.Generator, counts: Sequence[int], k: int) -> np.ndarray:
    """Labels balanced (to within one) over ``k`` classes inside every split block."""
    return np.concatenate([balanced(rng, n, k) for n in counts]).astype(np.int64)


def natural(rng: np.random.Generator, n: int, probs: Sequence[float]) -> np.ndarray:
    return rng.choice(len(probs), size=n, p=np.asarray(probs) / np.sum(probs)).astype(np.int64)


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def to_u16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 65535.0), 0, 65535).astype(np.uint16)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (rows, cols), shape (1, H, W) each."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return yy[None], xx[None]


def save(
    out_dir: Path,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    *,
    channel_names: Sequence[str],
    class_names: Sequence[str],
    split_names: Sequence[str],
    info: dict[str, Any],
    masks: np.ndarray | None = None,
    mask_names: Sequence[str] = (),
) -> Path:
    meta = {
        "name": name,
        "channel_names": list(channel_names),
        "class_names": list(class_names),
        "split_names": list(split_names),
        "mask_names": list(mask_names),
        "info": info,
    }
    return save_dataset(out_dir / name, images, labels, split, meta, masks=masks)


def save_with_mask_component(
    paths: dict[str, Path],
    out_dir: Path,
    name: str,
    images: np.ndarray,
    masks: np.ndarray,
    component: str,
    *args: Any,
    info: dict[str, Any],
    **kwargs: Any,
) -> None:
    """:func:`save` ``name`` and ``name_complex``, the same images with every pixel outside the true mask set to 0
    (a mask component's fill), recorded as ``info.component``; their paths go into ``paths``."""
    for suffix, pixels in (("", images), ("_complex", images * (masks > 0))):
        extra = {"component": component} if suffix else {}
        paths[name + suffix] = save(
            out_dir, name + suffix, pixels, *args, masks=masks, info={**info, **extra}, **kwargs
        )


def bilinear(src: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``src`` (N, h, w) at float pixel-index coordinates ``ys, xs`` (N, H, W); zero outside."""
    n, h, w = src.shape
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    wy, wx = ys - y0, xs - x0
    idx = np.arange(n)[:, None, None]
    out = np.zeros(ys.shape)
    for dy, fy in ((0, 1.0 - wy), (1, wy)):
        for dx, fx in ((0, 1.0 - wx), (1, wx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            out += fy * fx * inside * src[idx, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    return out


def band_noise(
    rng: np.random.Generator,
    n: int,
    size: int,
    angle: np.ndarray,
    freq: np.ndarray,
    sigma_r: float | np.ndarray,
    sigma_t: float | np.ndarray,
) -> np.ndarray:
    """Unit-variance Gabor-like noise (N, S, S): white noise band-passed around wave vector ``freq`` (cycles
    per pixel) at ``angle`` (radians, 0 = intensity varies along columns -> vertical stripes)."""
    fy = np.fft.fftfreq(size)[None, :, None]
    fx = np.fft.fftfreq(size)[None, None, :]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    along, across = fx * c + fy * s, -fx * s + fy * c
    sr = np.broadcast_to(np.asarray(sigma_r, dtype=np.float64), (n,))[:, None, None]
    st = np.broadcast_to(np.asarray(sigma_t, dtype=np.float64), (n,))[:, None, None]
    gain = np.exp(-((np.abs(along) - freq[:, None, None]) ** 2) / (2 * sr**2) - across**2 / (2 * st**2))
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * gain).real
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-12)


def smooth_noise(rng: np.random.Generator, n: int, size: int, sigma_f: float) -> np.ndarray:
    """Unit-variance isotropic low-pass Gaussian noise (N, S, S) with frequency cut-off ``sigma_f``."""
    f = np.fft.fftfreq(size)
    gain = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * sigma_f**2))[None]
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * gain).real
    field -= field.mean(axis=(1, 2), keepdims=True)
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-12)


def ellipse_dist(
    yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, a: np.ndarray, b: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    """Normalised elliptical radius (1 on the boundary) for per-sample ellipses; params shaped (N,)."""
    cy, cx, a, b, theta = (np.asarray(v, dtype=np.float64)[:, None, None] for v in (cy, cx, a, b, theta))
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(theta), np.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)
