"""ChestMNIST/PneumoniaMNIST-like radiographs with lung masks (Fig. 4): anatomy/exposure (simple), lung texture
(complex)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.demo.common import (
    balanced_splits,
    band_noise,
    check_params,
    ellipse_dist,
    grid,
    rng_for,
    save_with_mask_component,
    sigmoid,
    split_codes,
    to_u8,
)
from splicer.data.vocab import SPLITS
from splicer.registry import Layout

__all__ = ["DATASETS", "layout", "make_xray"]

DATASETS = ("pretrain", "pneumonia", "pretrain_complex", "pneumonia_complex")
"""The datasets :func:`make_xray` writes."""

# lung-field texture: cycles per image side, amplitude (sd, on a [0, 1] scale), orientation spread (radians) of the
# normal vascular markings (near-vertical streaks), and the across-band widths (cycles per pixel) of the normal
# streaks (narrow: oriented) and of pneumonia's patchy opacities (wide, two orthogonal bands: isotropic)
_TEXTURE_CYCLES, _TEXTURE_AMP = 5.0, 0.075
_NORMAL_ANGLE_SD, _NORMAL_BANDWIDTH, _PATCHY_BANDWIDTH = 0.25, 0.02, 0.25
# simple features: exposure gain (log sd) and its weak shift with the label (log gain +-0.03); scale of the anatomy
# variation (body width, heart size and position, diaphragm height). Measured (16 px, 3 seeds): anatomy 1.0 gave
# Baseline 0.628 / SpliCER 0.655; 1.6 gave 0.637 / 0.666 with texture amplitude 0.075 (the baseline leans on it)
_LUNG_DEPTH = 0.25  # how much darker the aerated lungs are than soft tissue
_EXPOSURE_SD, _EXPOSURE_SHIFT, _ANATOMY = 0.06, 0.03, 1.6


def _render_xray(rng: np.random.Generator, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chest radiographs (N, 1, S, S) uint8 and lung masks (N, 1, S, S) uint8."""
    n = len(labels)
    sick = labels == 1
    yy, xx = grid(size)
    v, u = 2 * yy / size - 1, 2 * xx / size - 1  # normalised coordinates in [-1, 1]
    a = _ANATOMY
    # body habitus (simple, high variance): width, height, position, soft-tissue density
    body = ellipse_dist(
        v,
        u,
        rng.normal(0.15, 0.05, n),
        rng.normal(0, 0.05, n),
        rng.uniform(0.8, 0.92, n) + 0.05 * a * rng.standard_normal(n),
        rng.uniform(1.0, 1.15, n),
        rng.normal(0, 0.05, n),
    )
    tissue = rng.uniform(0.4, 0.55, (n, 1, 1))
    img = 0.06 + tissue * sigmoid((1 - body) * 12)
    # lungs: two dark ellipses of near-standard shape (the lung component carries little geometry)
    lung_soft, mask = np.zeros((n, size, size)), np.zeros((n, size, size), dtype=bool)
    lung_y = rng.normal(-0.08, 0.02, n)
    for side in (-1, 1):
        cy, cx = lung_y + rng.normal(0, 0.01, n), side * rng.uniform(0.36, 0.39, n)
        d = ellipse_dist(v, u, cy, cx, rng.uniform(0.23, 0.26, n), rng.uniform(0.5, 0.55, n), np.full(n, side * 0.08))
        lung_soft = np.maximum(lung_soft, sigmoid((1 - d) * 10))
        mask |= d < 1.0
    img -= _LUNG_DEPTH * lung_soft
    # mediastinum / spine, heart (size and position vary: simple), diaphragm
    img += 0.12 * np.exp(-((u / rng.uniform(0.08, 0.14, (n, 1, 1))) ** 2)) * (body < 1)
    heart = ellipse_dist(
        v,
        u,
        rng.normal(0.45, 0.05 * a, n),
        rng.normal(-0.08, 0.05 * a, n),
        rng.uniform(0.16, 0.3, n),
        rng.uniform(0.12, 0.22, n),
        rng.normal(0.3, 0.15, n),
    )
    img += rng.uniform(0.08, 0.18, (n, 1, 1)) * sigmoid((1 - heart) * 8)
    dome = v - (rng.normal(0.62, 0.06 * a, (n, 1, 1)) - 0.25 * u**2)
    img += 0.15 * sigmoid(dome * 14) * (body < 1)
    # ribs: a faint, nearly fixed pattern (low variance)
    rib_p = rng.uniform(0, 0.6, (n, 1, 1))
    img += 0.03 * sigmoid(8 * (np.sin(2 * np.pi * 4.0 * (v + 0.35 * u**2) + rib_p) - 0.5)) * (body < 1)
    # lung-field texture (complex): normal = near-vertical vascular streaks (oriented band-pass noise),
    # pneumonia = patchy airspace opacities (same band and amplitude, isotropic)
    freq = np.full(n, min(_TEXTURE_CYCLES / size, 0.45))
    angle = np.where(sick, rng.uniform(0, np.pi, n), _NORMAL_ANGLE_SD * rng.standard_normal(n))
    bandwidth = np.where(sick, _PATCHY_BANDWIDTH, _NORMAL_BANDWIDTH)
    texture = band_noise(rng, n, size, angle, freq, 0.03, bandwidth)
    # the isotropic version: sum of two orthogonal bands (fills the ring) for pneumonia
    ortho = band_noise(rng, n, size, angle + np.pi / 2, freq, 0.03, bandwidth)
    texture = np.where(sick[:, None, None], (texture + ortho) / np.sqrt(2), texture)
    img += _TEXTURE_AMP * texture * lung_soft
    # exposure (simple): per-image gain and offset; the gain is weakly shifted by the label
    gain = np.exp(_EXPOSURE_SD * rng.standard_normal((n, 1, 1)) + _EXPOSURE_SHIFT * (2 * sick - 1)[:, None, None])
    img = img * gain + rng.normal(0.0, 0.01, img.shape)
    return to_u8(img)[:, None], mask[:, None].astype(np.uint8)


def make_xray(
    out_dir: str | Path,
    seed: int = 0,
    n_pretrain: int = 2000,
    n_train: int = 600,
    n_val: int = 200,
    n_test: int = 600,
    size: int = 32,
    pretrain_prevalence: float = 0.3,
) -> dict[str, Path]:
    """ChestMNIST/PneumoniaMNIST-like radiographs (1, size, size) uint8 with the true lung mask ("lungs").

    Simple: body habitus, heart size and position, diaphragm height and exposure: large, high-contrast structures
    outside (or over) the lungs whose variance dominates a radiograph; exposure is weakly shifted by pneumonia
    (a global intensity cue). Complex: the lung-field texture, near-vertical linear vascular markings (normal)
    versus patchy isotropic airspace opacities (pneumonia), with the same spatial frequency band and amplitude,
    so lung mean and variance do not reveal it: only the orientation structure of a low-amplitude texture
    inside ~30 % of the image does (second order, like MNIST-CIFAR's texture). The lungs have near-standard
    shape, so texture is the main thing the lung component varies in.

    Datasets: ``pretrain`` (ChestMNIST analogue, ``pretrain_prevalence`` pneumonia), ``pneumonia`` (balanced
    train/val/test) and, for the ceilings, ``<name>_complex``: the same images with every pixel outside the
    true lung mask set to 0.
    """
    check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    if not 0.0 <= pretrain_prevalence <= 1.0:
        raise ValueError(f"parameter 'pretrain_prevalence' must be in [0, 1], got {pretrain_prevalence!r}")
    out, family = Path(out_dir), "xray"
    info = {"family": family, "seed": int(seed)}
    common = {"channel_names": ["X-ray"], "class_names": ["normal", "pneumonia"], "mask_names": ["lungs"]}
    paths: dict[str, Path] = {}

    def write(name: str, img, y, split, masks, split_names, info) -> None:
        save_with_mask_component(
            paths, out, name, img, masks, "lungs (true mask)", y, split, split_names=split_names, info=info, **common
        )

    rng = rng_for(seed, family, "pretrain")
    y = (rng.random(n_pretrain) < pretrain_prevalence).astype(np.int64)
    img, masks = _render_xray(rng, y, size)
    write("pretrain", img, y, split_codes([n_pretrain]), masks, ["train"], {**info, "prevalence": pretrain_prevalence})
    rng = rng_for(seed, family, "pneumonia")
    counts = [n_train, n_val, n_test]
    y = balanced_splits(rng, counts, 2)
    img, masks = _render_xray(rng, y, size)
    write("pneumonia", img, y, split_codes(counts), masks, SPLITS, info)
    return paths


def layout(params: Mapping[str, Any]) -> dict[str, Layout]:
    """What :func:`make_xray` writes with ``params`` (declared, not generated): one channel with a lungs mask."""
    size = params.get("size", inspect.signature(make_xray).parameters["size"].default)
    return dict.fromkeys(DATASETS, Layout(("X-ray",), ("lungs",), (size, size)))
