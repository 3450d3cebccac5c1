"""Multiplex whole-slide images processed by MCMICRO -> single-cell crops, read in place, any marker panel.

Input: an MCMICRO output folder (mcmicro.org, labsyspharm/mcmicro and nf-core/mcmicro), or a folder holding
several of them (one per sample), or a list of such folders (``params.path``). One MCMICRO project folder::

    <project>/markers.csv                                  channel names: a ``marker_name`` column, one row per
                                                           image channel, in channel order (header-less
                                                           one-name-per-line files are accepted too)
    <project>/registration/<sample>.ome.tif[f]             the stitched, registered image: pyramidal OME-TIFF,
                                                           one level-0 page per channel, tiled or stripped
    <project>/dearray/<core>.tif                           (TMA mode) one image per core, used instead
    <project>/segmentation/<method>-<sample>/cell.ome.tif  label mask, pixel value = CellID (also nuclei.ome.tif)
    <project>/quantification/<sample>--<method>_cell.csv   per-cell table: CellID, one mean-intensity column per
                                                           marker (named as in markers.csv), X_centroid (column,
                                                           level-0 px), Y_centroid (row), Area, ...

Each quantification table is one *sample* (MCMICRO names the project folder after its sample; a TMA gives one
table per core). The pre-2022 name ``<method>-<sample>_cell.csv`` is accepted too. With several segmentation
methods in a project, ``params.segmentation`` picks one. Nothing is copied: pixels are read lazily, tile by tile
(never a whole page), through a byte-bounded LRU cache of decoded tiles (:mod:`splicer.data.real.tiles`), visiting
cells in (sample, tile row, tile column) order so that neighbouring crops reuse decoded tiles.

Channels: the markers of ``markers.csv``, filtered by ``params.keep`` and ``params.drop`` (names or fnmatch
patterns such as ``"DNA_[2-9]"``, ``"*_background"``, ``"AF*"``), in panel order (or in ``keep``'s order). Every
sample of one dataset must have the same panel (in any channel order) unless ``keep`` names only markers they all
share or ``common_panel: true`` asks for the markers they all share. The image must have one channel per marker;
where its OME-XML names every channel, the names must be markers.csv's (``check_channel_names: false`` skips this).

Crops: ``crop_size`` px square around each cell's centroid: rows ``floor(Y) - S//2 .. + S - 1``, columns likewise.
``edge="skip"`` (default) drops cells whose crop would leave the image; ``edge="pad"`` keeps them, zero-filled.
Stored uint16. When the segmentation mask is present (``masks``: None = use ``cell`` when every sample has it, a
list of mask files to require such as ``["cell", "nuclei"]``, ``[]`` = none) each crop carries the *focal cell's*
mask (pixels labelled with its CellID) as mask ``cell`` (``nuclei``, ...), so ``{type: mask, mask: cell}`` and its
``invert`` pair the cell and its surround. Mask labels are checked against the table: a cell with no pixel of its
CellID in its crop is counted; more than 10 % of them (checked from the 200th cell on) fail the build.

Normalisation (``normalise``): ``"percentile"`` (default; the norm for multiplex data) clips every marker of every
sample (slide) to its [p_lo, p_hi] pixel percentiles (``percentiles``, default 1 and 99.9) and scales that range to
0..65535. The percentiles are estimated on 2^20 level-0 pixels drawn at random from up to ``norm_tiles`` (32) tiles
holding randomly chosen cells (so tissue, not empty glass, decides them); the values used are recorded per sample
and marker in ``meta.info.normalisation``. ``"none"`` keeps the stored intensities.

Labels (optional, ``labels``): ``{column: <name>}`` a column of the quantification table; ``{csv: <file>, column:
<name>}`` a CSV keyed by ``CellID`` (plus a ``sample`` or ``imageid`` column when there are several samples);
``{rules: [...], gates: {...}, default_gate: otsu}`` gating of the marker means: per sample and marker a
threshold (a number, ``"otsu"`` on log1p(mean) or ``"quantile:<q>"``), then the first rule whose ``pos`` markers
are all positive, ``neg`` all negative and (if given) at least one of ``any`` positive gives the cell its
``label`` (``null``: unlabelled). ``classes`` orders (and restricts) the class names; ``key`` names the label
(``cell_type``; the column of the AnnData export). Cells without a label get -1.

Datasets (split names train / val / test; rows ordered by split):

* ``cells`` -- every kept cell of every sample, labelled where labels exist. Splits (``split_by``): whole samples
  (``"sample"``, the default ``"auto"`` with >= 3 samples; shuffled by the seed, or fixed by ``sample_splits``), or
  cells at random, stratified by label (``"cell"``). This is what ``splicer embed --format h5ad`` exports.
* ``pretrain`` -- ``n_pretrain`` cells (0 = all) drawn at random from every kept cell (``pretrain_from: all``, the
  default, transductive as is usual for self-supervised learning) or from the train split's (``"train"``); split
  ``train`` only: a pretraining set small enough to be loaded into memory.

Besides the dataset format's arrays each dataset holds, row by row, ``cell_ids.npy`` (CellID), ``cell_samples.npy``
(index into ``meta.info.samples``), ``centroids.npy`` ((X, Y) in level-0 px) and ``marker_means.npy`` (the table's
mean intensities of ``meta.info.quant_markers``, float32): what the AnnData export needs. Everything is written
row by row into memory-mapped files (never held in memory) and moved into place only when complete; the build logs
its progress (cells written, cells/s, time left). Caps are applied before any pixel is read.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from splicer.data.format import DatasetWriter
from splicer.data.real.common import SPLITS, BuildError, Caps, check_params, stable_rng, three_way_split
from splicer.data.real.gating import apply_rules, check_rules, parse_gate, thresholds
from splicer.data.real.mcmicro import CELL_ID, Sample, find_mcmicro, folder_paths, read_table, resolve_channels
from splicer.data.real.tiles import LazyImage

__all__ = [
    "CELL_FILES",
    "DEFAULTS",
    "CellTable",
    "Plan",
    "Progress",
    "build_multiplex",
    "cell_labels",
    "check_common",
    "layout",
    "open_cells",
    "percentile_ranges",
    "sample_splits",
    "write_crops",
]

log = logging.getLogger(__name__)

KIND = "multiplex"
CELL_FILES = {
    "cell_ids": "cell_ids.npy",
    "cell_samples": "cell_samples.npy",
    "centroids": "centroids.npy",
    "marker_means": "marker_means.npy",
}
"""Per-row cell records written beside a dataset's arrays (what the AnnData export reads)."""
MASK_MISMATCH = 0.10  # more than this fraction of checked cells without their CellID in their crop: fail
MASK_CHECK_FROM = 200  # ... once this many cells of a sample have been checked

DEFAULTS: dict[str, Any] = {
    "path": None,  # an MCMICRO project folder, a folder of them, or a list of folders (required)
    "samples": [],  # sample names to use (default: every sample found)
    "segmentation": "",  # segmentation method (e.g. "unmicst") when a project holds several
    "keep": [],  # markers kept as crop channels (names or fnmatch patterns); [] = every marker
    "drop": [],  # markers dropped (names or patterns), e.g. ["DNA_[2-9]", "*_background", "AF*"]
    "common_panel": False,  # samples with different panels: keep only the markers all of them have
    "check_channel_names": True,  # OME channel names, where the image has them, must be markers.csv's
    "crop_size": 32,  # px; MCMICRO data are often 0.65 um/px (20x), where 32 px ~ 21 um ~ a cell and its neighbours
    "edge": "skip",  # "skip": drop cells whose crop leaves the image; "pad": zero-fill outside
    "normalise": "percentile",  # "percentile": per-sample, per-marker clip to percentiles and scale; "none"
    "percentiles": [1.0, 99.9],
    "norm_tiles": 32,  # level-0 tiles (under random cells) whose pixels estimate the percentiles
    "masks": None,  # None: "cell" when every sample has it; [] none; ["cell", "nuclei", ...]: required
    "labels": {},  # {} | {column} | {csv, column} | {rules, gates, default_gate}; + key, classes
    "split_by": "auto",  # "sample" | "cell" | "auto" (sample with >= 3 samples, else cell)
    "split_fractions": [0.6, 0.2, 0.2],
    "sample_splits": {},  # {sample: train|val|test}: fixes every sample's split (split_by sample)
    "n_pretrain": 50000,  # cells in pretrain; 0 = all
    "pretrain_from": "all",  # "all" | "train"
    "cache_mb": 512,  # decoded-tile LRU cache per image
}


# ------------------------------------------------------------------------------------------------ cells
@dataclass
class CellTable:
    """Every cell of the chosen samples: ``cells`` (sample, CellID, X/Y centroid, crop top/left, inside the image)
    and ``means`` (float32, one column per ``quant_markers``), images opened lazily, per-sample facts in ``info``."""

    samples: list[Sample]
    channels: list[str]
    quant_markers: list[str]
    crop_size: int
    cells: pd.DataFrame
    means: np.ndarray
    images: list[LazyImage]
    masks: list[dict[str, LazyImage]]
    mask_names: list[str]
    info: dict[str, dict[str, Any]]
    extra: pd.DataFrame | None = None

    def close(self) -> None:
        for image in self.images:
            image.close()
        for masks in self.masks:
            for mask in masks.values():
                mask.close()


def _check_names(image: LazyImage, sample: Sample) -> None:
    names = image.channel_names
    if names is not None and names != sample.markers:
        lacks = [m for m in sample.markers if m not in names]
        extra = [n for n in names if n not in sample.markers]
        raise BuildError(
            image.path,
            f"its channels are named {names} but {sample.markers_file} names {sample.markers} (markers.csv names "
            f"{lacks} the image lacks; the image has {extra} markers.csv lacks, or the order differs); fix "
            "markers.csv, or set params.check_channel_names: false if the OME names are wrong",
        )


def _mask_names(samples: Sequence[Sample], masks: Any) -> list[str]:
    if masks is None:
        return ["cell"] if all("cell" in s.masks for s in samples) else []
    for s in samples:
        if missing := [m for m in masks if m not in s.masks]:
            seg = s.table.parent.parent / "segmentation"
            raise BuildError(
                seg, f"sample {s.name!r} has no mask(s) {missing} (params.masks); it has {sorted(s.masks) or 'none'}"
            )
    return list(masks)


def open_cells(
    samples: Sequence[Sample],
    channels: Sequence[str],
    quant_markers: Sequence[str],
    crop_size: int,
    cache_bytes: int,
    masks: Any = None,
    check_channel_names: bool = True,
    extra_columns: Sequence[str] = (),
) -> CellTable:
    """Open every sample's image (header only) and masks, read its cell table, check them against each other."""
    images: list[LazyImage] = []
    mask_images: list[dict[str, LazyImage]] = []
    frames, means, extras, info = [], [], [], {}
    mask_names = _mask_names(samples, masks)
    half = crop_size // 2
    try:
        for i, sample in enumerate(samples):
            image = LazyImage(sample.image, cache_bytes)
            images.append(image)
            if image.channels != len(sample.markers):
                raise BuildError(
                    image.path,
                    f"has {image.channels} channels but {sample.markers_file} names {len(sample.markers)} markers "
                    f"({sample.markers}); markers.csv must list every image channel, in order",
                )
            if check_channel_names:
                _check_names(image, sample)
            image.select([sample.markers.index(c) for c in channels])
            mask_images.append({})
            for name in mask_names:
                mask = LazyImage(sample.masks[name], max(cache_bytes // 4, 1 << 20), label=True)
                mask_images[-1][name] = mask
                if (mask.channels, mask.height, mask.width) != (1, image.height, image.width):
                    raise BuildError(
                        mask.path,
                        f"mask is {mask.channels}x{mask.height}x{mask.width} but image {image.path.name} is "
                        f"{image.height}x{image.width}: a mask of another sample?",
                    )
            table, dropped = read_table(sample.table, sample.markers, image.width, image.height, extra_columns)
            x = np.floor(table["X_centroid"].to_numpy()).astype(np.int64) - half
            y = np.floor(table["Y_centroid"].to_numpy()).astype(np.int64) - half
            inside = (x >= 0) & (y >= 0) & (x + crop_size <= image.width) & (y + crop_size <= image.height)
            frames.append(
                pd.DataFrame(
                    {
                        "sample": i,
                        CELL_ID: table[CELL_ID].to_numpy(),
                        "X_centroid": table["X_centroid"].to_numpy(np.float64),
                        "Y_centroid": table["Y_centroid"].to_numpy(np.float64),
                        "left": x,
                        "top": y,
                        "inside": inside,
                    }
                )
            )
            means.append(table[list(quant_markers)].to_numpy(np.float32))
            if extra_columns:
                extras.append(table[list(extra_columns)])
            info[sample.name] = {
                "image": str(sample.image),
                "table": str(sample.table),
                "masks": {m: str(sample.masks[m]) for m in mask_names},
                "size_yx": [image.height, image.width],
                "tile_yx": list(image.tile_shape),
                "pixel_size_um": image.pixel_size_um,
                "n_cells": len(table),
                "n_dropped_missing_values": dropped,
                "n_crop_outside_image": int((~inside).sum()),
            }
            log.info(
                "%s: %d cells, image %dx%d, %d channels",
                sample.name,
                len(table),
                image.width,
                image.height,
                image.channels,
            )
    except BaseException:
        for image in images:
            image.close()
        for found in mask_images:
            for mask in found.values():
                mask.close()
        raise
    cells = pd.concat(frames, ignore_index=True)
    return CellTable(
        list(samples),
        list(channels),
        list(quant_markers),
        crop_size,
        cells,
        np.concatenate(means) if means else np.zeros((0, len(quant_markers)), np.float32),
        images,
        mask_images,
        mask_names,
        info,
        pd.concat(extras, ignore_index=True) if extras else None,
    )


# ------------------------------------------------------------------------------------------------ labels
_LABEL_KEYS = {"key", "classes", "column", "csv", "rules", "gates", "default_gate"}


def _check_labels(spec: Mapping[str, Any]) -> str | None:
    """The label source (``column``, ``csv``, ``rules``) or None; ValueError on a malformed spec."""
    where = f"{KIND}: params.labels"
    if not spec:
        return None
    if extra := sorted(set(spec) - _LABEL_KEYS):
        raise ValueError(f"{where}: unknown key(s) {extra}; known: {sorted(_LABEL_KEYS)}")
    sources = [k for k in ("csv", "rules") if k in spec] or (["column"] if "column" in spec else [])
    if len(sources) != 1 or ("rules" in spec and "column" in spec):
        raise ValueError(f"{where} needs exactly one source: column, csv (+ column) or rules (+ gates); got {spec}")
    source = sources[0]
    if source in ("column", "csv") and not (isinstance(spec.get("column"), str) and spec["column"]):
        raise ValueError(f"{where}.column must name the label column, got {spec.get('column')!r}")
    if "classes" in spec and not (
        isinstance(spec["classes"], list) and spec["classes"] and all(isinstance(c, str) for c in spec["classes"])
    ):
        raise ValueError(f"{where}.classes must be a list of class names, got {spec['classes']!r}")
    if "key" in spec and not (isinstance(spec["key"], str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec["key"])):
        raise ValueError(f"{where}.key must be a column name such as cell_type, got {spec['key']!r}")
    if source != "rules" and ({"gates", "default_gate"} & set(spec)):
        raise ValueError(f"{where}: gates / default_gate go with rules (gating), not with {source}")
    if source == "rules":
        gates = spec.get("gates", {})
        if not isinstance(gates, Mapping):
            raise ValueError(f"{where}.gates must map markers to thresholds, got {gates!r}")
        for marker, gate in {**gates, "default_gate": spec.get("default_gate", "otsu")}.items():
            parse_gate(marker, gate)
    return source


def _classes(spec: Mapping[str, Any], found: Iterable[str]) -> list[str]:
    if "classes" in spec:
        return list(spec["classes"])
    return list(dict.fromkeys(str(v) for v in found))


def cell_labels(table: CellTable, spec: Mapping[str, Any]) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """(class index per cell or -1, class names, provenance for meta.json) from the ``labels`` spec."""
    source = _check_labels(spec)
    n = len(table.cells)
    if source is None:
        return np.full(n, -1, np.int64), [], {"source": None}
    where = f"{KIND}: params.labels"
    if source == "column":
        values = table.extra[spec["column"]].astype("string") if table.extra is not None else None
        assert values is not None
        classes = _classes(spec, sorted(values.dropna().unique()))
        labels = _index(values, classes)
        return labels, classes, {"source": "column", "column": spec["column"]}
    if source == "csv":
        return _csv_labels(table, spec)
    rules = check_rules(spec["rules"], table.quant_markers, where)
    classes = _classes(spec, (r["label"] for r in rules if r["label"] is not None))
    gated = sorted({m for r in rules for k in ("pos", "neg", "any") for m in r[k]})
    gates = dict(spec.get("gates", {}))
    if unknown := sorted(set(gates) - set(table.quant_markers)):
        raise ValueError(f"{where}.gates names marker(s) {unknown} not in the panel {table.quant_markers}")
    labels = np.full(n, -1, np.int64)
    per_sample = {}
    sample_of = table.cells["sample"].to_numpy()
    for i, sample in enumerate(table.samples):
        rows = np.flatnonzero(sample_of == i)
        values = {m: table.means[rows, table.quant_markers.index(m)] for m in gated}
        cut = thresholds(values, gates, spec.get("default_gate", "otsu"))
        positive = {m: values[m] >= cut[m] for m in gated}
        labels[rows] = apply_rules(positive, rules, classes, rows.size)
        per_sample[sample.name] = {m: v if math.isfinite(v) else "inf" for m, v in cut.items()}
    provenance = {
        "source": "gating",
        "rules": rules,
        "gates": gates,
        "default_gate": spec.get("default_gate", "otsu"),
        "thresholds": per_sample,
    }
    return labels, classes, provenance


def _index(values: pd.Series, classes: Sequence[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) if isinstance(v, str) else -1 for v in values], np.int64)


def _csv_labels(table: CellTable, spec: Mapping[str, Any]) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    path = Path(spec["csv"])
    column = spec["column"]
    try:
        frame = pd.read_csv(path, dtype={column: "string"})
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise BuildError(path, f"cannot be read as a label CSV ({err})") from err
    sample_col = next((c for c in ("sample", "imageid") if c in frame.columns), None)
    if missing := [c for c in (CELL_ID, column) if c not in frame.columns]:
        raise BuildError(path, f"label CSV lacks column(s) {missing}; has {list(frame.columns)}")
    names = [s.name for s in table.samples]
    if sample_col is None:
        if len(names) > 1:
            raise BuildError(path, f"label CSV needs a 'sample' (or 'imageid') column: there are samples {names}")
        frame["sample"], sample_col = names[0], "sample"
    frame[sample_col] = frame[sample_col].astype(str)
    if unknown := sorted(set(frame[sample_col]) - set(names)):
        raise BuildError(path, f"label CSV names sample(s) {unknown[:5]} not among {names}")
    if frame.duplicated([sample_col, CELL_ID]).any():
        raise BuildError(path, "label CSV lists a (sample, CellID) more than once")
    key = pd.MultiIndex.from_arrays([frame[sample_col], pd.to_numeric(frame[CELL_ID], errors="coerce")])
    lookup = pd.Series(frame[column].to_numpy(), index=key)
    cells = pd.MultiIndex.from_arrays(
        [np.array(names, dtype=object)[table.cells["sample"].to_numpy()], table.cells[CELL_ID].to_numpy()]
    )
    values = lookup.reindex(cells)
    matched = int(values.notna().sum())
    if matched == 0:
        raise BuildError(path, f"no row of the label CSV matches a cell (by sample and {CELL_ID})")
    classes = _classes(spec, sorted(pd.Series(values).dropna().unique()))
    labels = _index(pd.Series(values.to_numpy()), classes)
    return labels, classes, {"source": "csv", "csv": str(path), "column": column, "n_matched": matched}


# --------------------------------------------------------------------------------------------- normalising
def percentile_ranges(
    table: CellTable, rows: np.ndarray, percentiles: Sequence[float], n_tiles: int, seed: int, pixels: int = 1 << 20
) -> dict[str, dict[str, list[float]]]:
    """Per sample and crop channel, the [lo, hi] pixel percentiles of ``pixels`` level-0 pixels drawn at random from
    up to ``n_tiles`` tiles that hold randomly chosen cells (of ``rows``): tissue decides, not the glass around it;
    a few MB whatever the tile size."""
    out = {}
    sample_of = table.cells["sample"].to_numpy()
    xs = np.floor(table.cells["X_centroid"].to_numpy()).astype(np.int64)
    ys = np.floor(table.cells["Y_centroid"].to_numpy()).astype(np.int64)
    for i, sample in enumerate(table.samples):
        image = table.images[i]
        rng = stable_rng(seed, KIND, "normalise", sample.name)
        mine = rows[sample_of[rows] == i]
        mine = mine[rng.permutation(mine.size)]
        under = (ys[mine] // image.tile_h) * image.nx + xs[mine] // image.tile_w  # tile under each cell, in order
        _, first = np.unique(under, return_index=True)
        tiles = under[np.sort(first)][:n_tiles]
        if not tiles.size:
            out[sample.name] = {c: [0.0, 1.0] for c in table.channels}
            continue
        per_tile = max(1, pixels // tiles.size)
        drawn = []
        for t in tiles:
            flat = image.tile(int(t)).reshape(len(table.channels), -1)
            drawn.append(flat[:, rng.choice(flat.shape[1], size=min(per_tile, flat.shape[1]), replace=False)])
        lo, hi = np.percentile(np.concatenate(drawn, axis=1), percentiles, axis=1)
        hi = np.maximum(hi, lo + 1.0)
        out[sample.name] = {c: [float(a), float(b)] for c, a, b in zip(table.channels, lo, hi, strict=True)}
    return out


def _scaler(ranges: Mapping[str, Mapping[str, Sequence[float]]] | None, table: CellTable) -> Callable | None:
    """``apply(sample index, raw crop, out)``: the crop clipped to its sample's ranges and scaled to 0..65535."""
    if ranges is None:
        return None
    lo, scale = [], []
    for s in table.samples:
        low = np.array([ranges[s.name][c][0] for c in table.channels], np.float32)[:, None, None]
        high = np.array([ranges[s.name][c][1] for c in table.channels], np.float32)[:, None, None]
        lo.append(low)
        scale.append(np.float32(65535.0) / (high - low))

    def apply(sample: int, crop: np.ndarray, out: np.ndarray) -> None:
        x = (crop.astype(np.float32) - lo[sample]) * scale[sample]
        np.clip(x, 0.0, 65535.0, out=x)
        np.rint(x, out=x)
        out[:] = x

    return apply


# ------------------------------------------------------------------------------------------------ writing
@dataclass
class Plan:
    """One dataset to write: cell rows (into :attr:`CellTable.cells`), their labels and split codes (in that row
    order), class and split names, and its ``meta.info``."""

    name: str
    rows: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    class_names: list[str]
    split_names: list[str]
    info: dict[str, Any]


class _Records:
    """The per-row cell records of one dataset (:data:`CELL_FILES`), memory-mapped in its temp directory."""

    def __init__(self, folder: Path, n: int, m: int) -> None:
        mm = np.lib.format.open_memmap
        self.ids = mm(folder / CELL_FILES["cell_ids"], "w+", np.int64, (n,))
        self.samples = mm(folder / CELL_FILES["cell_samples"], "w+", np.int32, (n,))
        self.centroids = mm(folder / CELL_FILES["centroids"], "w+", np.float64, (n, 2))
        self.means = mm(folder / CELL_FILES["marker_means"], "w+", np.float32, (n, m))

    def flush(self) -> None:
        for array in (self.ids, self.samples, self.centroids, self.means):
            array.flush()
        del self.ids, self.samples, self.centroids, self.means


class Progress:
    """Logs ``done / total`` cells, the rate and the time left, at most every ``every`` seconds (and at the end)."""

    def __init__(self, total: int, what: str, every: float = 30.0, callback: Callable | None = None) -> None:
        self.total, self.what, self.every, self.callback = total, what, every, callback
        self.start = self.last = time.monotonic()
        self.done = 0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else math.inf
            log.info(
                "%s: %d/%d cells (%.0f%%), %.0f cells/s, %.0f s left",
                self.what,
                self.done,
                self.total,
                100.0 * self.done / max(self.total, 1),
                rate,
                left,
            )
            if self.callback is not None:
                self.callback(self.done, self.total, rate)


def write_crops(
    out: Path,
    table: CellTable,
    plans: Sequence[Plan],
    ranges: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    progress: Callable | None = None,
) -> dict[str, Path]:
    """Write every plan's dataset: one pass over the cells they need, sample by sample in tile order, each crop
    read once (through the tile cache) and written to every dataset holding that cell. Nothing is moved into place
    unless all datasets are complete; a failure leaves no dataset and no temp folder behind."""
    out = Path(out)
    size, c = table.crop_size, len(table.channels)
    scale = _scaler(ranges, table)
    sample_names = [s.name for s in table.samples]
    writers: dict[str, DatasetWriter] = {}
    records: dict[str, _Records] = {}
    # row of every cell in every dataset (-1: not in it): 8 bytes per cell and dataset, not a Python object each
    position = np.full((len(table.cells), len(plans)), -1, np.int64)
    for plan in plans:
        if np.unique(plan.rows).size != plan.rows.size or [p.name for p in plans].count(plan.name) > 1:
            raise ValueError(f"dataset {plan.name!r}: a cell is planned twice, or two datasets share the name")
    try:
        for plan in plans:
            meta = {
                "name": plan.name,
                "channel_names": list(table.channels),
                "class_names": list(plan.class_names),
                "split_names": list(plan.split_names),
                "mask_names": list(table.mask_names),
                "info": {**plan.info, "samples": sample_names, "quant_markers": list(table.quant_markers)},
            }
            writer = DatasetWriter(
                out / plan.name, plan.rows.size, (c, size, size), meta, np.uint16, len(table.mask_names)
            )
            writers[plan.name] = writer
            records[plan.name] = _Records(writer.tmp, plan.rows.size, len(table.quant_markers))
            position[plan.rows, len(writers) - 1] = np.arange(plan.rows.size)
        needed = np.flatnonzero((position >= 0).any(axis=1))
        cells = table.cells
        sl, top, left = (cells[k].to_numpy()[needed] for k in ("sample", "top", "left"))
        ids = cells[CELL_ID].to_numpy()[needed]
        xy = cells[["X_centroid", "Y_centroid"]].to_numpy()[needed]
        tile_h, tile_w = np.array([table.images[i].tile_shape for i in sl]).reshape(-1, 2).T
        visit = np.lexsort((left, top, np.maximum(left, 0) // tile_w, np.maximum(top, 0) // tile_h, sl))
        raw = np.zeros((c, size, size), np.uint16)
        crop = np.zeros((c, size, size), np.uint16)
        label = np.zeros((1, size, size), np.int64)
        focal = np.zeros((len(table.mask_names), size, size), np.uint8)
        checked = {name: np.zeros(len(table.samples), np.int64) for name in table.mask_names}
        absent = {name: np.zeros(len(table.samples), np.int64) for name in table.mask_names}
        meter = Progress(len(needed), f"{out.name}: crops", callback=progress)
        for j in visit:
            i = int(sl[j])
            table.images[i].read(int(top[j]), int(left[j]), size, raw)
            if scale is None:
                crop[:] = raw
            else:
                scale(i, raw, crop)
            for k, name in enumerate(table.mask_names):
                mask = table.masks[i][name]
                mask.read(int(top[j]), int(left[j]), size, label)
                np.equal(label[0], ids[j], out=focal[k].view(bool))
                checked[name][i] += 1
                if not focal[k].any():
                    absent[name][i] += 1
                    n_checked = checked[name][i]
                    if n_checked >= MASK_CHECK_FROM and absent[name][i] > MASK_MISMATCH * n_checked:
                        raise BuildError(
                            mask.path,
                            f"labels do not match the {CELL_ID}s of {table.samples[i].table}: {absent[name][i]} of "
                            f"the first {n_checked} cells have no pixel labelled with their {CELL_ID} in their crop "
                            f"(e.g. {CELL_ID} {int(ids[j])} at X={xy[j][0]:.1f}, Y={xy[j][1]:.1f}; labels there: "
                            f"{np.unique(label[0])[:8].tolist()}): a mask of another sample or segmentation?",
                        )
            for k, plan in enumerate(plans):
                row = int(position[needed[j], k])
                if row < 0:
                    continue
                writers[plan.name].write(
                    row, crop, int(plan.labels[row]), int(plan.split[row]), focal if table.mask_names else None
                )
                rec = records[plan.name]
                rec.ids[row] = ids[j]
                rec.samples[row] = i
                rec.centroids[row] = xy[j]
                rec.means[row] = table.means[needed[j]]
            meter.step()
        for name in table.mask_names:
            for i, s in enumerate(table.samples):
                if checked[name][i] and absent[name][i] > MASK_MISMATCH * checked[name][i]:
                    raise BuildError(
                        table.masks[i][name].path,
                        f"labels do not match the {CELL_ID}s of {s.table}: {absent[name][i]} of {checked[name][i]} "
                        f"cells have no pixel labelled with their {CELL_ID} in their crop",
                    )
        reading = {
            s.name: {"tiles_decoded": table.images[i].tiles_decoded, "tiles_total": table.images[i].tiles_total()}
            for i, s in enumerate(table.samples)
        }
        mask_check = {
            name: {
                s.name: {"checked": int(checked[name][i]), "without_own_pixels": int(absent[name][i])}
                for i, s in enumerate(table.samples)
            }
            for name in table.mask_names
        }
        paths = {}
        for name, writer in writers.items():
            records[name].flush()
            writer.meta["info"]["reading"] = reading
            if mask_check:
                writer.meta["info"]["mask_check"] = mask_check
            paths[name] = writer.close()
        log.info(
            "%s: wrote %s (%d crops read in %.1f s)", out, sorted(paths), len(needed), time.monotonic() - meter.start
        )
        return paths
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


# ------------------------------------------------------------------------------------------------ selection
def check_common(p: Mapping[str, Any], kind: str) -> None:
    """Checks of the params the multiplex builders share (crop, edge, splits, counts, cache)."""
    if isinstance(p["crop_size"], bool) or not isinstance(p["crop_size"], int) or p["crop_size"] < 8:
        raise ValueError(f"{kind}: params.crop_size must be an int >= 8, got {p['crop_size']!r}")
    if p["edge"] not in ("skip", "pad"):
        raise ValueError(f"{kind}: params.edge must be 'skip' or 'pad', got {p['edge']!r}")
    fractions = np.asarray(p["split_fractions"], float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(
            f"{kind}: params.split_fractions must be three non-negative numbers summing to 1, got "
            f"{p['split_fractions']!r}"
        )
    for key in ("n_pretrain", "cache_mb"):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < (1 if key == "cache_mb" else 0):
            raise ValueError(f"{kind}: params.{key} must be an int >= {1 if key == 'cache_mb' else 0}, got {p[key]!r}")


def _check(params: Mapping[str, Any]) -> dict[str, Any]:
    p = check_params(KIND, params, DEFAULTS)
    folder_paths(p["path"])
    check_common(p, KIND)
    if p["split_by"] not in ("auto", "sample", "cell"):
        raise ValueError(f"{KIND}: params.split_by must be 'auto', 'sample' or 'cell', got {p['split_by']!r}")
    if p["normalise"] not in ("percentile", "none"):
        raise ValueError(f"{KIND}: params.normalise must be 'percentile' or 'none', got {p['normalise']!r}")
    pct = p["percentiles"]
    if not (isinstance(pct, list | tuple) and len(pct) == 2 and 0 <= pct[0] < pct[1] <= 100):
        raise ValueError(f"{KIND}: params.percentiles must be [lo, hi] with 0 <= lo < hi <= 100, got {pct!r}")
    if isinstance(p["norm_tiles"], bool) or not isinstance(p["norm_tiles"], int) or p["norm_tiles"] < 1:
        raise ValueError(f"{KIND}: params.norm_tiles must be an int >= 1, got {p['norm_tiles']!r}")
    if p["masks"] is not None and not (isinstance(p["masks"], list) and all(isinstance(m, str) for m in p["masks"])):
        raise ValueError(f"{KIND}: params.masks must be null (auto), [] or a list of mask names, got {p['masks']!r}")
    if p["pretrain_from"] not in ("all", "train"):
        raise ValueError(f"{KIND}: params.pretrain_from must be 'all' or 'train', got {p['pretrain_from']!r}")
    for key in ("keep", "drop", "samples"):
        if not all(isinstance(v, str) and v for v in p[key]):
            raise ValueError(f"{KIND}: params.{key} must be a list of names, got {p[key]!r}")
    if bad := {s: v for s, v in p["sample_splits"].items() if v not in SPLITS}:
        raise ValueError(f"{KIND}: params.sample_splits values must be train, val or test; got {bad}")
    _check_labels(p["labels"])
    return p


def sample_splits(
    names: Sequence[str],
    fractions: np.ndarray,
    seed: int,
    fixed: Mapping[str, str],
    kind: str = KIND,
    unit: str = "sample",
    setting: str = "split_by='sample'",
) -> dict[str, int]:
    """Split code of every sample: ``fixed`` where given (then for all), else shuffled by the seed -- the first
    ``n - n_val - n_test`` train, then ``n_val = max(1, round(f_val n))`` val, the rest test."""
    if fixed:
        if missing := [n for n in names if n not in fixed]:
            raise ValueError(f"{kind}: params.sample_splits must give every sample a split; missing {missing}")
        if unknown := sorted(set(fixed) - set(names)):
            raise ValueError(f"{kind}: params.sample_splits names unknown sample(s) {unknown}; samples: {list(names)}")
        return {n: SPLITS.index(fixed[n]) for n in names}
    n = len(names)
    n_val = 0 if fractions[1] == 0 else max(1, round(fractions[1] * n))
    n_test = 0 if fractions[2] == 0 else max(1, round(fractions[2] * n))
    if n - n_val - n_test < 1:
        raise ValueError(
            f"{kind}: {setting} needs a train {unit} besides {n_val} val and {n_test} test {unit}(s); got {n} "
            f"{unit}(s) -- add {unit}s or use split_by='cell'"
        )
    order = stable_rng(seed, kind, "slides").permutation(n)
    codes = np.repeat(np.arange(3), [n - n_val - n_test, n_val, n_test])
    return {names[i]: int(c) for i, c in zip(order, codes, strict=True)}


def _capped(rows: np.ndarray, codes: np.ndarray, caps: Caps, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    keep = [caps.apply(np.flatnonzero(codes == s), name, split, seed) for s, split in enumerate(SPLITS)]
    kept = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return rows[kept], codes[kept]


def _samples_of(p: Mapping[str, Any]) -> list[Sample]:
    samples = find_mcmicro(p["path"], p["segmentation"], p["samples"])
    if not samples:
        raise BuildError(str(p["path"]), "holds no sample")
    return samples


def build_multiplex(
    out: str | Path,
    files: Mapping[str, Path],
    params: Mapping[str, Any],
    caps: Caps,
    seed: int,
    progress: Callable | None = None,
) -> dict[str, Path]:
    """Build ``cells`` and ``pretrain`` under ``out`` from the MCMICRO folder(s) of ``params.path`` (module
    docstring); ``files`` is unused (nothing is downloaded). ``progress(done, total, cells_per_s)`` is called
    with the log lines."""
    p = _check(params)
    out = Path(out)
    samples = _samples_of(p)
    channels, quant = resolve_channels(samples, p["keep"], p["drop"], p["common_panel"])
    labels_spec = dict(p["labels"])
    extra = [labels_spec["column"]] if _check_labels(labels_spec) == "column" else []
    table = open_cells(
        samples, channels, quant, p["crop_size"], p["cache_mb"] << 20, p["masks"], p["check_channel_names"], extra
    )
    try:
        labels, classes, label_info = cell_labels(table, labels_spec)
        cells = table.cells
        keep = cells["inside"].to_numpy() if p["edge"] == "skip" else np.ones(len(cells), bool)
        rows = np.flatnonzero(keep)
        if rows.size == 0:
            raise BuildError(str(p["path"]), f"no cell's {p['crop_size']} px crop lies inside its image")
        fractions = np.asarray(p["split_fractions"], float)
        names = [s.name for s in samples]
        by_sample = (
            bool(p["sample_splits"]) or p["split_by"] == "sample" or (p["split_by"] == "auto" and len(samples) >= 3)
        )
        if by_sample:
            which = sample_splits(names, fractions, seed, p["sample_splits"])
            codes = np.array([which[names[i]] for i in cells["sample"].to_numpy()[rows]], np.uint8)
        else:
            which = None
            strata = labels[rows] if classes else None
            codes = three_way_split(rows.size, fractions, seed, f"{KIND}/cells", strata)
        cell_rows, cell_codes = _capped(rows, codes, caps, "cells", seed)
        order = np.lexsort((cells[CELL_ID].to_numpy()[cell_rows], cells["sample"].to_numpy()[cell_rows], cell_codes))
        cell_rows, cell_codes = cell_rows[order], cell_codes[order]

        pool = rows if p["pretrain_from"] == "all" else rows[codes == 0]
        n_pre = pool.size if p["n_pretrain"] == 0 else min(p["n_pretrain"], pool.size)
        if n_pre == 0:
            raise BuildError(str(p["path"]), "pretrain: no cell in the train split (params.pretrain_from: train)")
        pre = np.sort(stable_rng(seed, KIND, "pretrain").choice(pool, size=n_pre, replace=False))
        pre = caps.apply(pre, "pretrain", "train", seed)
        pre = pre[stable_rng(seed, KIND, "pretrain", "order").permutation(pre.size)]

        ranges = None
        if p["normalise"] == "percentile":
            ranges = percentile_ranges(table, rows, p["percentiles"], p["norm_tiles"], seed)
        info = {
            "source": "MCMICRO output folder(s), read in place",
            "path": [str(x) for x in folder_paths(p["path"])],
            "seed": int(seed),
            "crop_size": p["crop_size"],
            "edge": p["edge"],
            "keep": list(p["keep"]),
            "drop": list(p["drop"]),
            "split_by": "sample" if by_sample else "cell",
            "sample_splits": None if which is None else {s: SPLITS[c] for s, c in which.items()},
            "split_fractions": fractions.tolist(),
            "normalisation": {
                "method": p["normalise"],
                **(
                    {
                        "percentiles": list(p["percentiles"]),
                        "tiles_per_sample": p["norm_tiles"],
                        "scaled_to": [0, 65535],
                        "per_sample": ranges,
                    }
                    if ranges is not None
                    else {}
                ),
            },
            "labels": {"key": labels_spec.get("key", "cell_type"), **label_info},
            "per_sample": table.info,
        }
        plans = [
            Plan(
                "cells",
                cell_rows,
                labels[cell_rows],
                cell_codes,
                classes,
                list(SPLITS),
                {**info, "dataset": "every kept cell", "class_counts": _counts(labels[cell_rows], cell_codes, classes)},
            ),
            Plan(
                "pretrain",
                pre,
                labels[pre],
                np.zeros(pre.size, np.uint8),
                classes,
                ["train"],
                {**info, "dataset": f"{pre.size} random cells ({p['pretrain_from']})", "n_pool": int(pool.size)},
            ),
        ]
        return write_crops(out, table, plans, ranges, progress)
    finally:
        table.close()


def _counts(labels: np.ndarray, codes: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """Cells per class (and unlabelled) in each split."""
    out = {}
    for s, split in enumerate(SPLITS):
        mine = labels[codes == s]
        out[split] = {c: int(np.sum(mine == i)) for i, c in enumerate(classes)}
        out[split]["unlabelled"] = int(np.sum(mine < 0))
    return out


# ------------------------------------------------------------------------------------------------ layout
def layout(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``multiplex`` entry's build will write, without building: ``{dataset: Layout(channels, masks,
    size)}``. Reads only the small files (markers.csv, folder listings) so a config error is caught before any job;
    channels are None where markers.csv cannot be read yet."""
    from splicer.registry import Layout

    p = _check(spec.get("params", {}))
    if all(path.is_dir() for path in folder_paths(p["path"])):  # errors in the files are config errors: raised
        samples = _samples_of(p)
        channels, _ = resolve_channels(samples, p["keep"], p["drop"], p["common_panel"])
        masks = tuple(_mask_names(samples, p["masks"]))
    else:  # not mounted here (a dry run elsewhere, say): the build checks it
        channels = None
        masks = None if p["masks"] is None else tuple(p["masks"])
    size = (p["crop_size"], p["crop_size"])
    chans = None if channels is None else tuple(channels)
    return {name: Layout(chans, masks, size) for name in ("cells", "pretrain")}
