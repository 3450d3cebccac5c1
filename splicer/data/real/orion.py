"""Orion-CRC (Lin et al. 2023): per-slide 19-channel OME-TIFF + per-cell table -> single-cell crops.

Inputs (archive names of :func:`splicer.data.sources.orion_archives`, one pair per chosen slide folder
``CRCxx``, plus one ``markers.csv``):

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
visited in tile order (slide, tile row, tile column) so neighbouring crops reuse decoded tiles.

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
class. ``per_class`` cells per class in all (each split gets its fraction of it); 0 = as many as the scarcest
(split, class) allows, which is also the fallback (with a warning) when fewer cells than asked exist. Caps are
applied before any pixel is read; a capped balanced split stays balanced.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from splicer.data.format import DatasetWriter
from splicer.data.real.common import SPLITS, BuildError, Caps, check_params, require, split_order, stable_rng
from splicer.data.sources import ORION_SLIDES, _orion_slide_id
from splicer.data.vocab import CELL_TYPES, MULTIPLEX_CHANNELS, T_SUBTYPES

__all__ = ["DECISION_TREE", "DEFAULTS", "FINE_TYPES", "GATE_MARKERS", "build_orion_crc", "gate_cells", "read_markers"]

log = logging.getLogger(__name__)

KIND = "orion_crc"
FINE_TYPES = CELL_TYPES[:5] + T_SUBTYPES
"""Pretrain class names: the five non-T coarse types, then the three T-cell subtypes (as the demo)."""
GATE_MARKERS = ("Pan-CK", "CD45", "CD3e", "CD20", "CD68", "CD163", "CD31", "SMA", "CD4", "CD8a", "FOXP3")
"""Markers the decision tree reads (thresholds are computed for these only)."""
CENTROIDS = ("X_centroid", "Y_centroid")
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
}

_COARSE = {name: i for i, name in enumerate(CELL_TYPES)}
_T = _COARSE["T cell"]


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class _Slide:
    folder: str
    image: Path
    cells: Path


def _slides(files: Mapping[str, Path]) -> list[_Slide]:
    """The slides whose image or cell table was handed to the build (both must be), in release order."""
    found = []
    for folder, (stem, _he) in ORION_SLIDES.items():
        image, cells = f"{stem}-zlib.ome.tiff", f"{_orion_slide_id(folder)}-{folder}.csv"
        if image in files or cells in files:
            found.append(_Slide(folder, require(files, image, KIND), require(files, cells, KIND)))
    if not found:
        raise BuildError(
            f"resources/{KIND}",
            f"no Orion-CRC slide image or cell table among the archives "
            f"{sorted(files)}; expected names like '<image>-zlib.ome.tiff' and 'P37_S29-CRC01.csv'",
        )
    return found


def read_markers(path: Path) -> list[str]:
    """Channel names of ``markers.csv`` in file order (``marker_name`` column, or header-less first column)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "marker_name" not in table.columns:  # legacy: no header, first column = names
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


def _read_cells(path: Path, markers: Sequence[str], width: int, height: int) -> tuple[pd.DataFrame, int]:
    """Centroids and gating-marker intensities of every cell (rows with missing values dropped, counted)."""
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise BuildError(path, f"cannot be read as a per-cell CSV ({err})") from err
    if missing := [c for c in (*markers, *CENTROIDS) if c not in header]:
        raise BuildError(
            path,
            f"per-cell table lacks column(s) {missing} (needs one mean-intensity column per "
            f"marker of markers.csv and {list(CENTROIDS)}); has {header[:30]}",
        )
    cols = [*CENTROIDS, *GATE_MARKERS]
    try:
        table = pd.read_csv(path, usecols=cols)
        table = table.apply(pd.to_numeric, errors="raise")
    except (ValueError, OSError) as err:
        raise BuildError(path, f"non-numeric or unreadable values in columns {cols} ({err})") from err
    complete = table.notna().all(axis=1).to_numpy()
    table = table.loc[complete].reset_index(drop=True)
    x, y = table["X_centroid"].to_numpy(), table["Y_centroid"].to_numpy()
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise BuildError(
            path,
            f"{int(outside.sum())} centroid(s) lie outside the {width}x{height} image (first: "
            f"X={x[i]}, Y={y[i]}): table and image of different slides?",
        )
    return table, int((~complete).sum())


# ------------------------------------------------------------------------------------------------ gating
def _parse_gate(marker: str, spec: Any) -> tuple[str, float]:
    if isinstance(spec, bool):
        raise ValueError(f"gate of {marker!r}: {spec!r} is not a number, 'otsu' or 'quantile:<q>'")
    if isinstance(spec, int | float):
        return "value", float(spec)
    if spec == "otsu":
        return "otsu", math.nan
    match = re.fullmatch(r"quantile:([0-9]*\.?[0-9]+)", str(spec))
    if match and 0.0 < float(match.group(1)) < 1.0:
        return "quantile", float(match.group(1))
    raise ValueError(f"gate of {marker!r} must be a number, 'otsu' or 'quantile:<q>' with 0<q<1, got {spec!r}")


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of log1p(values) (256 bins), returned in intensity units; inf if all values are equal."""
    v = np.log1p(np.clip(np.asarray(values, np.float64), 0.0, None))
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return math.inf
    hist, edges = np.histogram(v, bins=256, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (s0[-1] - s0) / w1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1.0
    return float(np.expm1(edges[int(np.argmax(between)) + 1]))


def _thresholds(table: pd.DataFrame, gates: Mapping[str, Any], default_gate: Any) -> dict[str, float]:
    out = {}
    for marker in GATE_MARKERS:
        how, value = _parse_gate(marker, gates.get(marker, default_gate))
        x = table[marker].to_numpy(np.float64)
        if how == "otsu":
            value = _otsu(x) if x.size else math.inf
        elif how == "quantile":
            value = float(np.quantile(x, value)) if x.size else math.inf
        out[marker] = value
    return out


def gate_cells(table: pd.DataFrame, thresholds: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(coarse, subtype) per cell by the decision tree of the module docstring: coarse an index into
    CELL_TYPES or -1 (unassigned), subtype an index into T_SUBTYPES or -1 (not a T cell / no subtype)."""
    pos = {m: table[m].to_numpy(np.float64) >= thresholds[m] for m in GATE_MARKERS}
    ck, cd45 = pos["Pan-CK"], pos["CD45"]
    t, b, mac = pos["CD3e"], pos["CD20"], pos["CD68"] | pos["CD163"]
    one = (t.astype(int) + b + mac) == 1
    coarse = np.select(
        [ck & cd45, ck, cd45 & one & t, cd45 & one & b, cd45 & one & mac, cd45, pos["CD31"], pos["SMA"]],
        [
            -1,
            _COARSE["tumour"],
            _T,
            _COARSE["B cell"],
            _COARSE["macrophage"],
            -1,
            _COARSE["endothelial"],
            _COARSE["stromal"],
        ],
        default=-1,
    ).astype(np.int64)
    cd4, cd8, foxp3 = pos["CD4"], pos["CD8a"], pos["FOXP3"]
    sub = np.select([cd4 & foxp3 & ~cd8, cd4 & ~foxp3 & ~cd8, cd8 & ~cd4 & ~foxp3], [2, 0, 1], default=-1)
    sub = np.where(coarse == _T, sub, -1).astype(np.int64)
    return coarse, sub


# --------------------------------------------------------------------------------------------- lazy pixels
class _LazyImage:
    """Level-0 channel pages of an OME-TIFF, read tile by tile (never a whole page) through an LRU cache.

    All channel pages must share one tile (or strip) grid, as Orion-CRC's do; a cache entry is one tile
    position decoded for every channel, ``(C, tile_h, tile_w)``, channels in ``order`` (page per output channel).
    """

    def __init__(self, path: Path, n_channels: int, order: Sequence[int], cache_bytes: int) -> None:
        import tifffile

        self.path = path
        try:
            self.tif = tifffile.TiffFile(path)
        except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error, ... on bad files
            raise BuildError(path, f"cannot be read as a TIFF ({type(err).__name__}: {err})") from err
        try:
            self._open(n_channels)
        except BuildError:
            self.tif.close()
            raise
        except Exception as err:
            self.tif.close()
            raise BuildError(path, f"cannot be read as a TIFF: bad structure ({type(err).__name__}: {err})") from err
        self.order = [int(i) for i in order]
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_bytes, self.cached_bytes = int(cache_bytes), 0
        self.tiles_decoded = 0

    def _open(self, n_channels: int) -> None:
        series = self.tif.series[0]
        shape, axes = tuple(series.shape), series.axes
        if len(shape) != 3 or axes[-2:] != "YX" or axes[0] not in "CIQZT":
            raise BuildError(
                self.path,
                f"unsupported layout: first series has shape {shape} axes {axes!r}; expected (channels, Y, X)",
            )
        if shape[0] != n_channels:
            raise BuildError(
                self.path, f"has {shape[0]} channels but markers.csv names {n_channels} (Orion-CRC images have 19)"
            )
        pages = list(series.pages)
        if len(pages) != shape[0] or any(p is None for p in pages):
            raise BuildError(
                self.path,
                f"unsupported layout: {len(pages)} level-0 pages for {shape[0]} channels "
                f"(expected one page per channel)",
            )
        self.height, self.width = int(shape[1]), int(shape[2])
        self.pages = pages
        grids = set()
        for i, page in enumerate(pages):
            key = page.keyframe
            if key.samplesperpixel != 1 or key.imagedepth != 1 or tuple(key.shape[-2:]) != (self.height, self.width):
                raise BuildError(
                    self.path,
                    f"unsupported layout: page {i} has shape {key.shape}, "
                    f"{key.samplesperpixel} samples per pixel, depth {key.imagedepth}",
                )
            if key.dtype is None or key.dtype.kind != "u" or key.dtype.itemsize > 2:
                raise BuildError(self.path, f"page {i} has pixel type {key.dtype}; expected uint8 or uint16")
            tile_h, tile_w = (int(v) for v in key.chunks[-2:])
            ny, nx = -(-self.height // tile_h), -(-self.width // tile_w)
            if len(key.chunks) != 2 or len(page.dataoffsets) != ny * nx:
                raise BuildError(
                    self.path,
                    f"unsupported layout: page {i} has {len(page.dataoffsets)} "
                    f"segments of {key.chunks} for a {self.height}x{self.width} image",
                )
            grids.add((tile_h, tile_w, nx))
        if len(grids) != 1:
            raise BuildError(self.path, f"unsupported layout: channel pages use different tile grids {sorted(grids)}")
        self.tile_h, self.tile_w, self.nx = grids.pop()
        self.tile_shape = (self.tile_h, self.tile_w)

    def close(self) -> None:
        self.tif.close()
        self.cache.clear()

    def tiles_total(self) -> int:
        return sum(len(p.dataoffsets) for p in self.pages)

    def _decode(self, channel: int, index: int) -> np.ndarray:
        page = self.pages[channel]
        frame = page.keyframe
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        try:
            if count == 0:  # sparse file: an absent tile is empty
                return np.zeros(self.tile_shape, frame.dtype)
            fh = self.tif.filehandle
            fh.seek(offset)
            data = fh.read(count)
            if len(data) != count:
                raise OSError(f"file ends inside the tile ({len(data)} of {count} bytes)")
            segment, _, _ = frame.decode(data, index, jpegtables=frame.jpegtables)
            return np.asarray(segment).reshape(segment.shape[-3], segment.shape[-2])
        except Exception as err:
            raise BuildError(
                self.path, f"cannot decode tile {index} of channel page {channel} ({type(err).__name__}: {err})"
            ) from err

    def _stack(self, index: int) -> np.ndarray:
        """Tile ``index`` of every channel, (C, h, w), decoded once while it stays in the cache."""
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        tiles = [self._decode(page, index) for page in self.order]
        h, w = min(t.shape[0] for t in tiles), min(t.shape[1] for t in tiles)
        stack = np.stack([t[:h, :w] for t in tiles])
        self.tiles_decoded += len(tiles)
        self.cache[index] = stack
        self.cached_bytes += stack.nbytes
        while self.cached_bytes > self.cache_bytes and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.cached_bytes -= old.nbytes
        return stack

    def read(self, top: int, left: int, size: int, out: np.ndarray) -> None:
        """Fill ``out`` (C, size, size) with rows top.. and columns left.. of every channel (zero outside)."""
        out[:] = 0
        r0, r1 = max(top, 0), min(top + size, self.height)
        c0, c1 = max(left, 0), min(left + size, self.width)
        if r0 >= r1 or c0 >= c1:
            return
        for ty in range(r0 // self.tile_h, (r1 - 1) // self.tile_h + 1):
            for tx in range(c0 // self.tile_w, (c1 - 1) // self.tile_w + 1):
                stack = self._stack(ty * self.nx + tx)
                y0, x0 = ty * self.tile_h, tx * self.tile_w
                ya, yb = max(r0, y0), min(r1, y0 + stack.shape[1])
                xa, xb = max(c0, x0), min(c1, x0 + stack.shape[2])
                if ya < yb and xa < xb:
                    out[:, ya - top : yb - top, xa - left : xb - left] = stack[:, ya - y0 : yb - y0, xa - x0 : xb - x0]


def _ome_pixel_size(tif: Any) -> float | None:
    match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata or "") if tif.is_ome else None
    return float(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------- selection
def _check(params: Mapping[str, Any]) -> dict[str, Any]:
    p = check_params(KIND, params, DEFAULTS)
    if isinstance(p["crop_size"], bool) or not isinstance(p["crop_size"], int) or p["crop_size"] < 8:
        raise ValueError(f"{KIND}: params.crop_size must be an int >= 8, got {p['crop_size']!r}")
    if p["edge"] not in ("skip", "pad"):
        raise ValueError(f"{KIND}: params.edge must be 'skip' or 'pad', got {p['edge']!r}")
    if p["split_by"] not in ("auto", "slide", "cell"):
        raise ValueError(f"{KIND}: params.split_by must be 'auto', 'slide' or 'cell', got {p['split_by']!r}")
    if unknown := sorted(set(p["gates"]) - set(GATE_MARKERS)):
        raise ValueError(
            f"{KIND}: params.gates names marker(s) {unknown} the gating does not use; gated markers: "
            f"{list(GATE_MARKERS)}"
        )
    for marker, spec in {**p["gates"], "default_gate": p["default_gate"]}.items():
        _parse_gate(marker, spec)
    for key in ("per_class", "n_pretrain", "cache_mb"):
        if not isinstance(p[key], int) or p[key] < (1 if key == "cache_mb" else 0):
            raise ValueError(f"{KIND}: params.{key} must be an int >= {1 if key == 'cache_mb' else 0}, got {p[key]!r}")
    fractions = np.asarray(p["split_fractions"], float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(
            f"{KIND}: params.split_fractions must be three non-negative numbers summing to 1, got "
            f"{p['split_fractions']!r}"
        )
    return p


def _shares(total: int, fractions: np.ndarray) -> np.ndarray:
    """Per-split counts of ``total`` (cumulative rounding, as three_way_split)."""
    bounds = np.round(np.cumsum(fractions)[:2] * total).astype(int)
    return np.diff(np.concatenate([[0], bounds, [total]]))


def _slide_splits(folders: list[str], fractions: np.ndarray, seed: int) -> dict[str, int]:
    n = len(folders)
    n_val = 0 if fractions[1] == 0 else max(1, round(fractions[1] * n))
    n_test = 0 if fractions[2] == 0 else max(1, round(fractions[2] * n))
    if n - n_val - n_test < 1:
        raise ValueError(
            f"{KIND}: split_by='slide' needs a train slide besides {n_val} val and {n_test} test "
            f"slide(s); got {n} slide(s) -- add slides or use split_by='cell'"
        )
    order = stable_rng(seed, KIND, "slides").permutation(n)
    codes = np.repeat(np.arange(3), [n - n_val - n_test, n_val, n_test])
    return {folders[i]: int(c) for i, c in zip(order, codes, strict=True)}


def _balanced(
    labels: np.ndarray,
    pool: np.ndarray,
    k: int,
    group: np.ndarray | None,
    fractions: np.ndarray,
    per_class: int,
    seed: int,
    name: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Balanced (rows, split codes, per-class total): per split, class counts equal.

    ``group`` (split code per cell, by slide) fixes each cell's split; without it cells are split at random
    within each class. ``per_class`` 0 = the largest total the scarcest (split, class) allows.
    """
    rng = stable_rng(seed, KIND, name)
    cands = {c: pool[labels[pool] == c] for c in range(k)}
    if group is None:
        largest = min(len(v) for v in cands.values())
    else:
        largest = min(
            (int(np.sum(group[v] == s) / fractions[s]) for v in cands.values() for s in range(3) if fractions[s] > 0),
            default=0,
        )
        while largest > 0 and any(
            _shares(largest, fractions)[s] > np.sum(group[v] == s) for v in cands.values() for s in range(3)
        ):
            largest -= 1
    total = largest if per_class == 0 else min(per_class, largest)
    if per_class > largest:
        log.warning("%s: only %d cells per class available (asked for %d)", name, largest, per_class)
    shares = _shares(total, fractions)
    rows, codes = [], []
    for c in range(k):
        if group is None:
            chosen = rng.choice(cands[c], size=total, replace=False)
            rows.append(chosen)
            codes.append(np.repeat(np.arange(3), shares))
        else:
            for s in range(3):
                in_split = cands[c][group[cands[c]] == s]
                rows.append(rng.choice(in_split, size=shares[s], replace=False))
                codes.append(np.full(shares[s], s))
    return np.concatenate(rows).astype(np.int64), np.concatenate(codes).astype(np.uint8), total


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


# ------------------------------------------------------------------------------------------------- build
def build_orion_crc(
    out: str | Path, files: Mapping[str, Path], params: Mapping[str, Any], caps: Caps, seed: int
) -> dict[str, Path]:
    """Build ``pretrain``, ``cell_types`` and ``t_cells`` under ``out`` (see the module docstring)."""
    p = _check(params)
    out = Path(out)
    fractions = np.asarray(p["split_fractions"], float)
    size, half = p["crop_size"], p["crop_size"] // 2
    markers_path = require(files, "markers.csv", KIND)
    markers = read_markers(markers_path)
    slides = _slides(files)
    channel_of = [markers.index(name) for name in MULTIPLEX_CHANNELS]  # output channel -> image page

    # ---- per slide: image header (cheap), cell table, gates; nothing is decoded yet
    images: list[_LazyImage] = []
    cells, per_slide = [], {}
    try:
        for i, slide in enumerate(slides):
            image = _LazyImage(slide.image, len(markers), channel_of, p["cache_mb"] << 20)
            images.append(image)
            table, dropped = _read_cells(slide.cells, markers, image.width, image.height)
            thresholds = _thresholds(table, p["gates"], p["default_gate"])
            coarse, sub = gate_cells(table, thresholds)
            x = np.floor(table["X_centroid"].to_numpy()).astype(np.int64) - half
            y = np.floor(table["Y_centroid"].to_numpy()).astype(np.int64) - half
            inside = (x >= 0) & (y >= 0) & (x + size <= image.width) & (y + size <= image.height)
            keep = inside if p["edge"] == "skip" else np.ones_like(inside)
            cells.append(pd.DataFrame({"slide": i, "left": x, "top": y, "coarse": coarse, "sub": sub})[keep])
            per_slide[slide.folder] = {
                "image": slide.image.name,
                "cells": slide.cells.name,
                "size_yx": [image.height, image.width],
                "tile_yx": list(image.tile_shape),
                "pixel_size_um": _ome_pixel_size(image.tif),
                "n_cells": len(table),
                "n_dropped_missing_values": dropped,
                "n_crop_outside_image": int((~inside).sum()),
                "thresholds": {m: v if math.isfinite(v) else "inf" for m, v in thresholds.items()},
                "counts": {
                    **{n: int(np.sum((coarse == c) & keep)) for n, c in _COARSE.items()},
                    "unassigned": int(np.sum((coarse == -1) & keep)),
                    **{n: int(np.sum((sub == s) & keep)) for s, n in enumerate(T_SUBTYPES)},
                    "T cell without subtype": int(np.sum((coarse == _T) & (sub == -1) & keep)),
                },
            }
            log.info(
                "%s: %d cells, thresholds %s, counts %s",
                slide.folder,
                len(table),
                {m: round(v, 2) for m, v in thresholds.items()},
                per_slide[slide.folder]["counts"],
            )
        allc = pd.concat(cells, ignore_index=True)
        coarse, sub = allc["coarse"].to_numpy(), allc["sub"].to_numpy()
        fine = np.where(coarse == _T, np.where(sub >= 0, 5 + sub, -1), coarse)

        # ---- splits and selections (caps applied here, before any pixel is read)
        by_slide = p["split_by"] == "slide" or (p["split_by"] == "auto" and len(slides) >= 3)
        slide_split = _slide_splits([s.folder for s in slides], fractions, seed) if by_slide else None
        group = (
            None
            if slide_split is None
            else np.array([slide_split[slides[i].folder] for i in allc["slide"].to_numpy()], np.int64)
        )
        csvs = ", ".join(str(s.cells) for s in slides)
        chosen: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        totals = {}
        everyone = np.arange(len(allc))
        for name, labels, k in (("cell_types", coarse, len(CELL_TYPES)), ("t_cells", sub, len(T_SUBTYPES))):
            pool = everyone[labels >= 0]
            rows, codes, totals[name] = _balanced(labels, pool, k, group, fractions, p["per_class"], seed, name)
            if totals[name] == 0:
                have = {
                    c: int(np.sum(labels[pool] == i))
                    for i, c in enumerate(CELL_TYPES if name == "cell_types" else T_SUBTYPES)
                }
                raise BuildError(
                    csvs,
                    f"{name}: some class has no usable cell in a split (cells per class: {have}); "
                    f"adjust params.gates or add slides",
                )
            rows, codes = _cap_balanced(rows, codes, labels, k, caps, name, seed)
            chosen[name] = (rows, labels[rows], codes)
        used = np.zeros(len(allc), bool)
        for rows, _, _ in chosen.values():
            used[rows] = True
        pool = everyone[(fine >= 0) & ~used]
        n_pre = pool.size if p["n_pretrain"] == 0 else min(p["n_pretrain"], pool.size)
        if n_pre == 0:
            raise BuildError(csvs, "pretrain: no typed cell left outside the evaluation datasets")
        rows = np.sort(stable_rng(seed, KIND, "pretrain").choice(pool, size=n_pre, replace=False))
        rows = caps.apply(rows, "pretrain", "train", seed)
        chosen["pretrain"] = (rows, fine[rows], np.zeros(rows.size, np.uint8))

        # ---- final row order: split blocks, shuffled within each block
        info = {
            "source": "Orion-CRC (Lin et al. 2023), s3://lin-2023-orion-crc/data",
            "seed": int(seed),
            "slides": [s.folder for s in slides],
            "crop_size": size,
            "edge": p["edge"],
            "split_by": "slide" if by_slide else "cell",
            "slide_splits": (None if slide_split is None else {f: SPLITS[c] for f, c in slide_split.items()}),
            "split_fractions": fractions.tolist(),
            "gating": {
                "decision_tree": DECISION_TREE,
                "gates": dict(p["gates"]),
                "default_gate": p["default_gate"],
                "per_slide": per_slide,
            },
        }
        names = {
            "pretrain": (FINE_TYPES, ["train"]),
            "cell_types": (CELL_TYPES, SPLITS),
            "t_cells": (T_SUBTYPES, SPLITS),
        }
        writers: dict[str, DatasetWriter] = {}
        ordered: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        targets: dict[int, list[tuple[str, int]]] = {}
        try:
            for name in ("pretrain", "cell_types", "t_cells"):
                rows, labels, codes = chosen[name]
                perm = stable_rng(seed, KIND, name, "order").permutation(rows.size)
                order = perm[split_order(codes[perm])]
                classes, split_names = names[name]
                extra = (
                    {"distribution": "natural (gated fine types)", "n_pool": int(pool.size)}
                    if name == "pretrain"
                    else {"per_class": totals[name], "balanced": True}
                )
                meta = {
                    "name": name,
                    "channel_names": list(MULTIPLEX_CHANNELS),
                    "class_names": list(classes),
                    "split_names": list(split_names),
                    "mask_names": [],
                    "info": {**info, **extra},
                }
                writer = DatasetWriter(
                    out / name, rows.size, (len(MULTIPLEX_CHANNELS), size, size), meta, dtype=np.uint16
                )
                writers[name] = writer
                ordered[name] = (labels[order], codes[order])
                for position, r in enumerate(rows[order]):
                    targets.setdefault(int(r), []).append((name, position))

            # ---- one pass over the needed cells, slide by slide in tile order
            needed = np.array(sorted(targets), np.int64)
            sl, top, left = (allc[c].to_numpy()[needed] for c in ("slide", "top", "left"))
            tile_h, tile_w = np.array([images[i].tile_shape for i in sl]).reshape(-1, 2).T
            visit = np.lexsort((left, top, np.maximum(left, 0) // tile_w, np.maximum(top, 0) // tile_h, sl))
            crop = np.zeros((len(MULTIPLEX_CHANNELS), size, size), np.uint16)
            for j in visit:
                images[int(sl[j])].read(int(top[j]), int(left[j]), size, crop)
                for name, position in targets[int(needed[j])]:
                    labels, codes = ordered[name]
                    writers[name].write(position, crop, int(labels[position]), int(codes[position]))
            decoded = {
                slides[i].folder: {"tiles_decoded": im.tiles_decoded, "tiles_total": im.tiles_total()}
                for i, im in enumerate(images)
            }
            paths = {}
            for name, writer in writers.items():
                writer.meta["info"]["reading"] = decoded
                paths[name] = writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
    finally:
        for image in images:
            image.close()
    return paths
