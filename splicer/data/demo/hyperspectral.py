"""EuroSAT-like 13-band Sentinel-2 patches (Fig. 3d-e): some classes differ only outside the visible bands.

Simple feature: visible colour and texture (stripes, blobs, street grid, water), per-image illumination and haze,
shared by most bands; they separate four class groups and carry most of the variance. Complex feature: the
red-edge/NIR/SWIR spectral shape that separates the two RGB-confusable pairs (AnnualCrop vs PermanentCrop,
Forest vs HerbaceousVegetation: identical B02-B04, differences of 0.5-2 % reflectance in B05-B08A, B11, B12).
It is complex because it is a small, first-order level difference in a few bands, below the +-20 % per-image
illumination and the per-band brightness/contrast jitter of the augmentations, while texture and brightness are
large and shared by every band. ``pretrain_shifted`` is an MMEarth-like (global) pretraining set: desert and snow
biomes EuroSAT lacks, partial cloud cover, wider illumination and haze.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.demo.common import (
    balanced_splits,
    check_params,
    grid,
    natural,
    rng_for,
    save,
    sigmoid,
    smooth_noise,
    split_codes,
    to_u16,
)
from splicer.data.vocab import HYPERSPECTRAL_BANDS, RGB_BANDS, SPLITS
from splicer.registry import Layout

__all__ = ["DATASETS", "layout", "make_hyperspectral"]

DATASETS = ("pretrain", "bands13", "rgb", "pretrain_shifted", "pretrain_complex", "bands13_complex")
"""The datasets :func:`make_hyperspectral` writes."""

_BAND_RES = {"B01": 4, "B09": 4, "B10": 4, "B05": 2, "B06": 2, "B07": 2, "B08A": 2, "B11": 2, "B12": 2}
# endmember reflectance spectra in band order; pairs (veg_a, veg_b) and (dense, sparse) share B02-B04
_SPECTRA = {
    "soil": [0.08, 0.10, 0.14, 0.18, 0.20, 0.22, 0.24, 0.26, 0.27, 0.12, 0.005, 0.32, 0.28],
    "crop_a": [0.03, 0.045, 0.08, 0.05, 0.10, 0.21, 0.26, 0.28, 0.29, 0.10, 0.005, 0.22, 0.12],
    "crop_b": [0.03, 0.045, 0.08, 0.05, 0.11, 0.26, 0.32, 0.35, 0.36, 0.12, 0.005, 0.19, 0.09],
    "dense": [0.025, 0.03, 0.055, 0.03, 0.09, 0.25, 0.31, 0.34, 0.35, 0.12, 0.004, 0.16, 0.07],
    "sparse": [0.025, 0.03, 0.055, 0.03, 0.08, 0.20, 0.25, 0.27, 0.28, 0.10, 0.004, 0.20, 0.10],
    "roof": [0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.19, 0.10, 0.005, 0.22, 0.20],
    "asphalt": [0.06, 0.06, 0.07, 0.07, 0.08, 0.09, 0.09, 0.10, 0.10, 0.05, 0.003, 0.11, 0.10],
    "water": [0.07, 0.06, 0.05, 0.03, 0.02, 0.015, 0.01, 0.01, 0.01, 0.005, 0.002, 0.005, 0.003],
    "sand": [0.15, 0.2, 0.25, 0.3, 0.33, 0.35, 0.37, 0.38, 0.39, 0.2, 0.005, 0.45, 0.4],
    "snow": [0.8, 0.85, 0.85, 0.83, 0.8, 0.75, 0.72, 0.7, 0.68, 0.4, 0.01, 0.1, 0.08],
    "cloud": [0.55, 0.55, 0.55, 0.55, 0.55, 0.55, 0.55, 0.55, 0.55, 0.3, 0.25, 0.45, 0.35],
    "turbid": [0.08, 0.07, 0.07, 0.05, 0.04, 0.02, 0.015, 0.015, 0.012, 0.006, 0.002, 0.006, 0.004],
}
_GAP = 0.25  # scale of the non-visible difference between RGB-confusable pairs
_BRIGHTNESS = (0.8, 1.2)
_HAZE = 0.04
_SHIFT = {"classes": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 1.0], "brightness": (0.6, 1.4), "haze": 0.1, "cloud_p": 0.5}
_COMPLEX = ["B05", "B06", "B07", "B08", "B08A", "B11", "B12"]
# class: (pattern, endmember where pattern ~ 1, endmember where ~ 0)
_LAND_CLASSES = [
    ("AnnualCrop", "stripes", "crop_a", "soil"),
    ("PermanentCrop", "stripes", "crop_b", "soil"),
    ("Forest", "blobs", "dense", "dense"),
    ("HerbaceousVegetation", "blobs", "sparse", "sparse"),
    ("Residential", "grid", "roof", "asphalt"),
    ("SeaLake", "smooth", "water", "turbid"),
]


# biomes of the shifted pretraining set only (kinds 6, 7; saved unlabelled, -1)
_OTHER_BIOMES = [("Desert", "smooth", "sand", "sand"), ("Snow", "blobs", "snow", "snow")]


def _land_pattern(rng: np.random.Generator, kind: str, n: int, size: int) -> np.ndarray:
    """Spatial mixing map t (N, S, S) in [0, 1] for a land-use texture family."""
    yy, xx = grid(size)
    if kind == "stripes":  # field rows at a random orientation and pitch
        ang, freq, phase = rng.uniform(0, np.pi, n), rng.uniform(0.12, 0.25, n), rng.uniform(0, 2 * np.pi, n)
        u = xx * np.cos(ang)[:, None, None] + yy * np.sin(ang)[:, None, None]
        wave = np.sin(2 * np.pi * freq[:, None, None] * u + phase[:, None, None])
        return sigmoid(4.0 * wave + 0.8 * rng.standard_normal((n, size, size)))
    if kind == "blobs":  # canopy clumps with shadows
        return sigmoid(2.5 * smooth_noise(rng, n, size, 0.12))
    if kind == "grid":  # building blocks between streets
        fy, fx = rng.uniform(0.15, 0.3, (2, n))[:, :, None, None]
        py, px = rng.uniform(0, 2 * np.pi, (2, n))[:, :, None, None]
        blocks = (np.sin(2 * np.pi * fy * yy + py) > -0.3) & (np.sin(2 * np.pi * fx * xx + px) > -0.3)
        return 0.15 + 0.7 * blocks + 0.15 * rng.random((n, size, size))
    return 0.5 + 0.25 * smooth_noise(rng, n, size, 0.05)  # smooth water


def _block_blur(x: np.ndarray, factor: int) -> np.ndarray:
    """Simulate a coarser ground sampling distance: block-average by ``factor`` then repeat (N, S, S)."""
    n, h, w = x.shape
    if h % factor or w % factor:
        return x
    blocks = x.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return np.repeat(np.repeat(blocks, factor, axis=1), factor, axis=2)


def _spectrum(name: str) -> np.ndarray:
    """Endmember spectrum; the second member of an RGB-confusable pair moves by ``_GAP`` x its difference."""
    base = {"crop_b": "crop_a", "sparse": "dense"}.get(name)
    if base is None:
        return np.asarray(_SPECTRA[name])
    a, b = np.asarray(_SPECTRA[base]), np.asarray(_SPECTRA[name])
    return a + _GAP * (b - a)


def _render_land(rng: np.random.Generator, labels: np.ndarray, size: int, shifted: bool = False) -> np.ndarray:
    """Reflectance patches (N, 13, S, S) as uint16 (reflectance * 65535)."""
    n, n_bands = len(labels), len(HYPERSPECTRAL_BANDS)
    t = np.zeros((n, size, size))
    hi, lo = np.zeros((n, n_bands)), np.zeros((n, n_bands))
    for c, (_, pattern, e_hi, e_lo) in enumerate(_LAND_CLASSES + _OTHER_BIOMES):
        sel = np.flatnonzero(labels == c)
        t[sel] = _land_pattern(rng, pattern, sel.size, size)
        hi[sel], lo[sel] = _spectrum(e_hi), _spectrum(e_lo)
    # forest vs herbaceous: brightness contrast (shadows) within the same endmember
    shadow = np.isin(labels, (2, 3))[:, None]
    lo = np.where(shadow, lo * 0.55, lo)
    spectral_jitter = 1.0 + 0.06 * rng.standard_normal((n, n_bands))
    brightness = rng.uniform(*(_SHIFT["brightness"] if shifted else _BRIGHTNESS), (n, 1))
    hi, lo = hi * spectral_jitter * brightness, lo * spectral_jitter * brightness
    img = t[:, None] * hi[:, :, None, None] + (1.0 - t[:, None]) * lo[:, :, None, None]
    haze = (
        rng.uniform(0.0, _SHIFT["haze"] if shifted else _HAZE, (n, 1, 1, 1))
        * np.linspace(1.0, 0.1, n_bands)[None, :, None, None]
    )
    if shifted and _SHIFT.get("cloud_p", 0.0) > 0:  # partial cloud cover: bright, flat, in every band
        cover = rng.random(n) < _SHIFT["cloud_p"]
        amount = cover[:, None, None] * sigmoid(4.0 * smooth_noise(rng, n, size, 0.1) + rng.uniform(-4, 1, (n, 1, 1)))
        img = img * (1.0 - amount[:, None]) + amount[:, None] * np.asarray(_SPECTRA["cloud"])[None, :, None, None]
    img = img + haze + rng.normal(0.0, 0.004, img.shape)
    for b, factor in _BAND_RES.items():
        i = HYPERSPECTRAL_BANDS.index(b)
        img[:, i] = _block_blur(img[:, i], factor)
    return to_u16(img)


def make_hyperspectral(
    out_dir: str | Path,
    seed: int = 0,
    n_pretrain: int = 2000,
    n_train: int = 600,
    n_val: int = 200,
    n_test: int = 600,
    size: int = 16,
) -> dict[str, Path]:
    """EuroSAT-like 13-band Sentinel-2 patches (13, size, size) uint16 = reflectance * 65535, bands in
    :data:`HYPERSPECTRAL_BANDS` order; 60 m (B01, B09, B10) and 20 m bands are block-averaged by 4 and 2.

    Six land-use classes mix two endmember spectra with a class texture (stripes, blobs, street grid,
    smooth water). RGB texture/colour separates four groups; AnnualCrop vs PermanentCrop and Forest vs
    HerbaceousVegetation share their visible (B02-B04) spectra and differ only in red-edge/NIR/SWIR
    (B05-B08A, B11, B12; ``_GAP`` = 0.25 of the original demo's differences), so an RGB-only model cannot
    separate those pairs.

    Datasets: ``pretrain`` (uniform classes), ``bands13`` (balanced train/val/test) and ``rgb`` (the same
    samples restricted to B04, B03, B02 = R, G, B); ``pretrain_complex`` and ``bands13_complex`` (the same
    samples restricted to the informative non-visible bands B05, B06, B07, B08, B08A, B11, B12);
    ``pretrain_shifted`` (distribution-shifted pretraining: ~28 % desert/snow patches, unlabelled -1, the six
    classes otherwise; half the patches partly clouded; illumination 0.6-1.4; haze up to 0.1).
    """
    check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    out, family = Path(out_dir), "hyperspectral"
    counts = [n_train, n_val, n_test]
    classes = [c[0] for c in _LAND_CLASSES]
    groups = {
        "rgb": RGB_BANDS,
        "red_edge_nir": ["B05", "B06", "B07", "B08", "B08A"],
        "swir": ["B11", "B12"],
        "atmosphere": ["B01", "B09", "B10"],
    }
    info = {
        "family": family,
        "seed": int(seed),
        "band_order": HYPERSPECTRAL_BANDS,
        "scale": 65535,
        "units": "reflectance * 65535",
        "channel_groups": groups,
        "rgb_confusable_pairs": [["AnnualCrop", "PermanentCrop"], ["Forest", "HerbaceousVegetation"]],
    }
    paths: dict[str, Path] = {}

    cx = [HYPERSPECTRAL_BANDS.index(b) for b in _COMPLEX]
    rng = rng_for(seed, family, "pretrain")
    y = natural(rng, n_pretrain, [1.0] * len(classes))
    img = _render_land(rng, y, size)
    for name, x, bands in (("pretrain", img, HYPERSPECTRAL_BANDS), ("pretrain_complex", img[:, cx], _COMPLEX)):
        paths[name] = save(
            out,
            name,
            x,
            y,
            split_codes([n_pretrain]),
            channel_names=bands,
            class_names=classes,
            split_names=["train"],
            info=info,
        )
    rng = rng_for(seed, family, "pretrain_shifted")
    kind = natural(rng, n_pretrain, _SHIFT["classes"])
    paths["pretrain_shifted"] = save(
        out,
        "pretrain_shifted",
        _render_land(rng, kind, size, shifted=True),
        np.where(kind < len(classes), kind, -1),  # other biomes are unlabelled
        split_codes([n_pretrain]),
        channel_names=HYPERSPECTRAL_BANDS,
        class_names=classes,
        split_names=["train"],
        info={**info, "shift": _SHIFT},
    )
    rng = rng_for(seed, family, "eval")
    y = balanced_splits(rng, counts, len(classes))
    img = _render_land(rng, y, size)
    split = split_codes(counts)
    paths["bands13"] = save(
        out,
        "bands13",
        img,
        y,
        split,
        channel_names=HYPERSPECTRAL_BANDS,
        class_names=classes,
        split_names=SPLITS,
        info=info,
    )
    paths["bands13_complex"] = save(
        out,
        "bands13_complex",
        img[:, cx],
        y,
        split,
        channel_names=_COMPLEX,
        class_names=classes,
        split_names=SPLITS,
        info=info,
    )
    rgb_idx = [HYPERSPECTRAL_BANDS.index(b) for b in RGB_BANDS]
    paths["rgb"] = save(
        out,
        "rgb",
        img[:, rgb_idx],
        y,
        split,
        channel_names=RGB_BANDS,
        class_names=classes,
        split_names=SPLITS,
        info={**info, "channel_order": "R,G,B"},
    )
    return paths


def layout(params: Mapping[str, Any]) -> dict[str, Layout]:
    """What :func:`make_hyperspectral` writes with ``params`` (declared, not generated)."""
    size = params.get("size", inspect.signature(make_hyperspectral).parameters["size"].default)
    bands = Layout(tuple(HYPERSPECTRAL_BANDS), (), (size, size))
    complex_ = Layout(tuple(_COMPLEX), (), (size, size))
    return {
        "pretrain": bands,
        "bands13": bands,
        "pretrain_shifted": bands,
        "rgb": Layout(tuple(RGB_BANDS), (), (size, size)),
        "pretrain_complex": complex_,
        "bands13_complex": complex_,
    }
