"""Sentinel-2 datasets of the paper: EuroSAT (13 bands and RGB) and MMEarth100k (pretraining patches).

Both builders write the dataset, channel, class and split names of the ``hyperspectral`` demo family
(:func:`splicer.data.demo.make_hyperspectral`), so the experiments ``eurosat``, ``eurosat_rgb`` and ``mmearth`` of
``config/paper.yaml`` run unchanged on real data. Every image is ``uint16`` = reflectance * 65535 in the band order
:data:`~splicer.data.vocab.HYPERSPECTRAL_BANDS` (B01 ... B08, B08A, B09 ... B12), as in the demo.

**EuroSAT** (:func:`build_eurosat`; kind ``eurosat``) -> ``bands13`` (N, 13, 64, 64) and ``rgb`` (N, 3, 64, 64).

* ``EuroSATallBands.zip`` holds one 64x64 13-band uint16 GeoTIFF per image at
  ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<k>.tif`` (torchgeo
  ``torchgeo/datasets/eurosat.py`` ``EuroSAT.base_dir`` and its test-data generator ``tests/data/eurosat/data.py``).
  Members are found by their ``<Class>/<file>.tif`` tail, so another prefix works too; the label is the class
  folder. The ten classes, in torchgeo's (alphabetical folder) order, are :data:`EUROSAT_CLASSES`.
* Band order inside the upstream GeoTIFFs: B01, B02, ..., B12, **B8A last** (phelber/EuroSAT issue #7, adopted by
  torchgeo PR #2480 / issue #2458: ``EuroSAT.all_band_names = (B01 ... B12, B8A)``). The builder moves B8A after
  B08, deciding each file's stored order from what it says: its GeoTIFF band descriptions where present (``B8A``,
  ``B08A`` or ``B8A (865 nm)``-style names; partial or unreadable descriptions are refused), else the archive's identity
  (the checksum-pinned upstream ``EuroSATallBands.zip``, its sha256 recomputed by the build), else
  ``params.stored_band_order``; a file none of these decides (a repackaged zip admitted through
  ``source.checksums``, which may already hold B01..B08, B8A, ..., B12) is refused with a message naming it, so
  B12 never lands in the B8A slot silently. Meta info records ``stored_band_order``, ``band_order_from`` (how
  many files each rule decided) and ``band_order``.
* Read in place (``source: {path: <torchgeo root>}``): torchgeo's extracted
  ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/`` tree is read file by file (no zip); such files carry
  no band descriptions upstream, so ``params.stored_band_order`` must state their order (or keep the zip there).
* ``eurosat-{train,val,test}.txt`` (Neumann et al. 2019, arXiv:1911.06721; 16,200 / 5,400 / 5,400 lines) list one
  file name per line with a ``.jpg`` extension (they were written for the RGB JPEG release; torchgeo matches them
  by ``line.strip().replace('.jpg', '.tif')`` against the GeoTIFF base names). The builder matches by the name
  without extension, so ``.jpg`` and ``.tif`` lines both work. These fixed lists are the train/val/test splits; a
  GeoTIFF on no list is left out (counted in meta info ``unlisted_files``). Rows keep each list's order.
* Pixel values are Sentinel-2 L1C digital numbers, reflectance * 10000. They are stored as
  ``round(clip(DN / dn_scale, 0, 1) * 65535)``: reflectance * 65535 as in the demo, so
  :func:`~splicer.data.format.to_float` gives reflectance in [0, 1] (what the augmentations' clamp and solarize
  assume). Reflectance above 1 (bright cloud, snow; rare) is clipped; meta info ``clipped_fraction`` gives the
  fraction of pixels clipped per band. ``rgb`` is B04, B03, B02 (R, G, B) of exactly the same values.
* Caps: ``bands13`` and ``rgb`` subsets are drawn from one seeded permutation per split, so they are nested (the
  same rows when both caps are equal) and the RGB-vs-13-band comparison is on the same images.

**MMEarth100k** (:func:`build_mmearth`; kind ``mmearth``) -> ``pretrain`` (N, 13, P, P), one split ``train``,
labels -1 (unlabelled).

* ``data_100k_v001.h5``: dataset ``sentinel2`` of shape (tiles, 13, 128, 128) uint16, gzip-chunked one tile per
  chunk, bands **B1, B2, B3, B4, B5, B6, B7, B8A, B8, B9, B10, B11, B12** (B8A *before* B8); ``metadata`` a
  compound array ``(tile_id S100, S2_type S10)`` with ``S2_type`` ``l1c`` or ``l2a`` (vishalned/MMEarth-data
  ``utils/convert_to_h5.py`` ``MODALITIES['sentinel2']`` and ``metadata_dt``; torchgeo ``datasets/mmearth.py``
  ``all_modality_bands['sentinel2']`` and ``tests/data/mmearth/data.py``). The HDF5 is ~48 GB: it is read in
  blocks of ``chunk_rows`` tiles, never whole.
* ``data_100k_v001_splits.json``: ``{"train": [...], "val": [...], "test": [...]}`` row indices into the HDF5
  (MMEarth-data ``utils/splits.py``; torchgeo ``MMEarth._load_indices``). ``pretrain`` pools the lists named by
  ``splits`` (default ``["train"]``, the split torchgeo and MMEarth-train pretrain on), in HDF5 row order.
* ``data_100k_v001_band_stats.json`` (per-modality ``mean``/``std``/``min``/``max`` lists; ``sentinel2_l1c`` and
  ``sentinel2_l2a`` per product) is used only to check that Sentinel-2 has 13 bands; the L1C/L2A means, reordered
  to the output bands, are copied into meta info. ``data_100k_v001_tile_info.json`` (per tile id: ``S2_DATE``,
  ``S2_type``, ``CRS``, ``lat``, ``lon``, ``BANDS``) is read only when ``metadata`` lacks ``S2_type``.
* Values: the tiles come from Earth Engine's ``COPERNICUS/S2_HARMONIZED`` (L1C) and ``COPERNICUS/S2_SR_HARMONIZED``
  (L2A) collections (MMEarth-data ``config/config_data.yaml``), i.e. reflectance * 10000 for both products
  (harmonized: no L2A offset), and are scaled to reflectance * 65535 exactly as EuroSAT.
* **B10 (cirrus) is missing from L2A products.** MMEarth picks L1C or L2A per tile at random (MMEarth-data
  ``ee_utils/ee_data.py``) and stores L2A tiles with B10 = 0, its Sentinel-2 no-data value
  (``convert_to_h5.py`` fills a zero placeholder; MMEarth-train ``MODALITIES.NO_DATA_VAL['sentinel2'] = 0``). The
  builder keeps that 0, so every row has all 13 bands in EuroSAT's order (the experiments pair per band and
  evaluate on EuroSAT's 13 bands): for L2A rows the B10 channel is constant 0 and carries no information, which
  is the truthful encoding of "not measured" (inventing cirrus values would not be). Meta info gives
  ``b10_zero_rows``; ``s2_types: ["l1c"]`` keeps only the L1C tiles (all bands measured, EuroSAT's product level).
* Patch size: EuroSAT patches are 64x64 px at 10 m. Default ``patch_mode: center`` takes the central
  ``patch_size`` (64) px of each 128 px tile: the same 10 m ground sampling and 640 m footprint as EuroSAT, and
  the same center crop MMEarth's own 64 px release (MMEarth64, ``convert_to_h5.py`` ``start = (H - size) // 2``)
  uses. ``grid`` keeps every non-overlapping ``patch_size`` crop (4 per tile at 64 px; rows ordered tile-major),
  ``resize`` block-averages the whole tile down to ``patch_size`` (20 m pixels for 64; needs an integer factor).

Every bad input raises :class:`~splicer.data.real.common.BuildError` naming the file (``<zip>:<member>`` for a
GeoTIFF inside the zip); a failed build leaves no dataset directory behind.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.format import DatasetWriter
from splicer.data.real.common import SPLITS, BuildError, Caps, check_params, require, stable_rng
from splicer.data.vocab import HYPERSPECTRAL_BANDS

__all__ = [
    "EUROSAT_BANDS",
    "EUROSAT_CLASSES",
    "EUROSAT_DEFAULTS",
    "MMEARTH_BANDS",
    "MMEARTH_DEFAULTS",
    "RGB_BANDS",
    "build_eurosat",
    "build_mmearth",
]

EUROSAT_CLASSES = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]
"""EuroSAT's ten land-use classes (class folders of the zip), label = index (torchgeo's order)."""

EUROSAT_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"]
"""Band order inside every EuroSAT MS GeoTIFF (B8A last)."""

MMEARTH_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8A", "B8", "B9", "B10", "B11", "B12"]
"""Band order of MMEarth's ``sentinel2`` HDF5 dataset (B8A before B8)."""

RGB_BANDS = ["B04", "B03", "B02"]
"""Bands of the ``rgb`` dataset: red, green, blue."""

_CHANNEL_GROUPS = {
    "rgb": RGB_BANDS,
    "red_edge_nir": ["B05", "B06", "B07", "B08", "B08A"],
    "swir": ["B11", "B12"],
    "atmosphere": ["B01", "B09", "B10"],
}
_EUROSAT_ZIP = "EuroSATallBands.zip"
_EUROSAT_LISTS = {split: f"eurosat-{split}.txt" for split in SPLITS}
_MMEARTH_H5 = "data_100k_v001.h5"
_MMEARTH_SPLITS = "data_100k_v001_splits.json"
_MMEARTH_STATS = "data_100k_v001_band_stats.json"
_MMEARTH_TILES = "data_100k_v001_tile_info.json"
_S2_TYPES = ("l1c", "l2a")
_PATCH_MODES = ("center", "grid", "resize")
_SCALE = 65535

EUROSAT_DEFAULTS: dict[str, Any] = {
    # Sentinel-2 digital numbers per unit reflectance (the L1C quantification value): pixels are stored as
    # round(clip(DN / dn_scale, 0, 1) * 65535), i.e. reflectance * 65535 like the demo.
    "dn_scale": 10000.0,
    # the order the GeoTIFFs store their 13 bands in, when neither their band descriptions nor the archive's
    # identity (the checksum-pinned upstream zip: B8A last) tells it; null = refuse such files
    "stored_band_order": None,
}
"""Parameters of kind ``eurosat`` (``datasets.<entry>.params``)."""

MMEARTH_DEFAULTS: dict[str, Any] = {
    # side of the output patches in px; 64 = EuroSAT's patch size (10 m pixels, 640 m across)
    "patch_size": 64,
    # how a 128 px tile becomes patches: "center" (central crop, as MMEarth's 64 px release), "grid" (every
    # non-overlapping crop) or "resize" (block-average the whole tile to patch_size; integer factor only)
    "patch_mode": "center",
    # which MMEarth split lists (splits.json keys) are pooled into the one "train" split of `pretrain`
    "splits": ["train"],
    # Sentinel-2 product levels kept: "l1c" (all 13 bands) and/or "l2a" (B10 not measured, stored as 0)
    "s2_types": ["l1c", "l2a"],
    # digital numbers per unit reflectance (harmonized L1C and L2A); stored as round(clip(DN/dn_scale,0,1)*65535)
    "dn_scale": 10000.0,
    # tiles read from the HDF5 per block (memory ~ chunk_rows * 13 * 128 * 128 * 2 bytes, plus float copies)
    "chunk_rows": 64,
}
"""Parameters of kind ``mmearth`` (``datasets.<entry>.params``)."""


# ----------------------------------------------------------------------------------------------------- shared
def _band_name(name: str) -> str:
    """Pipeline spelling of a Sentinel-2 band: ``B1`` -> ``B01``, ``B8A`` -> ``B08A``."""
    match = re.fullmatch(r"B(\d+)(A?)", name)
    if not match:
        raise ValueError(f"not a Sentinel-2 band name: {name!r}")
    return f"B{int(match.group(1)):02d}{match.group(2)}"


def _reorder(stored: list[str]) -> np.ndarray:
    """Indices into ``stored`` bands giving :data:`HYPERSPECTRAL_BANDS` order."""
    names = [_band_name(b) for b in stored]
    return np.array([names.index(b) for b in HYPERSPECTRAL_BANDS])


def _to_u16(dn: np.ndarray, dn_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Digital numbers -> uint16 reflectance * 65535 (clipped to [0, 1]) and the clipped pixel count per band
    (bands on axis -3)."""
    x = np.asarray(dn, np.float64) * (_SCALE / dn_scale)
    axes = tuple(i for i in range(x.ndim) if i != x.ndim - 3)
    clipped = (x > _SCALE).sum(axis=axes)
    return np.rint(np.clip(x, 0, _SCALE)).astype(np.uint16), clipped


def _positive(kind: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"datasets entry of kind {kind!r}: params.{key} must be a positive number, got {value!r}")


def _positive_int(kind: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"datasets entry of kind {kind!r}: params.{key} must be a positive integer, got {value!r}")


def _choices(kind: str, key: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    values = list(value)
    if not values or any(v not in allowed for v in values) or len(set(values)) != len(values):
        raise ValueError(
            f"datasets entry of kind {kind!r}: params.{key} must be a non-empty list of distinct "
            f"values from {list(allowed)}, got {value!r}"
        )
    return values


def _meta(name: str, channels: list[str], split_names: list[str], info: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "channel_names": list(channels),
        "class_names": list(EUROSAT_CLASSES),
        "split_names": list(split_names),
        "mask_names": [],
        "info": info,
    }


# ---------------------------------------------------------------------------------------------------- EuroSAT
class _Tifs:
    """The EuroSAT GeoTIFFs: members of ``EuroSATallBands.zip`` (never extracted), or the files of torchgeo's
    extracted ``tif/<Class>/`` tree read in place (``source.path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            names = [str(f.relative_to(path)) for f in sorted(path.rglob("*")) if f.is_file()]
        else:
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise BuildError(path, f"is not a readable zip archive: {err}") from err
            names = [i.filename for i in self.zip.infolist() if not i.is_dir()]
        self.members = self._index(names)

    def _index(self, names: list[str]) -> dict[str, str]:
        """Lower-cased file stem (``annualcrop_1``) -> member name, for every ``<Class>/<file>.tif``."""
        members: dict[str, str] = {}
        for name in names:
            if not name.lower().endswith((".tif", ".tiff")):
                continue
            stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()
            if stem in members:
                raise BuildError(self.path, f"two GeoTIFFs share the name {stem!r}: {members[stem]!r} and {name!r}")
            members[stem] = name
        if not members:
            raise BuildError(
                self.path,
                "holds no .tif files (expected "
                "ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<k>.tif)",
            )
        return members

    def where(self, member: str) -> str:
        return f"{self.path}:{member}" if self.zip is not None else str(self.path / member)

    def read(self, member: str) -> bytes:
        try:
            return self.zip.read(member) if self.zip is not None else (self.path / member).read_bytes()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
            raise BuildError(self.where(member), f"cannot be read (corrupt member or file): {err}") from err

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _read_split_list(path: Path) -> list[str]:
    """Lower-cased file stems listed in one ``eurosat-<split>.txt`` (``.jpg``/``.tif`` lines alike)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise BuildError(path, f"cannot be read as a text file: {err}") from err
    stems, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        name = entry.replace("\\", "/").rsplit("/", 1)[-1]
        stem = name.rsplit(".", 1)[0] if "." in name else name
        stem = stem.lower()
        if stem in seen:
            raise BuildError(path, f"line {number} lists {entry!r} a second time")
        seen.add(stem)
        stems.append(stem)
    if not stems:
        raise BuildError(path, "lists no files")
    return stems


def _member_class(member: str, where: str) -> int:
    parts = member.split("/")
    folder = parts[-2] if len(parts) > 1 else ""
    if folder not in EUROSAT_CLASSES:
        raise BuildError(where, f"is not inside a class folder (got folder {folder!r}; classes {EUROSAT_CLASSES})")
    return EUROSAT_CLASSES.index(folder)


def _read_tif(tifs: _Tifs, member: str) -> tuple[np.ndarray, tuple[str | None, ...]]:
    """(13, H, W) array of one GeoTIFF, decoded in memory, and its band descriptions (None where absent)."""
    import rasterio
    from rasterio.io import MemoryFile

    where = tifs.where(member)
    data = tifs.read(member)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with MemoryFile(data) as mem, mem.open() as src:
                count = src.count
                if count != len(EUROSAT_BANDS):
                    raise BuildError(
                        where, f"has {count} bands, expected {len(EUROSAT_BANDS)} ({', '.join(EUROSAT_BANDS)})"
                    )
                image = src.read()
                descriptions = tuple(src.descriptions)
    except BuildError:
        raise
    except (rasterio.errors.RasterioError, OSError, ValueError) as err:
        raise BuildError(where, f"is not a readable GeoTIFF: {err}") from err
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise BuildError(where, f"has unsupported pixel type {image.dtype}")
    return image, descriptions


_BAND_IN_TEXT = re.compile(r"(?<![A-Za-z0-9])B0?(\d{1,2})(A?)(?![A-Za-z0-9])", re.IGNORECASE)


def _described_bands(descriptions: tuple[str | None, ...], where: str) -> list[str] | None:
    """The stored band order a GeoTIFF's band descriptions give (``B8A`` / ``B08A`` / ``Band B8A (865 nm)``);
    None when it has none; a BuildError when they are partial, unreadable or not the 13 Sentinel-2 bands."""
    present = [d for d in descriptions if d and d.strip()]
    if not present:
        return None
    names = []
    for d in descriptions:
        found = _BAND_IN_TEXT.findall(d or "")
        names.append(f"B{int(found[0][0]):02d}{found[0][1].upper()}" if len(found) == 1 else None)
    if None in names or sorted(names) != sorted(HYPERSPECTRAL_BANDS):
        raise BuildError(
            where,
            f"has band descriptions {list(descriptions)} that do not name the 13 Sentinel-2 bands once each, so "
            "its band order is ambiguous; fix the descriptions or state the order with params.stored_band_order",
        )
    return [str(n) for n in names]


class _BandOrder:
    """Decides each GeoTIFF's stored band order from what the file says: its band descriptions where present, else
    the archive's identity -- the checksum-pinned upstream ``EuroSATallBands.zip`` is known to store B8A last
    (:data:`EUROSAT_BANDS`) -- else ``params.stored_band_order``; anything else is refused, naming the file."""

    def __init__(self, tifs: _Tifs, stated: list[str] | None) -> None:
        self.tifs, self.stated = tifs, stated
        self._pinned: bool | None = None
        self.sources: dict[str, int] = {}
        self.orders: list[list[str]] = []

    def pinned(self) -> bool:
        """Whether the zip is the upstream archive pinned in :mod:`splicer.data.sources` (its sha256)."""
        if self._pinned is None:
            from splicer.data.download import file_digest
            from splicer.data.sources import EUROSAT

            upstream = next(a for a in EUROSAT if a.name == _EUROSAT_ZIP)
            self._pinned = self.tifs.zip is not None and file_digest(self.tifs.path) == upstream.sha256
        return self._pinned

    def __call__(self, descriptions: tuple[str | None, ...], where: str) -> list[str]:
        described = _described_bands(descriptions, where)
        if described is not None and self.stated is not None and described != self.stated:
            raise BuildError(where, f"says its bands are {described}, but params.stored_band_order says {self.stated}")
        if described is not None:
            order, source = described, "GeoTIFF band descriptions"
        elif self.stated is not None:
            order, source = self.stated, "params.stored_band_order"
        elif self.pinned():
            order, source = (
                [_band_name(b) for b in EUROSAT_BANDS],
                f"checksum-pinned upstream {_EUROSAT_ZIP} (B8A last)",
            )
        else:
            what = (
                f"{self.tifs.path.name} is not the checksum-pinned upstream archive"
                if self.tifs.zip is not None
                else f"{self.tifs.path} is an extracted folder, not the checksum-pinned upstream archive"
            )
            raise BuildError(
                where,
                f"has no band descriptions and {what}, so its band order (upstream: B8A last; a repackaged file "
                "may hold B01..B08, B8A, ..., B12) is ambiguous. State it with params.stored_band_order (e.g. "
                f"{EUROSAT_BANDS} for files extracted from the upstream zip) or use the upstream archive",
            )
        self.sources[source] = self.sources.get(source, 0) + 1
        if order not in self.orders:
            self.orders.append(list(order))
        return list(order)


def _nested_caps(caps: Caps, datasets: list[str], rows: np.ndarray, split: str, seed: int) -> dict[str, np.ndarray]:
    """Per dataset, the rows kept under its cap: prefixes of one seeded permutation (so the subsets are nested),
    each in the original order."""
    order = stable_rng(seed, "caps", "eurosat", split).permutation(rows.size)
    out = {}
    for name in datasets:
        cap = caps.limit(name, split)
        out[name] = rows if cap is None or cap >= rows.size else rows[np.sort(order[:cap])]
    return out


def _pixel_info(dn_scale: float) -> dict:
    """Meta info shared by every Sentinel-2 dataset: output band order and how pixel values were converted."""
    return {
        "band_order": HYPERSPECTRAL_BANDS,
        "scale": _SCALE,
        "units": "reflectance * 65535",
        "dn_scale": dn_scale,
        "conversion": "round(clip(DN / dn_scale, 0, 1) * 65535)",
        "channel_groups": _CHANNEL_GROUPS,
    }


def build_eurosat(out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int) -> dict[str, Path]:
    """EuroSAT MS -> ``bands13`` (N, 13, 64, 64) and ``rgb`` (N, 3, 64, 64) uint16, fixed train/val/test lists.

    See the module docstring for the archive layout, band order, scaling and caps.
    """
    p = check_params("eurosat", params, EUROSAT_DEFAULTS)
    _positive("eurosat", "dn_scale", p["dn_scale"])
    dn_scale = float(p["dn_scale"])
    out = Path(out)
    zip_path = require(files, _EUROSAT_ZIP, "eurosat", folder_ok=True)  # or torchgeo's tif/ tree, in place
    stated = _stated_order(p["stored_band_order"])
    list_paths = {split: require(files, name, "eurosat") for split, name in _EUROSAT_LISTS.items()}
    lists = {split: _read_split_list(path) for split, path in list_paths.items()}
    owner: dict[str, str] = {}
    for split in SPLITS:
        for stem in lists[split]:
            if stem in owner:
                raise BuildError(list_paths[split], f"lists {stem!r}, which {list_paths[owner[stem]].name} lists too")
            owner[stem] = split

    tifs = _Tifs(zip_path)
    with contextlib.closing(tifs):
        members = tifs.members
        band_order = _BandOrder(tifs, stated)
        entries: list[tuple[str, int, int]] = []  # (member, label, split code) in split-list order
        for code, split in enumerate(SPLITS):
            for stem in lists[split]:
                if stem not in members:
                    raise BuildError(
                        list_paths[split], f"lists {stem!r}, which is not in {zip_path.name} ({len(members)} GeoTIFFs)"
                    )
                member = members[stem]
                entries.append((member, _member_class(member, tifs.where(member)), code))
        split_codes = np.array([e[2] for e in entries], np.uint8)

        names = ["bands13", "rgb"]
        kept = {name: [] for name in names}
        for code, split in enumerate(SPLITS):
            rows = np.flatnonzero(split_codes == code)
            for name, rows_kept in _nested_caps(caps, names, rows, split, seed).items():
                kept[name].append(rows_kept)
        kept_rows = {name: np.concatenate(parts) for name, parts in kept.items()}
        position = {name: {int(r): i for i, r in enumerate(rows)} for name, rows in kept_rows.items()}
        needed = np.union1d(kept_rows["bands13"], kept_rows["rgb"])
        if needed.size == 0:
            raise BuildError(zip_path, "no image left to build (empty split lists)")

        rgb_idx = [HYPERSPECTRAL_BANDS.index(b) for b in RGB_BANDS]
        first = entries[int(needed[0])][0]
        shape = _read_tif(tifs, first)[0].shape
        counts = {
            name: {split: int((split_codes[rows] == c).sum()) for c, split in enumerate(SPLITS)}
            for name, rows in kept_rows.items()
        }
        info = {
            "source": "EuroSAT MS (Helber et al. 2019), EuroSATallBands.zip",
            "split_lists": "eurosat-{train,val,test}.txt (Neumann et al. 2019, arXiv:1911.06721)",
            "product": "Sentinel-2 L1C (top-of-atmosphere reflectance * 10000), all bands resampled to 10 m",
            **_pixel_info(dn_scale),
            "listed_files": len(entries),
            "unlisted_files": len(members) - len(entries),
            "caps": caps.limits,
            "seed": int(seed),
        }
        clipped = np.zeros(len(HYPERSPECTRAL_BANDS), np.int64)
        with contextlib.ExitStack() as stack:
            writers = {
                "bands13": stack.enter_context(
                    DatasetWriter(
                        out / "bands13",
                        int(kept_rows["bands13"].size),
                        (len(HYPERSPECTRAL_BANDS), *shape[1:]),
                        _meta("bands13", HYPERSPECTRAL_BANDS, SPLITS, {**info, "counts": counts["bands13"]}),
                        dtype=np.uint16,
                    )
                ),
                "rgb": stack.enter_context(
                    DatasetWriter(
                        out / "rgb",
                        int(kept_rows["rgb"].size),
                        (len(RGB_BANDS), *shape[1:]),
                        _meta("rgb", RGB_BANDS, SPLITS, {**info, "counts": counts["rgb"], "channel_order": "R,G,B"}),
                        dtype=np.uint16,
                    )
                ),
            }
            for row in needed.tolist():
                member, label, code = entries[row]
                where = tifs.where(member)
                image, descriptions = _read_tif(tifs, member)
                if image.shape != shape:
                    raise BuildError(where, f"has shape {image.shape}, but {first} has {shape}")
                u16, n_clipped = _to_u16(image[_reorder(band_order(descriptions, where))], dn_scale)
                clipped += n_clipped
                if row in position["bands13"]:
                    writers["bands13"].write(position["bands13"][row], u16, label, code)
                if row in position["rgb"]:
                    writers["rgb"].write(position["rgb"][row], u16[rgb_idx], label, code)
            fraction = clipped / float(needed.size * shape[1] * shape[2])
            fractions = {b: float(f) for b, f in zip(HYPERSPECTRAL_BANDS, fraction, strict=True)}
            for name, writer in writers.items():
                keep = HYPERSPECTRAL_BANDS if name == "bands13" else RGB_BANDS
                writer.meta["info"]["clipped_fraction"] = {b: fractions[b] for b in keep}
                orders = band_order.orders
                writer.meta["info"]["stored_band_order"] = orders[0] if len(orders) == 1 else orders
                writer.meta["info"]["band_order_from"] = band_order.sources
    return {name: out / name for name in names}


def _stated_order(value: Any) -> list[str] | None:
    """``params.stored_band_order`` (the 13 band names in the order the GeoTIFFs store them), checked."""
    if value is None:
        return None
    try:
        names = [_band_name(str(b)) for b in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"datasets entry of kind 'eurosat': params.stored_band_order: {err}") from None
    if sorted(names) != sorted(HYPERSPECTRAL_BANDS):
        raise ValueError(
            "datasets entry of kind 'eurosat': params.stored_band_order must name the 13 Sentinel-2 bands once each "
            f"(e.g. {EUROSAT_BANDS}), got {list(value)}"
        )
    return names


# ---------------------------------------------------------------------------------------------------- MMEarth
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BuildError(path, f"is not a readable JSON file: {err}") from err


def _mmearth_indices(path: Path, splits: list[str], n_tiles: int) -> np.ndarray:
    """Sorted unique HDF5 rows listed under ``splits`` in splits.json."""
    table = _load_json(path)
    if not isinstance(table, dict):
        raise BuildError(path, f"must be a JSON object of split name -> row indices, got {type(table).__name__}")
    parts = []
    for split in splits:
        if split not in table:
            raise BuildError(path, f"has no split {split!r} (has {sorted(table)})")
        rows = table[split]
        if not isinstance(rows, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in rows):
            raise BuildError(path, f"split {split!r} must be a list of integer row indices")
        arr = np.asarray(rows, np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= n_tiles):
            raise BuildError(
                path,
                f"split {split!r} has row indices outside [0, {n_tiles}) (range {int(arr.min())}..{int(arr.max())})",
            )
        parts.append(arr)
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _band_stat_means(path: Path) -> dict[str, list[float]]:
    """Check every Sentinel-2 reflectance entry of band_stats.json has 13 bands; its means in output order."""
    stats = _load_json(path)
    if not isinstance(stats, dict):
        raise BuildError(path, f"must be a JSON object, got {type(stats).__name__}")
    reorder = _reorder(MMEARTH_BANDS)
    means = {}
    for key in ("sentinel2", "sentinel2_l1c", "sentinel2_l2a"):
        entry = stats.get(key)
        if entry is None:
            continue
        mean = entry.get("mean") if isinstance(entry, dict) else None
        if not isinstance(mean, list) or len(mean) != len(MMEARTH_BANDS):
            n = len(mean) if isinstance(mean, list) else "no"
            raise BuildError(
                path, f"{key}.mean has {n} values, expected {len(MMEARTH_BANDS)} ({', '.join(MMEARTH_BANDS)})"
            )
        means[key] = [float(mean[i]) for i in reorder]
    return means


def _decode(value: Any) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip("\x00 ").lower()


def _s2_types(f: Any, h5_path: Path, n_tiles: int, tiles_path: Path | None) -> np.ndarray | None:
    """Product level (``l1c``/``l2a``) of every HDF5 row, from ``metadata`` or else tile_info.json; None if
    neither tells."""
    meta = f.get("metadata")
    if meta is None:
        return None
    if meta.shape[:1] != (n_tiles,):
        raise BuildError(
            h5_path, f"'metadata' has {meta.shape[0] if meta.shape else 0} rows but 'sentinel2' has {n_tiles}"
        )
    table = meta[()]
    fields = table.dtype.names
    if fields and "S2_type" in fields:
        return np.array([_decode(v) for v in table["S2_type"]])
    if fields and len(fields) >= 2:
        return np.array([_decode(v) for v in table[fields[1]]])
    if tiles_path is None:
        return None
    ids = table[fields[0]] if fields else table.reshape(n_tiles, -1)[:, 0]
    tile_info = _load_json(tiles_path)
    if not isinstance(tile_info, dict):
        raise BuildError(tiles_path, f"must be a JSON object of tile id -> info, got {type(tile_info).__name__}")
    types = []
    for raw in ids:
        tile = raw.decode("utf-8", "replace").strip("\x00 ") if isinstance(raw, bytes) else str(raw)
        entry = tile_info.get(tile)
        if not isinstance(entry, dict) or "S2_type" not in entry:
            raise BuildError(tiles_path, f"has no S2_type for tile {tile!r}")
        types.append(_decode(entry["S2_type"]))
    return np.array(types)


def _patch_grid(h: int, w: int, size: int, mode: str, where: Path) -> list[tuple[int, int]]:
    """Top-left corners of the patches of one tile (``resize``: the whole tile, one entry)."""
    if mode == "resize":
        if h % size or w % size:
            raise BuildError(
                where, f"tiles are {h}x{w} px: patch_mode 'resize' needs patch_size to divide them, got {size}"
            )
        return [(0, 0)]
    if size > h or size > w:
        raise BuildError(where, f"tiles are {h}x{w} px, smaller than patch_size {size}")
    if mode == "center":
        return [((h - size) // 2, (w - size) // 2)]
    return [(y, x) for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]


def build_mmearth(out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int) -> dict[str, Path]:
    """MMEarth100k Sentinel-2 -> ``pretrain`` (N, 13, P, P) uint16 in EuroSAT's band order, streamed from the HDF5.

    See the module docstring for the file layout, band handling (B8A, B10), patches and scaling.
    """
    import h5py

    kind = "mmearth"
    p = check_params(kind, params, MMEARTH_DEFAULTS)
    size, mode = p["patch_size"], p["patch_mode"]
    _positive_int(kind, "patch_size", size)
    if mode not in _PATCH_MODES:
        raise ValueError(
            f"datasets entry of kind {kind!r}: params.patch_mode must be one of {list(_PATCH_MODES)}, got {mode!r}"
        )
    splits = _choices(kind, "splits", p["splits"], tuple(SPLITS))
    s2_types = _choices(kind, "s2_types", p["s2_types"], _S2_TYPES)
    _positive(kind, "dn_scale", p["dn_scale"])
    chunk = p["chunk_rows"]
    _positive_int(kind, "chunk_rows", chunk)
    dn_scale = float(p["dn_scale"])
    out = Path(out)
    h5_path = require(files, _MMEARTH_H5, kind)
    splits_path = require(files, _MMEARTH_SPLITS, kind)
    stats_path = Path(files[_MMEARTH_STATS]) if _MMEARTH_STATS in files else None
    tiles_path = Path(files[_MMEARTH_TILES]) if _MMEARTH_TILES in files else None
    means = _band_stat_means(stats_path) if stats_path is not None and stats_path.is_file() else {}

    try:
        f = h5py.File(h5_path, "r")
    except OSError as err:
        raise BuildError(h5_path, f"is not a readable HDF5 file: {err}") from err
    with f:
        ds = f.get("sentinel2")
        if not isinstance(ds, h5py.Dataset):
            raise BuildError(h5_path, f"has no 'sentinel2' dataset (keys: {sorted(f.keys())})")
        if ds.ndim != 4 or ds.shape[1] != len(MMEARTH_BANDS):
            raise BuildError(
                h5_path,
                f"'sentinel2' must be (tiles, {len(MMEARTH_BANDS)} bands, H, W) with bands "
                f"{', '.join(MMEARTH_BANDS)}; got shape {ds.shape}",
            )
        if not (np.issubdtype(ds.dtype, np.integer) or np.issubdtype(ds.dtype, np.floating)):
            raise BuildError(h5_path, f"'sentinel2' has unsupported type {ds.dtype}")
        n_tiles, _, h, w = ds.shape
        corners = _patch_grid(h, w, size, mode, h5_path)
        tiles = _mmearth_indices(splits_path, splits, n_tiles)
        types = _s2_types(f, h5_path, n_tiles, tiles_path if tiles_path is not None and tiles_path.is_file() else None)
        if types is not None:
            if unknown := sorted(set(types[tiles].tolist()) - set(_S2_TYPES)):
                raise BuildError(h5_path, f"'metadata' has unknown S2_type value(s) {unknown}")
            tiles = tiles[np.isin(types[tiles], s2_types)]
        elif set(s2_types) != set(_S2_TYPES):
            raise BuildError(
                h5_path,
                "cannot tell L1C from L2A tiles ('metadata' has no S2_type and no "
                f"{_MMEARTH_TILES} was given), so params.s2_types cannot be applied",
            )

        # rows = (tile, patch) pairs, tile-major; caps pick rows before any pixel is read
        k = len(corners)
        row_tile = np.repeat(tiles, k)
        row_patch = np.tile(np.arange(k), tiles.size)
        keep = caps.apply(np.arange(row_tile.size), "pretrain", "train", seed)
        row_tile, row_patch = row_tile[keep], row_patch[keep]
        if row_tile.size == 0:
            raise BuildError(splits_path, f"no tile left to build (splits {splits}, s2_types {s2_types})")

        reorder = _reorder(MMEARTH_BANDS)
        kept_types = types[row_tile] if types is not None else None
        info = {
            "source": "MMEarth100k (Nedungadi et al. 2024), data_100k_v001.h5 'sentinel2'",
            "product": "Sentinel-2 L1C and/or L2A (Earth Engine HARMONIZED collections), reflectance * 10000",
            "stored_band_order": [_band_name(b) for b in MMEARTH_BANDS],
            **_pixel_info(dn_scale),
            "tile_size": [int(h), int(w)],
            "patch_size": size,
            "patch_mode": mode,
            "patches_per_tile": k,
            "mmearth_splits": splits,
            "s2_types": s2_types,
            "tiles": int(np.unique(row_tile).size),
            "rows_per_s2_type": (
                {t: int((kept_types == t).sum()) for t in _S2_TYPES} if kept_types is not None else "unknown"
            ),
            "b10_zero_rows": int((kept_types == "l2a").sum()) if kept_types is not None else "unknown",
            "b10_note": "L2A products have no B10 (cirrus); MMEarth stores it as 0 (its no-data value), kept as 0",
            "band_stat_means": means,
            "row_order": "HDF5 tile order (tile-major, patches row-major, for patch_mode 'grid')",
            "caps": caps.limits,
            "seed": int(seed),
        }
        meta = _meta("pretrain", HYPERSPECTRAL_BANDS, ["train"], info)
        clipped = np.zeros(len(HYPERSPECTRAL_BANDS), np.int64)
        unique_tiles = np.unique(row_tile)
        with DatasetWriter(
            out / "pretrain", int(row_tile.size), (len(HYPERSPECTRAL_BANDS), size, size), meta, dtype=np.uint16
        ) as writer:
            row, pixels = 0, 0
            y0, x0 = corners[0]
            for start in range(0, unique_tiles.size, chunk):
                block = unique_tiles[start : start + chunk]
                lo, hi = int(block[0]), int(block[-1]) + 1
                rows_sel = slice(lo, hi) if hi - lo == block.size else block.tolist()
                try:  # center: read only the central window (a hyperslab), else whole tiles
                    data = ds[rows_sel, :, y0 : y0 + size, x0 : x0 + size] if mode == "center" else ds[rows_sel]
                except (OSError, ValueError) as err:
                    raise BuildError(h5_path, f"'sentinel2' rows {lo}..{hi - 1} cannot be read: {err}") from err
                data = np.asarray(data)[:, reorder]
                if mode == "resize":
                    f_y, f_x = h // size, w // size
                    data = data.reshape(data.shape[0], data.shape[1], size, f_y, size, f_x).astype(np.float64)
                    data = data.mean(axis=(3, 5))
                u16, n_clipped = _to_u16(data, dn_scale)
                clipped += n_clipped
                pixels += data.shape[0] * data.shape[2] * data.shape[3]
                slot = {int(t): i for i, t in enumerate(block)}
                while row < row_tile.size and int(row_tile[row]) in slot:
                    y, x = corners[int(row_patch[row])] if mode == "grid" else (0, 0)
                    writer.write(row, u16[slot[int(row_tile[row])], :, y : y + size, x : x + size], -1, 0)
                    row += 1
            writer.meta["info"]["clipped_fraction"] = {
                b: float(c) / max(pixels, 1) for b, c in zip(HYPERSPECTRAL_BANDS, clipped, strict=True)
            }
    return {"pretrain": out / "pretrain"}
