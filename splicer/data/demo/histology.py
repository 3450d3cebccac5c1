"""NCT/Camelyon-like H&E tiles with nuclei masks (Fig. 4, Table S2): stain and stroma (simple), nuclei (complex)."""

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
    save_with_mask_component,
    sigmoid,
    smooth_noise,
    split_codes,
    to_u8,
)
from splicer.data.vocab import SPLITS
from splicer.registry import Layout

__all__ = ["DATASETS", "HISTOLOGY_CLASSES", "layout", "make_histology"]

DATASETS = ("pretrain", "eval", "shift", "pretrain_complex", "eval_complex", "shift_complex")
"""The datasets :func:`make_histology` writes."""

_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])
# per-"hospital" mean stain: (haematoxylin OD offset, eosin OD offset, illumination RGB); hospital 3 is held out
_HOSPITALS = [
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ((0.03, -0.03, 0.03), (0.15, -0.15, 0.0), (0.97, 0.95, 1.0)),
    ((-0.03, 0.02, 0.04), (-0.05, 0.05, 0.15), (1.0, 0.97, 0.93)),
    ((0.15, 0.15, -0.10), (0.35, -0.30, 0.25), (0.90, 0.95, 1.0)),
]
# per-slide stain variation inside a hospital (the simple, high-variance nuisance): sd of the OD-vector offsets
# and of the log stain amounts, (haematoxylin, eosin). Only eosin varies per slide: with a varying haematoxylin
# the nuclei component's easiest feature is its colour, not its morphology (cf. the MNIST-CIFAR colour story)
_SLIDE_SD, _AMOUNT_SD = (0.0, 0.15), (0.0, 0.3)
_NUCLEAR_EOSIN_CUT = 0.9  # nuclei displace the eosin-stained stroma (fraction of eosin removed at a nucleus)
_NUCLEAR_GAIN = 0.9  # haematoxylin density of a nucleus
_NUCLEAR_SCALE = 1.35  # nucleus size multiplier on the sizes in _render_nuclei (pixels at 32 px)
_COUNTS = ((6, 11), (3, 6))  # nuclei per tile (normal, tumour), [low, high)
HISTOLOGY_CLASSES = ["fibrous/normal", "fibrous/tumour", "loose/normal", "loose/tumour"]
# Camelyon-like shift: P(hospital | label) in the training hospitals (tumour tiles mostly from hospital 0)
_SHIFT_HOSPITAL_GIVEN = ((0.2, 0.3, 0.5), (0.5, 0.3, 0.2))  # (normal, tumour)


def _render_nuclei(rng: np.random.Generator, tumour: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin density (N, S, S) and binary nuclei mask of many small, round, uniform, solid-dark
    (``tumour`` False) or fewer large, variable, irregular, vesicular (paler, with a nucleolus) nuclei. Both
    kinds have about the same expected stained area and haematoxylin amount per tile. Each nucleus is drawn in
    a local window (vectorised over samples)."""
    n, k = len(tumour), size / 32.0
    half = int(np.ceil(6.0 * k * _NUCLEAR_SCALE)) + 1
    side = size + 2 * half
    offsets = np.arange(2 * half) - half + 1
    canvas = np.zeros(n * side * side, dtype=np.float32)
    mask = np.zeros(n * side * side, dtype=bool)
    count = np.where(tumour, rng.integers(*_COUNTS[1], n), rng.integers(*_COUNTS[0], n))
    for j in range(int(count.max())):
        sel = np.flatnonzero(j < count)
        m, big = sel.size, tumour[sel][:, None, None]
        cy, cx = rng.uniform(0, size, (2, m))
        # normal: radius 1.9-2.3 px at 32 px, nearly round; tumour: 2.6-4.2 x 1.9-2.9 px, variable
        a = k * _NUCLEAR_SCALE * np.where(big, rng.uniform(2.6, 4.2, (m, 1, 1)), rng.uniform(1.9, 2.3, (m, 1, 1)))
        b = k * _NUCLEAR_SCALE * np.where(big, rng.uniform(1.9, 2.9, (m, 1, 1)), rng.uniform(1.7, 2.1, (m, 1, 1)))
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
        d = d / (1.0 + np.where(big, 0.15, 0.02) * sin3)
        edge = sigmoid((1.0 - d) * 2.5 * b)
        # vesicular: chromatin on the rim, pale centre, dark nucleolus; solid: uniform dark
        ves = np.where(big, 0.55 + 0.45 * np.clip(d, 0, 1) ** 2 + 0.7 * np.exp(-((d / 0.25) ** 2)), 1.0)
        dark = np.where(big, rng.uniform(0.7, 1.0, (m, 1, 1)), rng.uniform(0.75, 1.05, (m, 1, 1)))
        blob = edge * ves * dark
        flat = (sel[:, None, None] * side + rows + half) * side + cols + half
        canvas[flat] = np.maximum(canvas[flat], blob)
        mask[flat] |= d < 1.0
    inner = (slice(None), slice(half, half + size), slice(half, half + size))
    return canvas.reshape(n, side, side)[inner], mask.reshape(n, side, side)[inner]


def _render_tissue(
    rng: np.random.Generator, stroma: np.ndarray, tumour: np.ndarray, hospital: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """H&E tiles (N, 3, S, S) uint8 and nuclei masks (N, 1, S, S) uint8 via a Beer-Lambert stain model."""
    n = len(stroma)
    fibrous = (stroma == 0)[:, None, None]
    streaks = band_noise(rng, n, size, rng.uniform(0, np.pi, n), rng.uniform(0.1, 0.2, n), 0.04, 0.02)
    loose = smooth_noise(rng, n, size, 0.1)
    e_fib = rng.uniform(0.45, 0.75, (n, 1, 1)) * (0.75 + 0.25 * np.tanh(streaks))
    e_loose = rng.uniform(0.18, 0.32, (n, 1, 1)) * sigmoid(3.0 * (loose + 0.3))
    eosin = np.where(fibrous, e_fib, e_loose)
    hema, mask = _render_nuclei(rng, tumour == 1, size)
    eosin = eosin * (1.0 - _NUCLEAR_EOSIN_CUT * np.clip(hema / 0.7, 0.0, 1.0))  # nuclei displace the stroma
    hema = _NUCLEAR_GAIN * hema + 0.05
    # stain: hospital mean + per-slide variation of the stain vectors and amounts (the simple nuisance)
    dh = np.asarray([h[0] for h in _HOSPITALS])[hospital] + _SLIDE_SD[0] * rng.standard_normal((n, 3))
    de = np.asarray([h[1] for h in _HOSPITALS])[hospital] + _SLIDE_SD[1] * rng.standard_normal((n, 3))
    light = np.asarray([h[2] for h in _HOSPITALS])[hospital]
    amount = np.exp(np.asarray(_AMOUNT_SD) * rng.standard_normal((n, 2)))
    h_vec = np.clip(_HEMATOXYLIN + dh, 0.02, None) * amount[:, :1]
    e_vec = np.clip(_EOSIN + de, 0.02, None) * amount[:, 1:]
    od = hema[:, None] * h_vec[:, :, None, None] + eosin[:, None] * e_vec[:, :, None, None]
    rgb = light[:, :, None, None] * np.exp(-1.3 * od) + rng.normal(0.0, 0.015, od.shape)
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

    Haematoxylin/eosin concentration maps are rendered through a Beer-Lambert stain model whose stain vectors,
    amounts and illumination vary per hospital and per slide (tile).

    Simple: the stain colour (per-hospital stain vectors and a per-slide eosin vector and amount: the highest-
    variance, first-order feature of a tile, label-free in pretraining) and the stroma (fibrous dense pink with
    oriented streaks or pale loose tissue: mean eosin density). Complex: the nucleus type, normal (many small round
    uniform solid nuclei) or tumour (fewer large, variable, irregular, vesicular ones). Its cue is the size/shape
    distribution of a few dark blobs covering ~15 % of the tile, with matched stained area and haematoxylin amount,
    so no mean colour reveals it: it needs spatial (second-order) features of the nuclei, which the stain and stroma
    outweigh in whole-tile SSL but which are the dominant signal once the nuclei are cut out.

    Datasets: ``pretrain`` (hospitals 0-2, 4 classes uniform), ``eval`` (NCT-like: 4 classes = stroma x nucleus
    type, balanced, train/val/test, hospitals 0-2), ``shift`` (Camelyon-like: label = tumour vs normal nuclei,
    random stroma; train/val from hospitals 0-2 where tumour tiles come more often from hospital 0, a stain
    shortcut; test from held-out hospital 3 with a different stain) and, for the ceilings, ``<name>_complex``:
    the same images with every pixel outside the true nuclei mask set to 0.
    """
    check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    out, family = Path(out_dir), "histology"
    counts = [n_train, n_val, n_test]
    info = {
        "family": family,
        "seed": int(seed),
        "factors": {"stroma": ["fibrous", "loose"], "nuclei": ["normal", "tumour"]},
        "label_rule": "label = 2 * stroma + nuclei",
    }
    common = {"channel_names": ["R", "G", "B"], "mask_names": ["nuclei"]}
    paths: dict[str, Path] = {}

    def write(name: str, img, y, split, masks, class_names, split_names, info) -> None:
        save_with_mask_component(
            paths,
            out,
            name,
            img,
            masks,
            "nuclei (true mask)",
            y,
            split,
            class_names=class_names,
            split_names=split_names,
            info=info,
            **common,
        )

    rng = rng_for(seed, family, "pretrain")
    y = natural(rng, n_pretrain, [1.0] * 4)
    img, masks = _render_tissue(rng, y // 2, y % 2, rng.integers(0, 3, n_pretrain), size)
    write("pretrain", img, y, split_codes([n_pretrain]), masks, HISTOLOGY_CLASSES, ["train"], info)

    rng = rng_for(seed, family, "eval")
    y = balanced_splits(rng, counts, 4)
    img, masks = _render_tissue(rng, y // 2, y % 2, rng.integers(0, 3, len(y)), size)
    write("eval", img, y, split_codes(counts), masks, HISTOLOGY_CLASSES, SPLITS, info)

    rng = rng_for(seed, family, "shift")
    y = balanced_splits(rng, counts, 2)
    n_in = n_train + n_val
    p_h = np.asarray([_SHIFT_HOSPITAL_GIVEN[int(label)] for label in y[:n_in]])
    hospital_in = (rng.random((n_in, 1)) > np.cumsum(p_h, axis=1)).sum(axis=1)
    hospital = np.concatenate([hospital_in, np.full(n_test, 3)])
    img, masks = _render_tissue(rng, rng.integers(0, 2, len(y)), y, hospital, size)
    shift_info = {
        **info,
        "label_rule": "label = nuclei factor",
        "test_hospital": 3,
        "train_hospitals": [0, 1, 2],
        "hospital_given_label": {
            name: list(p) for name, p in zip(["normal", "tumour"], _SHIFT_HOSPITAL_GIVEN, strict=True)
        },
    }
    write("shift", img, y, split_codes(counts), masks, ["normal", "tumour"], SPLITS, shift_info)
    return paths


def layout(params: Mapping[str, Any]) -> dict[str, Layout]:
    """What :func:`make_histology` writes with ``params`` (declared, not generated): RGB with a nuclei mask."""
    size = params.get("size", inspect.signature(make_histology).parameters["size"].default)
    return dict.fromkeys(DATASETS, Layout(("R", "G", "B"), ("nuclei",), (size, size)))
