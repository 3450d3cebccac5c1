"""Orion-CRC (Lin et al. 2023): per-slide 19-channel OME-TIFF + per-cell table -> single-cell crops.

A preset of the ``multiplex`` kind (:mod:`splicer.data.real.multiplex`): the same lazy tile reader, tile cache,
gating engine and crop writer, with Orion-CRC's file names, its fixed 19-channel panel, the decision tree below and
the paper's three datasets. Inputs, one pair per chosen slide folder ``CRCxx`` plus ``markers.csv``, either
downloaded (archive names of :func:`splicer.data.sources.orion_archives`, ``source.slides``) or read in place
from a folder laid out as ``aws s3 sync s3://lin-2023-orion-crc/data <path>`` leaves it (``params.path``: one
``CRCxx/`` folder per slide, each with its own, identical ``markers.csv``; ``params.slides`` picks folders,
default all; a folder holding ``data/CRCxx/`` works too):

* ``<image stem>-zlib.ome.tiff`` -- whole-slide image, 19 channels, uint16, pyramidal (level 0 = the first
  series; one level-0 page per channel, in markers.csv order, as the upstream quantification reads it with
  ``tifffile.imread(path, level=0, key=channel)``), tiled (or stripped) and zlib compressed.
* ``<P37_Sxx>-<CRCxx>.csv`` -- MCMICRO/labsyspharm ``quantification`` table: ``CellID``, one column per marker
  named exactly as in markers.csv holding the cell's mean intensity, then ``X_centroid`` (column, level-0
  pixels), ``Y_centroid`` (row), ``Area``, ... (morphology columns are not used).
* ``markers.csv`` -- the channel list: either with a header holding ``marker_name`` (MCMICRO layout; other
  columns such as ``channel_number``/``cycle_number`` ignored) or the legacy header-less one-name-per-line
  form (as in labsyspharm/orion-crc ``scripts-processing/markers.csv``); it must name exactly the 19 channels
  of :data:`splicer.data.vocab.MULTIPLEX_CHANNELS` (any order; the image channels follow the file's order and
  are reordered to MULTIPLEX_CHANNELS in the crops).

Pixels are read lazily: never a whole page. For each crop only the level-0 tiles (or strips) it intersects are
read (``seek``/``read`` of the tile's bytes, ``page.decode``), through a byte-bounded LRU tile cache; cells are
visited in tile order (slide, tile row, tile column) so neighbouring crops reuse decoded tiles. With
``masks: [cell]`` the release's ``<P37_Sxx>-<CRCxx>-mask.ome.tif`` gives each crop its focal cell's mask.

Crops: ``crop_size`` x ``crop_size`` px (default 32 px = 10.4 um at Orion's 0.325 um/px; the paper gives no
size -- a third-party analysis of CRC01's table reports a median cell area of ~406 px^2, a ~23 px diameter, so
32 px holds the whole cell plus a thin rim of neighbours), all 19 channels, uint16 as stored. The crop of a cell
with centroid (x, y) covers rows ``floor(y) - S//2 .. + S - 1`` and columns ``floor(x) - S//2 .. + S - 1``.
``edge="skip"`` (default) drops cells whose crop would leave the image before any sampling; ``edge="pad"`` keeps
them, zero-filled outside.

Gating (no cell labels are released, so types come from the per-cell mean intensities). Per slide and marker,
a cell is *positive* (``m+``) when its mean intensity >= the marker's threshold. Thresholds
(``params.gates[marker]``, else ``params.default_gate``): a number (absolute, in the table's intensity units),
``"otsu"`` (Otsu's threshold on log1p(intensity) of all cells of the slide, 256-bin histogram; the default) or
``"quantile:<q>"`` (the slide's q-quantile, 0 < q < 1). Decision tree, first matching branch wins::

    Pan-CK+ and CD45+                      -> unassigned (conflicting epithelial / immune)
    Pan-CK+                                -> tumour
    CD45+:  exactly one of  CD3e+ | CD20+ | (CD68+ or CD163+)  else unassigned (no or several lineages)
            CD3e+                          -> T cell
            CD20+                          -> B cell
            CD68+ or CD163+                -> macrophage
    CD31+                                  -> endothelial      (Pan-CK-, CD45-)
    SMA+                                   -> stromal          (Pan-CK-, CD45-, CD31-)
    otherwise                              -> unassigned
    T cell subtype (T cells only):
            CD4+ FOXP3+ CD8a-              -> FOXP3 regulatory T
            CD4+ FOXP3- CD8a-              -> CD4 helper T
            CD8a+ CD4- FOXP3-              -> CD8 cytotoxic T
            otherwise                      -> no subtype (T cell in cell_types, absent from t_cells)

Datasets (names, channels, classes and splits as :func:`splicer.data.demo.make_multiplex`):

* ``pretrain`` -- ``n_pretrain`` cells drawn uniformly at random from every cell of the chosen slides that has
  one of the 8 fine types (5 non-T types + 3 T subtypes; class names as the demo) and is in neither evaluation
  dataset: the natural (tissue) distribution. Split ``train`` only.
* ``cell_types`` -- the 6 coarse types (CELL_TYPES), balanced: equal counts per class in every split.
* ``t_cells`` -- the 3 T-cell subtypes (T_SUBTYPES), balanced per split.

Splits (train/val/test, ``split_fractions``): with ``split_by="slide"`` (the default ``"auto"`` when 3 or more
slides are given) whole slides (patients) go to one split -- slides shuffled by the seed, then the first
``n - n_val - n_test`` train, the next ``n_val = max(1, round(f_val * n))`` val, the rest test -- so no patient
is in two splits; with ``split_by="cell"`` (``"auto"`` with 1-2 slides) cells are split at random, stratified by
class. ``per_class`` cells per class in all (each split gets its fraction of it; 0 = as many as the scarcest
(split, class) allows). When the scarcest (split, class) cannot give ``per_class`` -- with three slides, the
rarest T subtype of one slide caps every class -- the build fails and lists the cells available per class in
every split, unless ``min_per_class`` says how few per class you accept: then the largest balanced count
(>= min_per_class) is used. What was asked, accepted and written (per class and split) is in ``meta.json``
(``per_class_asked``, ``min_per_class``, ``per_class``, ``available``, ``class_counts``) and in the pipeline's
summary. Caps are applied before any pixel is read; a capped balanced split stays balanced.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from splicer.data.real.common import SPLITS, BuildError, Caps, check_params, require, split_order, stable_rng
from splicer.data.real.gating import apply_rules, otsu, parse_gate, thresholds
from splicer.data.real.mcmicro import Sample
from splicer.data.real.multiplex import CellTable, Plan, check_common, open_cells, sample_splits, write_crops
from splicer.data.sources import ORION_SLIDES, _orion_slide_id
from splicer.data.vocab import CELL_TYPES, MULTIPLEX_CHANNELS, T_SUBTYPES

__all__ = [
    "DECISION_TREE",
    "DEFAULTS",
    "FINE_TYPES",
    "GATE_MARKERS",
    "RULES",
    "T_RULES",
    "build_orion_crc",
    "gate_cells",
    "layout",
    "read_markers",
]

log = logging.getLogger(__name__)

KIND = "orion_crc"
FINE_TYPES = CELL_TYPES[:5] + T_SUBTYPES
"""Pretrain class names: the five non-T coarse types, then the three T-cell subtypes (as the demo)."""
GATE_MARKERS = ("Pan-CK", "CD45", "CD3e", "CD20", "CD68", "CD163", "CD31", "SMA", "CD4", "CD8a", "FOXP3")
"""Markers the decision tree reads (thresholds are computed for these only)."""

DECISION_TREE = [
    "positive (m+) = per-cell mean intensity >= threshold of marker m on that slide",
    "Pan-CK+ and CD45+ -> unassigned",
    "Pan-CK+ -> tumour",
    "CD45+ with exactly one of {CD3e+, CD20+, CD68+ or CD163+}: CD3e+ -> T cell; CD20+ -> B cell; "
    "CD68+ or CD163+ -> macrophage; CD45+ with none or several -> unassigned",
    "CD31+ (Pan-CK-, CD45-) -> endothelial",
    "SMA+ (Pan-CK-, CD45-, CD31-) -> stromal",
    "otherwise -> unassigned",
    "T cells: CD4+ FOXP3+ CD8a- -> FOXP3 regulatory T; CD4+ FOXP3- CD8a- -> CD4 helper T; "
    "CD8a+ CD4- FOXP3- -> CD8 cytotoxic T; otherwise no subtype",
]
"""The gating rule, as stored in every dataset's ``meta.info.gating.decision_tree``."""

DEFAULTS: dict[str, Any] = {
    "crop_size": 32,  # px at 0.325 um/px (see the module docstring)
    "edge": "skip",  # "skip": drop cells whose crop leaves the image; "pad": zero-fill outside
    "gates": {},  # {marker: number | "otsu" | "quantile:<q>"} for markers of GATE_MARKERS
    "default_gate": "otsu",  # the rule for markers not in gates
    "per_class": 2000,  # cells per class in cell_types and in t_cells (all splits); 0 = as many as possible
    "n_pretrain": 50000,  # cells in pretrain; 0 = every eligible cell
    "split_by": "auto",  # "slide" | "cell" | "auto" (slide with >= 3 slides, else cell)
    "split_fractions": [0.6, 0.2, 0.2],  # train / val / test
    # decoded-tile LRU cache; holding one tile row of all channels (~3 GB at 1024 px tiles on a ~78k px wide
    # slide) decodes every tile once, less re-decodes the tiles under crops that straddle two tile rows
    "cache_mb": 512,
    "min_per_class": None,  # the smallest per-class count accepted when per_class cannot be met (None: per_class)
    "path": None,  # read in place: a folder of CRCxx/ slide folders (aws s3 sync layout) instead of downloads
    "slides": [],  # with path: the slide folders to use (default: every one found)
    "masks": [],  # ["cell"]: each crop carries its focal cell's mask (the release's -mask.ome.tif)
    "check_channel_names": False,  # the images' OME channel names must equal markers.csv's (unverified upstream)
}

RULES = [
    {"label": None, "pos": ["Pan-CK", "CD45"], "neg": [], "any": []},
    {"label": "tumour", "pos": ["Pan-CK"], "neg": [], "any": []},
    {"label": "T cell", "pos": ["CD45", "CD3e"], "neg": ["CD20", "CD68", "CD163"], "any": []},
    {"label": "B cell", "pos": ["CD45", "CD20"], "neg": ["CD3e", "CD68", "CD163"], "any": []},
    {"label": "macrophage", "pos": ["CD45"], "neg": ["CD3e", "CD20"], "any": ["CD68", "CD163"]},
    {"label": None, "pos": ["CD45"], "neg": [], "any": []},
    {"label": "endothelial", "pos": ["CD31"], "neg": [], "any": []},
    {"label": "stromal", "pos": ["SMA"], "neg": [], "any": []},
]
"""The coarse decision tree as first-match gating rules (:mod:`splicer.data.real.gating`)."""
T_RULES = [
    {"label": "FOXP3 regulatory T", "pos": ["CD4", "FOXP3"], "neg": ["CD8a"], "any": []},
    {"label": "CD4 helper T", "pos": ["CD4"], "neg": ["FOXP3", "CD8a"], "any": []},
    {"label": "CD8 cytotoxic T", "pos": ["CD8a"], "neg": ["CD4", "FOXP3"], "any": []},
]
"""The T-cell subtype rules (applied to T cells only)."""

_COARSE = {name: i for i, name in enumerate(CELL_TYPES)}
_T = _COARSE["T cell"]
_otsu = otsu  # the name older callers use


# ------------------------------------------------------------------------------------------------ inputs
def read_markers(path: Path) -> list[str]:
    """Channel names of an Orion-CRC ``markers.csv`` in file order; exactly the 19 Orion-CRC channels once each
    (``marker_name`` column, or the release's header-less one-name-per-line form)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "marker_name" not in table.columns:
            table = pd.read_csv(path, header=None, usecols=[0], names=["marker_name"], dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise BuildError(path, f"cannot be read as a marker list ({err})") from err
    names = [str(n).strip() for n in table["marker_name"]]
    if sorted(names) != sorted(MULTIPLEX_CHANNELS):
        unexpected = sorted(set(names) - set(MULTIPLEX_CHANNELS))
        missing = sorted(set(MULTIPLEX_CHANNELS) - set(names))
        dup = sorted({n for n in names if names.count(n) > 1})
        raise BuildError(
            path,
            f"must name the 19 Orion-CRC channels {MULTIPLEX_CHANNELS} once each; got "
            f"{len(names)} names (unexpected {unexpected}, missing {missing}, repeated {dup})",
        )
    return names


def _names(folder: str) -> tuple[str, str, str]:
    """(image, cell table, mask) file names of one slide folder, as the release names them."""
    sid = _orion_slide_id(folder)
    return f"{ORION_SLIDES[folder][0]}-zlib.ome.tiff", f"{sid}-{folder}.csv", f"{sid}-{folder}-mask.ome.tif"


def _downloaded(files: Mapping[str, Path]) -> list[Sample]:
    """The slides whose image or cell table was handed to the build (both must be), in release order."""
    found = []
    for folder in ORION_SLIDES:
        image, cells, mask = _names(folder)
        if image in files or cells in files:
            masks = {"cell": Path(files[mask])} if mask in files else {}
            found.append(Sample(folder, require(files, image, KIND), require(files, cells, KIND), Path(), [], masks))
    if not found:
        raise BuildError(
            f"resources/{KIND}",
            f"no Orion-CRC slide image or cell table among the archives {sorted(files)}; expected names like "
            "'<image>-zlib.ome.tiff' and 'P37_S29-CRC01.csv' (download slides with source.slides, or read an "
            "aws s3 sync folder in place with params.path)",
        )
    markers_path = require(files, "markers.csv", KIND)
    names = read_markers(markers_path)
    for sample in found:
        sample.markers_file, sample.markers = markers_path, list(names)
        beside = sample.image.parent / "markers.csv"  # files handed from CRCxx/ folders: each has its own copy
        if beside.is_file() and beside.resolve() != markers_path.resolve() and read_markers(beside) != names:
            raise BuildError(beside, f"differs from {markers_path}: the release's markers.csv files are identical")
    return found


def _in_place(root: Path, slides: list[str]) -> list[Sample]:
    """Slides of a folder as ``aws s3 sync`` leaves the release: ``CRCxx/`` folders, each with its markers.csv
    (identical in every folder: checked)."""
    if not root.is_dir():
        raise BuildError(root, "Orion-CRC folder not found (params.path)")
    if not any((root / f).is_dir() for f in ORION_SLIDES) and (root / "data").is_dir():
        root = root / "data"  # the bucket's root was synced
    present = [f for f in ORION_SLIDES if (root / f).is_dir()]
    wanted = [str(s).upper() for s in slides] or present
    if unknown := [s for s in wanted if s not in ORION_SLIDES]:
        raise ValueError(
            f"{KIND}: unknown Orion-CRC slide(s) {unknown} in params.slides; folders: {list(ORION_SLIDES)}"
        )
    if not wanted:
        raise BuildError(root, f"holds no Orion-CRC slide folder (CRC01 ... CRC40); it has {sorted(os.listdir(root))}")
    if missing := [s for s in wanted if s not in present]:
        raise BuildError(root, f"has no slide folder(s) {missing} (found {present}); sync them first")
    found: list[Sample] = []
    for folder in wanted:
        image, cells, mask = _names(folder)
        markers = root / folder / "markers.csv"
        if not markers.is_file():
            raise BuildError(markers, "missing: every slide folder of the release holds its markers.csv")
        names = read_markers(markers)
        if found and names != found[0].markers:
            raise BuildError(
                markers,
                f"differs from {found[0].markers_file}: the release's markers.csv files are identical, so one of "
                f"them is damaged or from another release ({names} vs {found[0].markers})",
            )
        for name in (image, cells):
            if not (root / folder / name).is_file():
                raise BuildError(root / folder / name, f"missing from slide folder {folder}")
        masks = {"cell": root / folder / mask} if (root / folder / mask).is_file() else {}
        found.append(Sample(folder, root / folder / image, root / folder / cells, markers, names, masks))
    return found


# ------------------------------------------------------------------------------------------------ gating
def gate_cells(
    table: pd.DataFrame | Mapping[str, np.ndarray], cuts: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(coarse, subtype) per cell by the decision tree of the module docstring (:data:`RULES`, :data:`T_RULES`):
    coarse an index into CELL_TYPES or -1 (unassigned), subtype an index into T_SUBTYPES or -1 (not a T cell / no
    subtype). ``table`` holds each gated marker's per-cell mean intensities, ``cuts`` their thresholds."""
    positive = {m: np.asarray(table[m], np.float64) >= cuts[m] for m in GATE_MARKERS}
    n = len(positive[GATE_MARKERS[0]])
    coarse = apply_rules(positive, RULES, CELL_TYPES, n)
    sub = apply_rules(positive, T_RULES, T_SUBTYPES, n)
    return coarse, np.where(coarse == _T, sub, -1).astype(np.int64)


def _gate(table: CellTable, p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, float]]]:
    """Per slide: thresholds of the gated markers, then (coarse, subtype) of every cell."""
    n = len(table.cells)
    coarse, sub = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    cuts = {}
    sample_of = table.cells["sample"].to_numpy()
    for i, sample in enumerate(table.samples):
        rows = np.flatnonzero(sample_of == i)
        values = {m: table.means[rows, table.quant_markers.index(m)] for m in GATE_MARKERS}
        cuts[sample.name] = thresholds(values, p["gates"], p["default_gate"])
        coarse[rows], sub[rows] = gate_cells(values, cuts[sample.name])
    return coarse, sub, cuts


# ---------------------------------------------------------------------------------------------- selection
def _check(params: Mapping[str, Any]) -> dict[str, Any]:
    p = check_params(KIND, params, DEFAULTS)
    check_common(p, KIND)
    if p["split_by"] not in ("auto", "slide", "cell"):
        raise ValueError(f"{KIND}: params.split_by must be 'auto', 'slide' or 'cell', got {p['split_by']!r}")
    if unknown := sorted(set(p["gates"]) - set(GATE_MARKERS)):
        raise ValueError(
            f"{KIND}: params.gates names marker(s) {unknown} the gating does not use; gated markers: "
            f"{list(GATE_MARKERS)}"
        )
    for marker, spec in {**p["gates"], "default_gate": p["default_gate"]}.items():
        parse_gate(marker, spec)
    if isinstance(p["per_class"], bool) or not isinstance(p["per_class"], int) or p["per_class"] < 0:
        raise ValueError(f"{KIND}: params.per_class must be an int >= 0, got {p['per_class']!r}")
    low = p["min_per_class"]
    if low is not None and (isinstance(low, bool) or not isinstance(low, int) or low < 1):
        raise ValueError(f"{KIND}: params.min_per_class must be null or an int >= 1, got {low!r}")
    if low is not None and p["per_class"] and low > p["per_class"]:
        raise ValueError(f"{KIND}: params.min_per_class ({low}) exceeds per_class ({p['per_class']})")
    if p["path"] is not None and not (isinstance(p["path"], str) and p["path"]):
        raise ValueError(f"{KIND}: params.path must be a folder (of CRCxx/ slide folders), got {p['path']!r}")
    if p["slides"] and p["path"] is None:
        raise ValueError(f"{KIND}: params.slides goes with params.path (read in place); to download use source.slides")
    if p["masks"] not in ([], ["cell"]):
        raise ValueError(f"{KIND}: params.masks must be [] or ['cell'], got {p['masks']!r}")
    return p


def _shares(total: int, fractions: np.ndarray) -> np.ndarray:
    """Per-split counts of ``total`` (cumulative rounding, as three_way_split)."""
    bounds = np.round(np.cumsum(fractions)[:2] * total).astype(int)
    return np.diff(np.concatenate([[0], bounds, [total]]))


def _available(labels: np.ndarray, pool: np.ndarray, classes: list[str], group: np.ndarray | None) -> dict:
    """Cells per class in each split (slide splits) or in all (cell splits) a balanced set can draw on."""
    if group is None:
        return {"all": {c: int(np.sum(labels[pool] == i)) for i, c in enumerate(classes)}}
    return {
        split: {c: int(np.sum((labels[pool] == i) & (group[pool] == s))) for i, c in enumerate(classes)}
        for s, split in enumerate(SPLITS)
    }


def _largest(cands: Mapping[int, np.ndarray], group: np.ndarray | None, fractions: np.ndarray) -> int:
    """The largest per-class total whose split shares every (split, class) can give."""
    if group is None:
        return min(len(v) for v in cands.values())
    largest = min(
        (int(np.sum(group[v] == s) / fractions[s]) for v in cands.values() for s in range(3) if fractions[s] > 0),
        default=0,
    )
    while largest > 0 and any(
        _shares(largest, fractions)[s] > np.sum(group[v] == s) for v in cands.values() for s in range(3)
    ):
        largest -= 1
    return largest


def _per_class(name: str, largest: int, available: dict, p: Mapping[str, Any], where: str) -> int:
    """The per-class total to draw: ``per_class`` (0: ``largest``); a shortfall fails, naming the counts, unless
    ``min_per_class`` accepts it."""
    per_class, low = p["per_class"], p["min_per_class"]
    if largest == 0:
        raise BuildError(
            where,
            f"{name}: some class has no usable cell in a split (cells per class and split: {available}); adjust "
            "params.gates or add slides",
        )
    if per_class == 0 or largest >= per_class:
        return per_class or largest
    if low is None or largest < low:
        accepted = "" if low is None else f" and min_per_class {low} is not met"
        raise BuildError(
            where,
            f"{name}: only {largest} cells per class can be balanced across the splits, not per_class {per_class}"
            f"{accepted}; cells available per class and split: {available}. Set params.min_per_class to the "
            f"smallest per-class count you accept (e.g. {largest}), lower per_class, add slides or adjust "
            "params.gates",
        )
    log.warning("%s: %d cells per class (asked %d; min_per_class %d accepts it)", name, largest, per_class, low)
    return largest


def _balanced(
    labels: np.ndarray,
    pool: np.ndarray,
    k: int,
    group: np.ndarray | None,
    fractions: np.ndarray,
    total: int,
    seed: int,
    name: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced (rows, split codes): ``total`` cells per class, each split its share, class counts equal per split.

    ``group`` (split code per cell, by slide) fixes each cell's split; without it cells are split at random
    within each class."""
    rng = stable_rng(seed, KIND, name)
    shares = _shares(total, fractions)
    rows, codes = [], []
    for c in range(k):
        cands = pool[labels[pool] == c]
        if group is None:
            rows.append(rng.choice(cands, size=total, replace=False))
            codes.append(np.repeat(np.arange(3), shares))
        else:
            for s in range(3):
                rows.append(rng.choice(cands[group[cands] == s], size=shares[s], replace=False))
                codes.append(np.full(shares[s], s))
    return np.concatenate(rows).astype(np.int64), np.concatenate(codes).astype(np.uint8)


def _cap_balanced(
    rows: np.ndarray, codes: np.ndarray, labels: np.ndarray, k: int, caps: Caps, name: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Apply caps per split keeping classes balanced (to within one): a random subset per class."""
    keep = []
    for s, split in enumerate(SPLITS):
        idx = np.flatnonzero(codes == s)
        cap = caps.limit(name, split)
        if cap is None or idx.size <= cap:
            keep.append(idx)
            continue
        rng = stable_rng(seed, "caps", name, split)
        quota = np.full(k, cap // k) + (np.arange(k) < cap % k)
        for c in range(k):
            members = idx[labels[rows[idx]] == c]
            keep.append(np.sort(rng.choice(members, size=min(quota[c], members.size), replace=False)))
    kept = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return rows[kept], codes[kept]


def _class_counts(labels: np.ndarray, codes: np.ndarray, classes: list[str]) -> dict[str, dict[str, int]]:
    return {
        split: {c: int(np.sum((codes == s) & (labels == i))) for i, c in enumerate(classes)}
        for s, split in enumerate(SPLITS)
    }


# ------------------------------------------------------------------------------------------------- build
def build_orion_crc(
    out: str | Path, files: Mapping[str, Path], params: Mapping[str, Any], caps: Caps, seed: int
) -> dict[str, Path]:
    """Build ``pretrain``, ``cell_types`` and ``t_cells`` under ``out`` (see the module docstring)."""
    p = _check(params)
    fractions = np.asarray(p["split_fractions"], float)
    slides = _in_place(Path(p["path"]), p["slides"]) if p["path"] is not None else _downloaded(files)
    table = open_cells(
        slides,
        MULTIPLEX_CHANNELS,
        MULTIPLEX_CHANNELS,
        p["crop_size"],
        p["cache_mb"] << 20,
        p["masks"],
        p["check_channel_names"],
    )
    try:
        coarse, sub, cuts = _gate(table, p)
        keep = table.cells["inside"].to_numpy() if p["edge"] == "skip" else np.ones(len(table.cells), bool)
        sample_of = table.cells["sample"].to_numpy()
        per_slide = {}
        for i, slide in enumerate(slides):
            mine = keep & (sample_of == i)
            per_slide[slide.name] = {
                **table.info[slide.name],
                "image": slide.image.name,
                "cells": slide.table.name,
                "thresholds": {m: v if math.isfinite(v) else "inf" for m, v in cuts[slide.name].items()},
                "counts": {
                    **{n: int(np.sum((coarse == c) & mine)) for n, c in _COARSE.items()},
                    "unassigned": int(np.sum((coarse == -1) & mine)),
                    **{n: int(np.sum((sub == s) & mine)) for s, n in enumerate(T_SUBTYPES)},
                    "T cell without subtype": int(np.sum((coarse == _T) & (sub == -1) & mine)),
                },
            }
            log.info(
                "%s: thresholds %s, counts %s",
                slide.name,
                {m: round(v, 2) for m, v in cuts[slide.name].items()},
                per_slide[slide.name]["counts"],
            )
        coarse, sub = np.where(keep, coarse, -1), np.where(keep, sub, -1)
        fine = np.where(coarse == _T, np.where(sub >= 0, 5 + sub, -1), coarse)

        # ---- splits and selections (caps applied here, before any pixel is read)
        names = [s.name for s in slides]
        by_slide = p["split_by"] == "slide" or (p["split_by"] == "auto" and len(slides) >= 3)
        slide_split = (
            sample_splits(names, fractions, seed, {}, KIND, unit="slide", setting="split_by='slide'")
            if by_slide
            else None
        )
        group = None if slide_split is None else np.array([slide_split[names[i]] for i in sample_of], np.int64)
        where = ", ".join(str(s.table) for s in slides)
        everyone = np.arange(len(table.cells))
        chosen: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        balance = {}
        for name, labels, classes in (("cell_types", coarse, CELL_TYPES), ("t_cells", sub, T_SUBTYPES)):
            pool = everyone[labels >= 0]
            cands = {c: pool[labels[pool] == c] for c in range(len(classes))}
            available = _available(labels, pool, classes, group)
            total = _per_class(name, _largest(cands, group, fractions), available, p, where)
            rows, codes = _balanced(labels, pool, len(classes), group, fractions, total, seed, name)
            rows, codes = _cap_balanced(rows, codes, labels, len(classes), caps, name, seed)
            chosen[name] = (rows, labels[rows], codes)
            balance[name] = {
                "per_class_asked": p["per_class"],
                "min_per_class": p["min_per_class"],
                "per_class": total,
                "available": available,
                "class_counts": _class_counts(labels[rows], codes, classes),
            }
        used = np.zeros(len(table.cells), bool)
        for rows, _, _ in chosen.values():
            used[rows] = True
        pool = everyone[(fine >= 0) & ~used]
        n_pre = pool.size if p["n_pretrain"] == 0 else min(p["n_pretrain"], pool.size)
        if n_pre == 0:
            raise BuildError(where, "pretrain: no typed cell left outside the evaluation datasets")
        rows = np.sort(stable_rng(seed, KIND, "pretrain").choice(pool, size=n_pre, replace=False))
        rows = caps.apply(rows, "pretrain", "train", seed)
        chosen["pretrain"] = (rows, fine[rows], np.zeros(rows.size, np.uint8))

        info = {
            "source": "Orion-CRC (Lin et al. 2023), s3://lin-2023-orion-crc/data",
            "seed": int(seed),
            "slides": names,
            "read_in_place": p["path"],
            "crop_size": p["crop_size"],
            "edge": p["edge"],
            "split_by": "slide" if by_slide else "cell",
            "slide_splits": None if slide_split is None else {f: SPLITS[c] for f, c in slide_split.items()},
            "split_fractions": fractions.tolist(),
            "normalisation": {"method": "none", "note": "uint16 intensities as stored"},
            "gating": {
                "decision_tree": DECISION_TREE,
                "rules": RULES,
                "t_rules": T_RULES,
                "gates": dict(p["gates"]),
                "default_gate": p["default_gate"],
                "per_slide": per_slide,
            },
        }
        kinds = {
            "pretrain": (FINE_TYPES, ["train"]),
            "cell_types": (CELL_TYPES, SPLITS),
            "t_cells": (T_SUBTYPES, SPLITS),
        }
        plans = []
        for name in ("pretrain", "cell_types", "t_cells"):
            rows, labels, codes = chosen[name]
            perm = stable_rng(seed, KIND, name, "order").permutation(rows.size)
            order = perm[split_order(codes[perm])]
            extra = (
                {"distribution": "natural (gated fine types)", "n_pool": int(pool.size)}
                if name == "pretrain"
                else {**balance[name], "balanced": True}
            )
            classes, split_names = kinds[name]
            plans.append(
                Plan(
                    name, rows[order], labels[order], codes[order], list(classes), list(split_names), {**info, **extra}
                )
            )
        return write_crops(Path(out), table, plans)
    finally:
        table.close()


# ------------------------------------------------------------------------------------------------ layout
def layout(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``orion_crc`` entry's build writes, without building (19 channels, ``crop_size`` px); fails when the
    entry names neither slides to download (``source.slides``) nor a folder to read in place (``params.path``)."""
    from splicer.registry import Layout

    p = _check(spec.get("params", {}))
    if p["path"] is None and not dict(spec.get("source") or {}).get("slides"):
        raise ValueError(
            f"{KIND}: choose slides to download (source.slides) or a folder to read in place (params.path)"
        )
    size = (p["crop_size"], p["crop_size"])
    return {
        n: Layout(tuple(MULTIPLEX_CHANNELS), tuple(p["masks"]), size) for n in ("pretrain", "cell_types", "t_cells")
    }
