"""Orion-CRC-like single-cell multiplex crops (Fig. 3a-c, S1a): bright lineage markers decide the cell type,
dim CD4 / CD8a / FOXP3 the T-cell subtype.

Simple feature: the bright, high-variance lineage, tissue and nuclear channels (Pan-CK, SMA, CD31, CD45, CD3e,
Hoechst, ...; levels ~0.4-1), plus cell shape and bright neighbours; they decide the coarse cell type and carry
most of the pixel variance, so whole-image SSL spends its embedding on them. Complex feature: the T-cell subtype,
carried only by three dim markers (CD4 / CD8a membrane ~0.12-0.22, FOXP3 nuclear ~0.2-0.35, on a 0.02 background
with 0.02 pixel noise) that are lit in a minority of cells. It is complex for the whole-image encoder because its
first layer mixes 19 channels, where these are ~4x dimmer than the lineage markers; alone (the 3-channel
component, ``*_complex`` datasets) the same markers are the dominant signal and SSL learns them easily.
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
    ellipse_dist,
    grid,
    natural,
    rng_for,
    save,
    sigmoid,
    split_codes,
    to_u8,
)
from splicer.data.vocab import CELL_TYPES, MULTIPLEX_CHANNELS, SPLITS, T_SUBTYPES
from splicer.registry import Layout

__all__ = ["DATASETS", "layout", "make_multiplex"]

DATASETS = ("pretrain", "cell_types", "t_cells", "pretrain_complex", "t_cells_complex")
"""The datasets :func:`make_multiplex` writes."""

# fine types: the five non-T coarse types, then the three T-cell subtypes
_FINE_TYPES = CELL_TYPES[:5] + T_SUBTYPES
_FINE_TO_COARSE = np.array([0, 1, 2, 3, 4, 5, 5, 5])
_NATURAL_FINE = [0.31, 0.16, 0.07, 0.1, 0.07, 0.14, 0.1, 0.05]  # T-cell-rich CRC tissue, imbalanced
_T_NATURAL = [0.5, 0.35, 0.15]
_DIM_LEVEL = (0.12, 0.22)  # CD4 / CD8a on T cells (membrane)
_FOXP3_LEVEL = (0.2, 0.35)  # FOXP3 on Tregs (nucleus)
_COMPARTMENT = {  # where each marker sits: n = nucleus, c = cytoplasm, m = membrane, w = whole cell
    "Hoechst": "n",
    "AF1": "w",
    "CD31": "m",
    "CD45": "m",
    "CD68": "c",
    "Argo550": "w",
    "CD4": "m",
    "FOXP3": "n",
    "CD8a": "m",
    "CD45RO": "m",
    "CD20": "m",
    "PD-L1": "m",
    "CD3e": "m",
    "CD163": "m",
    "E-cadherin": "m",
    "PD-1": "m",
    "Ki67": "n",
    "Pan-CK": "c",
    "SMA": "c",
}
# (marker, fine types expressing it, probability of expression, (low, high) level); bright coarse-type markers
# have levels ~0.4-1, the T-subtype markers CD4/CD8a/FOXP3 are dim (~0.1) on a noisy background.
_EXPRESSION = [
    ("CD31", (2,), 1.0, (0.45, 1.0)),
    ("CD45", (3, 4, 5, 6, 7), 1.0, (0.35, 0.9)),
    ("CD68", (3,), 1.0, (0.5, 1.0)),
    ("CD163", (3,), 0.7, (0.3, 0.8)),
    ("CD20", (4,), 1.0, (0.5, 1.0)),
    ("CD3e", (5, 6, 7), 1.0, (0.45, 0.9)),
    ("CD45RO", (5, 6, 7), 0.5, (0.25, 0.6)),
    ("PD-1", (5, 6, 7), 0.3, (0.2, 0.5)),
    ("PD-L1", (0, 3), 0.3, (0.2, 0.5)),
    ("E-cadherin", (0,), 1.0, (0.4, 1.0)),
    ("Pan-CK", (0,), 1.0, (0.5, 1.0)),
    ("SMA", (1,), 1.0, (0.45, 1.0)),
    ("SMA", (2,), 0.3, (0.15, 0.35)),
    ("Ki67", (0,), 0.5, (0.3, 0.8)),
    ("Ki67", (1, 2, 3, 4, 5, 6, 7), 0.1, (0.3, 0.8)),
    ("CD4", (5, 7), 1.0, "dim"),
    ("CD4", (3,), 0.5, (0.02, 0.05)),
    ("CD8a", (6,), 1.0, "dim"),
    ("FOXP3", (7,), 1.0, "foxp3"),
]
_DIM = ("CD4", "FOXP3", "CD8a")
_COMPLEX = ["CD4", "CD8a", "FOXP3"]  # the complex component: the T-subtype markers, as the experiments name them


def _cell_geometry(
    rng: np.random.Generator, fine: np.ndarray, size: int, cy: np.ndarray, cx: np.ndarray
) -> dict[str, np.ndarray]:
    """Soft compartment maps (N, S, S) for one cell per sample centred at (cy, cx)."""
    n, k = len(fine), size / 16.0
    # nucleus radius: large tumour cells, thin stromal cells, small lymphocytes (B, T), medium otherwise
    tumour, stromal, endothelial, lymphocyte = fine == 0, fine == 1, fine == 2, fine >= 4
    r_nuc = k * np.select(
        [tumour, stromal, lymphocyte],
        [rng.uniform(2.6, 3.4, n), rng.uniform(1.6, 2.2, n), rng.uniform(1.8, 2.3, n)],
        rng.uniform(2.2, 2.9, n),
    )
    aspect = np.select(
        [stromal, endothelial], [rng.uniform(2.0, 3.0, n), rng.uniform(1.5, 2.2, n)], rng.uniform(1.0, 1.3, n)
    )
    grow = np.where(lymphocyte, rng.uniform(1.3, 1.5, n), rng.uniform(1.5, 1.9, n))
    theta = rng.uniform(0.0, np.pi, n)
    yy, xx = grid(size)
    d_nuc = ellipse_dist(yy, xx, cy, cx, r_nuc * np.sqrt(aspect), r_nuc / np.sqrt(aspect), theta)
    d_cell = ellipse_dist(yy, xx, cy, cx, grow * r_nuc * np.sqrt(aspect), grow * r_nuc / np.sqrt(aspect), theta)
    r_cell = (grow * r_nuc)[:, None, None]
    nucleus = sigmoid((1.0 - d_nuc) * 3.0 * r_nuc[:, None, None])
    cell = sigmoid((1.0 - d_cell) * 3.0 * r_cell)
    membrane = np.exp(-(((d_cell - 0.92) * r_cell) ** 2) / (2 * (0.7 * k) ** 2))
    return {"n": nucleus, "c": np.clip(cell - nucleus, 0.0, 1.0), "m": membrane, "w": cell}


def _render_cells(rng: np.random.Generator, fine: np.ndarray, size: int, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
    """Marker intensities (N, 19, S, S) of one cell per sample (no background)."""
    n = len(fine)
    maps = _cell_geometry(rng, fine, size, cy, cx)
    level = np.zeros((n, len(MULTIPLEX_CHANNELS)))
    ch = {name: i for i, name in enumerate(MULTIPLEX_CHANNELS)}
    level[:, ch["Hoechst"]] = rng.uniform(0.45, 1.0, n)
    level[:, ch["AF1"]] = rng.lognormal(np.log(0.08), 0.6, n)
    level[:, ch["Argo550"]] = rng.lognormal(np.log(0.05), 0.6, n)
    for marker, types, prob, levels in _EXPRESSION:
        lo, hi = {"dim": _DIM_LEVEL, "foxp3": _FOXP3_LEVEL}.get(levels, levels) if isinstance(levels, str) else levels
        on = np.isin(fine, types) & (rng.random(n) < prob)
        level[:, ch[marker]] = np.where(on, rng.uniform(lo, hi, n), level[:, ch[marker]])
    img = np.empty((n, len(MULTIPLEX_CHANNELS), size, size))
    for name, i in ch.items():
        img[:, i] = level[:, i, None, None] * maps[_COMPARTMENT[name]]
    chromatin = 1.0 + 0.25 * rng.standard_normal((n, size, size))
    img[:, ch["Hoechst"]] *= chromatin
    img[:, ch["Ki67"]] *= np.clip(1.0 + 0.8 * rng.standard_normal((n, size, size)), 0.0, None)
    return img


def _render_crops(rng: np.random.Generator, fine: np.ndarray, size: int) -> np.ndarray:
    """Single-cell crops (N, 19, S, S) uint8: focal cell near the centre, 0-2 partly visible neighbours of
    random type, per-channel background and noise."""
    n = len(fine)
    centre = size / 2 + rng.uniform(-1.0, 1.0, (2, n)) * size / 16
    img = _render_cells(rng, fine, size, centre[0], centre[1])
    for _ in range(2):
        present = rng.random(n) < 0.6
        angle, radius = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.6, 0.8, n) * size
        neighbour = _render_cells(
            rng,
            natural(rng, n, _NATURAL_FINE),
            size,
            size / 2 + radius * np.sin(angle),
            size / 2 + radius * np.cos(angle),
        )
        img += present[:, None, None, None] * neighbour
    background = rng.uniform(0.01, 0.05, (n, len(MULTIPLEX_CHANNELS), 1, 1))
    dim = [MULTIPLEX_CHANNELS.index(c) for c in _DIM]
    background[:, dim] = rng.normal(0.02, 0.002, (n, len(dim), 1, 1))  # dim channels: flat, low variance
    noise = rng.normal(0.0, 1.0, img.shape) * 0.02
    return to_u8(img + background + noise)


def make_multiplex(
    out_dir: str | Path,
    seed: int = 0,
    n_pretrain: int = 2000,
    n_train: int = 600,
    n_val: int = 200,
    n_test: int = 600,
    size: int = 16,
) -> dict[str, Path]:
    """Orion-CRC-like single-cell crops: (19, size, size) uint8, channels :data:`MULTIPLEX_CHANNELS`.

    A cell is an elliptical nucleus (Hoechst, chromatin noise; FOXP3/Ki67 nuclear) inside a cell body with
    cytoplasmic (Pan-CK, CD68, SMA) and membrane-ring (CD markers, E-cadherin) compartments. Bright, high
    variance markers decide the coarse type (tumour: Pan-CK/E-cadherin, stromal: elongated SMA, endothelial:
    CD31, macrophage: CD68/CD163/CD45, B: CD20/CD45, T: CD3e/CD45); the T-cell subtype is decided only by the
    dim (0.12-0.35 vs 0.02 background, noise sd 0.02) CD4, CD8a and FOXP3 channels (Treg = CD4+FOXP3+).

    Datasets: ``pretrain`` (natural imbalanced fine-type distribution of T-cell-rich tissue, 29 % T cells,
    labels = 8 fine types), ``cell_types`` (6 coarse types balanced per split; T subtypes in natural
    proportion) and ``t_cells`` (3 subtypes balanced per split), both with train/val/test; ``pretrain_complex``
    and ``t_cells_complex``: the same samples restricted to the complex component (CD4, CD8a, FOXP3).
    """
    check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    out, family = Path(out_dir), "multiplex"
    counts = [n_train, n_val, n_test]
    groups = {
        "nuclear": ["Hoechst", "FOXP3", "Ki67"],
        "dim_t_subtype": list(_DIM),
        "coarse_type": ["Pan-CK", "E-cadherin", "SMA", "CD31", "CD45", "CD68", "CD163", "CD20", "CD3e"],
    }
    info = {"family": family, "seed": int(seed), "channel_groups": groups, "dim_channels": list(_DIM)}
    paths: dict[str, Path] = {}

    dim = [MULTIPLEX_CHANNELS.index(c) for c in _COMPLEX]
    rng = rng_for(seed, family, "pretrain")
    fine = natural(rng, n_pretrain, _NATURAL_FINE)
    img = _render_crops(rng, fine, size)
    pre_info = {**info, "distribution": dict(zip(_FINE_TYPES, _NATURAL_FINE, strict=True))}
    for name, x, channels in (("pretrain", img, MULTIPLEX_CHANNELS), ("pretrain_complex", img[:, dim], _COMPLEX)):
        paths[name] = save(
            out,
            name,
            x,
            fine,
            split_codes([n_pretrain]),
            channel_names=channels,
            class_names=_FINE_TYPES,
            split_names=["train"],
            info=pre_info,
        )

    rng = rng_for(seed, family, "cell_types")
    coarse = balanced_splits(rng, counts, len(CELL_TYPES))
    fine = np.where(coarse == 5, 5 + natural(rng, len(coarse), _T_NATURAL), coarse)
    paths["cell_types"] = save(
        out,
        "cell_types",
        _render_crops(rng, fine, size),
        coarse,
        split_codes(counts),
        channel_names=MULTIPLEX_CHANNELS,
        class_names=CELL_TYPES,
        split_names=SPLITS,
        info=info,
    )

    rng = rng_for(seed, family, "t_cells")
    sub = balanced_splits(rng, counts, len(T_SUBTYPES))
    img = _render_crops(rng, 5 + sub, size)
    for name, x, channels in (("t_cells", img, MULTIPLEX_CHANNELS), ("t_cells_complex", img[:, dim], _COMPLEX)):
        paths[name] = save(
            out,
            name,
            x,
            sub,
            split_codes(counts),
            channel_names=channels,
            class_names=T_SUBTYPES,
            split_names=SPLITS,
            info=info,
        )
    return paths


def layout(params: Mapping[str, Any]) -> dict[str, Layout]:
    """What :func:`make_multiplex` writes with ``params`` (declared, not generated)."""
    size = params.get("size", inspect.signature(make_multiplex).parameters["size"].default)
    full, complex_ = Layout(tuple(MULTIPLEX_CHANNELS), (), (size, size)), Layout(tuple(_COMPLEX), (), (size, size))
    return {name: complex_ if name.endswith("_complex") else full for name in DATASETS}
