"""ChestMNIST/PneumoniaMNIST-like radiographs with lung masks (Fig. 4): subtle opacities inside the lungs."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.demo.common import (
    balanced_splits,
    check_params,
    ellipse_dist,
    grid,
    rng_for,
    save,
    sigmoid,
    split_codes,
    to_u8,
)
from splicer.data.vocab import SPLITS
from splicer.registry import Layout

__all__ = ["DATASETS", "layout", "make_xray"]

DATASETS = ("pretrain", "pneumonia")
"""The datasets :func:`make_xray` writes."""


def _render_xray(rng: np.random.Generator, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chest radiographs (N, 1, S, S) uint8 and lung masks (N, 1, S, S) uint8."""
    n = len(labels)
    yy, xx = grid(size)
    v, u = 2 * yy / size - 1, 2 * xx / size - 1  # normalised coordinates in [-1, 1]
    body = ellipse_dist(
        v,
        u,
        rng.normal(0.12, 0.04, n),
        rng.normal(0, 0.04, n),
        rng.uniform(0.8, 0.92, n),
        rng.uniform(1.0, 1.15, n),
        rng.normal(0, 0.05, n),
    )
    img = 0.08 + 0.45 * sigmoid((1 - body) * 12)
    lung_soft, mask = np.zeros((n, size, size)), np.zeros((n, size, size), dtype=bool)
    centres = []
    lung_y = rng.normal(-0.05, 0.04, n)
    for side in (-1, 1):
        cy, cx = lung_y + rng.normal(0, 0.02, n), side * rng.uniform(0.34, 0.42, n)
        a, b = rng.uniform(0.22, 0.28, n), rng.uniform(0.48, 0.58, n)
        d = ellipse_dist(v, u, cy, cx, a, b, side * rng.uniform(0.0, 0.15, n))
        lung_soft = np.maximum(lung_soft, sigmoid((1 - d) * 10))
        mask |= d < 1.0
        centres.append((cy, cx, a, b))
    img -= 0.22 * lung_soft
    img += 0.12 * np.exp(-((u / rng.uniform(0.08, 0.12, (n, 1, 1))) ** 2)) * (body < 1)  # spine / mediastinum
    heart = ellipse_dist(
        v,
        u,
        rng.normal(0.35, 0.04, n),
        rng.normal(-0.12, 0.03, n),
        rng.uniform(0.2, 0.26, n),
        rng.uniform(0.16, 0.22, n),
        rng.normal(0.3, 0.1, n),
    )
    img += 0.1 * sigmoid((1 - heart) * 8)
    rib_f, rib_p = rng.uniform(3.5, 4.5, (n, 1, 1)), rng.uniform(0, 2 * np.pi, (n, 1, 1))
    ribs = sigmoid(8 * (np.sin(2 * np.pi * rib_f * (v + 0.35 * u**2) + rib_p) - 0.5))
    img += 0.06 * ribs * (body < 1)
    # pneumonia: 1-2 subtle opacities inside one lung (the complex feature)
    sick = labels == 1
    for blob in range(2):
        side = rng.integers(0, 2, n)
        cy, cx, a, b = (np.where(side == 0, left, right) for left, right in zip(*centres, strict=True))
        r, phi = 0.65 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
        by, bx = cy + r * b * np.sin(phi), cx + r * a * np.cos(phi)
        sd = rng.uniform(0.1, 0.18, (n, 1, 1))
        amp = rng.uniform(0.08, 0.15, (n, 1, 1)) * (sick & ((blob == 0) | (rng.random(n) < 0.5)))[:, None, None]
        img += amp * lung_soft * np.exp(-((v - by[:, None, None]) ** 2 + (u - bx[:, None, None]) ** 2) / (2 * sd**2))
    # exposure (the simple feature) is only weakly related to the label
    gain = rng.normal(1.0, 0.1, (n, 1, 1)) + 0.03 * (2 * sick - 1)[:, None, None]
    img = img * gain + rng.normal(0.0, 0.015, img.shape)
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

    Body outline, two darker lung ellipses, spine/mediastinum, heart shadow and curved ribs, with random
    geometry. Pneumonia (label 1) adds 1-2 subtle Gaussian opacities (+0.08-0.15 on a ~0.3 lung) inside the
    lungs (complex); exposure gain is only weakly correlated with the label (simple).

    Datasets: ``pretrain`` (ChestMNIST analogue, ``pretrain_prevalence`` pneumonia) and ``pneumonia``
    (balanced train/val/test).
    """
    check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    if not 0.0 <= pretrain_prevalence <= 1.0:
        raise ValueError(f"parameter 'pretrain_prevalence' must be in [0, 1], got {pretrain_prevalence!r}")
    out, family = Path(out_dir), "xray"
    info = {"family": family, "seed": int(seed)}
    common = {"channel_names": ["X-ray"], "class_names": ["normal", "pneumonia"], "mask_names": ["lungs"]}
    paths: dict[str, Path] = {}
    rng = rng_for(seed, family, "pretrain")
    y = (rng.random(n_pretrain) < pretrain_prevalence).astype(np.int64)
    img, masks = _render_xray(rng, y, size)
    paths["pretrain"] = save(
        out,
        "pretrain",
        img,
        y,
        split_codes([n_pretrain]),
        masks=masks,
        split_names=["train"],
        info={**info, "prevalence": pretrain_prevalence},
        **common,
    )
    rng = rng_for(seed, family, "pneumonia")
    counts = [n_train, n_val, n_test]
    y = balanced_splits(rng, counts, 2)
    img, masks = _render_xray(rng, y, size)
    paths["pneumonia"] = save(
        out, "pneumonia", img, y, split_codes(counts), masks=masks, split_names=SPLITS, info=info, **common
    )
    return paths


def layout(params: Mapping[str, Any]) -> dict[str, Layout]:
    """What :func:`make_xray` writes with ``params`` (declared, not generated): one channel with a lungs mask."""
    size = params.get("size", inspect.signature(make_xray).parameters["size"].default)
    return dict.fromkeys(DATASETS, Layout(("X-ray",), ("lungs",), (size, size)))
