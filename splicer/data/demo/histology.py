"""NCT/Camelyon-like H&E tiles with nuclei masks (Fig. 4, Table S2): stroma (simple) and nuclei (complex)."""

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
    natural,
    rng_for,
    save,
    sigmoid,
    smooth_noise,
    split_codes,
    to_u8,
)
from splicer.data.vocab import SPLITS
from splicer.registry import Layout

__all__ = ["DATASETS", "HISTOLOGY_CLASSES", "layout", "make_histology"]

DATASETS = ("pretrain", "eval", "shift")
"""The datasets :func:`make_histology` writes."""

_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])
# per-"hospital" stain vectors (unnormalised OD per unit stain) and illumination; hospital 3 is held out
_HOSPITALS = [  # (haematoxylin OD offset, eosin OD offset, illumination RGB)
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ((0.05, -0.05, 0.05), (0.05, -0.06, 0.0), (0.98, 0.97, 1.0)),
    ((-0.05, 0.03, 0.08), (-0.02, 0.0, 0.08), (1.0, 0.98, 0.96)),
    ((0.15, 0.15, -0.12), (0.25, -0.25, 0.15), (0.92, 0.95, 1.0)),
]
HISTOLOGY_CLASSES = ["fibrous/small-nuclei", "fibrous/large-nuclei", "loose/small-nuclei", "loose/large-nuclei"]


def _render_nuclei(rng: np.random.Generator, large: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin density (N, S, S) and binary nuclei mask of many small round (``large`` False) or fewer
    large elongated, irregular, vesicular nuclei; both kinds have the same darkness distribution and about
    the same expected area fraction. Each nucleus is drawn in a local window (vectorised over samples)."""
    n, k = len(large), size / 32.0
    half = int(np.ceil(5.5 * k)) + 1
    side = size + 2 * half
    offsets = np.arange(2 * half) - half + 1
    canvas = np.zeros(n * side * side, dtype=np.float32)
    mask = np.zeros(n * side * side, dtype=bool)
    count = np.where(large, rng.integers(4, 9, n), rng.integers(11, 21, n))
    for j in range(int(count.max())):
        sel = np.flatnonzero(j < count)
        m, big = sel.size, large[sel][:, None, None]
        cy, cx = rng.uniform(0, size, (2, m))
        a = k * np.where(big, rng.uniform(2.4, 3.4, (m, 1, 1)), rng.uniform(1.2, 1.7, (m, 1, 1)))
        b = k * np.where(big, rng.uniform(1.3, 1.9, (m, 1, 1)), rng.uniform(1.1, 1.6, (m, 1, 1)))
        theta, phase = rng.uniform(0, np.pi, (2, m, 1, 1))
        rows = np.floor(cy).astype(np.int64)[:, None, None] + offsets[None, :, None]
        cols = np.floor(cx).astype(np.int64)[:, None, None] + offsets[None, None, :]
        dy = (rows + 0.5 - cy[:, None, None]).astype(np.float32)
        dx = (cols + 0.5 - cx[:, None, None]).astype(np.float32)
        c, s = np.cos(theta), np.sin(theta)
        u, v = dx * c + dy * s, dy * c - dx * s
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        # irregular outline: radius modulated by 1 + w sin(3 angle + phase), angle in the nucleus frame
        r = np.sqrt(u**2 + v**2) + 1e-6
        cos_t, sin_t = u / r, v / r
        sin3 = (3 * sin_t - 4 * sin_t**3) * np.cos(3 * phase) + (4 * cos_t**3 - 3 * cos_t) * np.sin(3 * phase)
        d = d / (1.0 + np.where(big, 0.12, 0.03) * sin3)
        blob = sigmoid((1.0 - d) * 2.5 * b) * rng.uniform(0.8, 1.2, (m, 1, 1))
        flat = (sel[:, None, None] * side + rows + half) * side + cols + half
        canvas[flat] = np.maximum(canvas[flat], blob)
        mask[flat] |= d < 1.0
    inner = (slice(None), slice(half, half + size), slice(half, half + size))
    vesicular = np.where(large[:, None, None], 0.75 + 0.35 * rng.random((n, size, size)), 1.0)
    return canvas.reshape(n, side, side)[inner] * vesicular, mask.reshape(n, side, side)[inner]


def _render_tissue(
    rng: np.random.Generator, stroma: np.ndarray, nuclei: np.ndarray, hospital: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """H&E tiles (N, 3, S, S) uint8 and nuclei masks (N, 1, S, S) uint8 via a Beer-Lambert stain model."""
    n = len(stroma)
    fibrous = (stroma == 0)[:, None, None]
    streaks = band_noise(rng, n, size, rng.uniform(0, np.pi, n), rng.uniform(0.1, 0.2, n), 0.04, 0.02)
    loose = smooth_noise(rng, n, size, 0.1)
    e_fib = rng.uniform(0.45, 0.75, (n, 1, 1)) * (0.75 + 0.25 * np.tanh(streaks))
    e_loose = rng.uniform(0.18, 0.32, (n, 1, 1)) * sigmoid(3.0 * (loose + 0.3))
    eosin = np.where(fibrous, e_fib, e_loose)
    hema, mask = _render_nuclei(rng, nuclei == 1, size)
    hema += 0.06
    od = np.zeros((n, 3, size, size))
    illum = np.zeros((n, 3, 1, 1))
    for h_id, (dh, de, light) in enumerate(_HOSPITALS):
        sel = hospital == h_id
        h_vec, e_vec = _HEMATOXYLIN + np.asarray(dh), _EOSIN + np.asarray(de)
        jitter = 1.0 + 0.05 * rng.standard_normal((int(sel.sum()), 2, 1, 1, 1))
        od[sel] = (
            hema[sel, None] * h_vec[None, :, None, None] * jitter[:, 0]
            + eosin[sel, None] * e_vec[None, :, None, None] * jitter[:, 1]
        )
        illum[sel] = np.asarray(light)[None, :, None, None]
    rgb = illum * np.exp(-1.3 * od) + rng.normal(0.0, 0.015, od.shape)
    return to_u8(rgb), mask[:, None].astype(np.uint8)


def make_histology(
    out_dir: str | Path,
    seed: int = 0,
    n_pretrain: int = 2000,
    n_train: int = 600,
    n_val: int = 200,
    n_test: int = 600,
    size: int = 32,
) -> dict[str, Path]:
    """NCT/Camelyon-like H&E tiles (3, size, size) uint8 with the true nuclei mask (masks.npy, "nuclei").

    Haematoxylin/eosin concentration maps are rendered through a Beer-Lambert stain model with per-"hospital"
    stain vectors. Class = stroma type x nucleus type: stroma (simple, high variance: colour and texture) is
    dense fibrous pink with oriented streaks or pale loose tissue with gaps; nuclei (complex) are many small
    round or fewer large elongated irregular vesicular ones, with matched darkness and expected area fraction,
    so mean colour says little about the nucleus type.

    Datasets: ``pretrain`` (hospitals 0-2, 4 classes uniform), ``eval`` (4 classes balanced, train/val/test,
    hospitals 0-2) and ``shift`` (Camelyon-like: label = large "tumour" vs small "normal" nuclei with random
    stroma; train/val from hospitals 0-2, test from held-out hospital 3 with a different stain).
    """
    check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    out, family = Path(out_dir), "histology"
    counts = [n_train, n_val, n_test]
    info = {
        "family": family,
        "seed": int(seed),
        "factors": {"stroma": ["fibrous", "loose"], "nuclei": ["small-round", "large-elongated"]},
        "label_rule": "label = 2 * stroma + nuclei",
    }
    common = {"channel_names": ["R", "G", "B"], "mask_names": ["nuclei"]}
    paths: dict[str, Path] = {}

    rng = rng_for(seed, family, "pretrain")
    y = natural(rng, n_pretrain, [1.0] * 4)
    img, masks = _render_tissue(rng, y // 2, y % 2, rng.integers(0, 3, n_pretrain), size)
    paths["pretrain"] = save(
        out,
        "pretrain",
        img,
        y,
        split_codes([n_pretrain]),
        masks=masks,
        class_names=HISTOLOGY_CLASSES,
        split_names=["train"],
        info=info,
        **common,
    )
    rng = rng_for(seed, family, "eval")
    y = balanced_splits(rng, counts, 4)
    img, masks = _render_tissue(rng, y // 2, y % 2, rng.integers(0, 3, len(y)), size)
    paths["eval"] = save(
        out,
        "eval",
        img,
        y,
        split_codes(counts),
        masks=masks,
        class_names=HISTOLOGY_CLASSES,
        split_names=SPLITS,
        info=info,
        **common,
    )
    rng = rng_for(seed, family, "shift")
    y = balanced_splits(rng, counts, 2)
    hospital = np.concatenate([rng.integers(0, 3, n_train + n_val), np.full(n_test, 3)])
    img, masks = _render_tissue(rng, rng.integers(0, 2, len(y)), y, hospital, size)
    paths["shift"] = save(
        out,
        "shift",
        img,
        y,
        split_codes(counts),
        masks=masks,
        class_names=["normal", "tumour"],
        split_names=SPLITS,
        info={**info, "label_rule": "label = nuclei factor", "test_hospital": 3, "train_hospitals": [0, 1, 2]},
        **common,
    )
    return paths


def layout(params: Mapping[str, Any]) -> dict[str, Layout]:
    """What :func:`make_histology` writes with ``params`` (declared, not generated): RGB with a nuclei mask."""
    size = params.get("size", inspect.signature(make_histology).parameters["size"].default)
    return dict.fromkeys(DATASETS, Layout(("R", "G", "B"), ("nuclei",), (size, size)))
