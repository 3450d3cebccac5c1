"""ChestMNIST and PneumoniaMNIST (MedMNIST v2, Yang et al. 2023) from their upstream ``.npz`` files.

Each ``<flag>[_<size>].npz`` holds ``{train,val,test}_images`` (N, S, S) uint8 greyscale and
``{train,val,test}_labels`` (N, L) integers. The arrays are read member by member from the zip with
:mod:`numpy.lib.format` (never unpickled), image rows streamed in chunks so that only the rows kept by the caps
are held in memory (a 224 px ChestMNIST is ~5.6 GB of pixels). Label names, task and counts come from the
installed ``medmnist`` package's ``INFO`` (loaded by :func:`splicer.data.sources.medmnist_info`).

Datasets (names, channels, classes and splits as the demo family of :func:`splicer.data.demo.make_xray`; images
(1, S, S) uint8, channel ``"X-ray"``, no masks -- lung masks are added by the segment stage):

* ``chestmnist`` -> ``pretrain``: the ChestMNIST images of the upstream splits in ``params.splits`` (default the
  official train split), pooled into one split ``"train"`` (upstream train rows first, then val, then test, each
  in upstream order). ChestMNIST is multi-label (14 findings); the label kept is its ``pneumonia`` finding
  (1 = present, 0 = absent -- other findings may be present), class names ``["normal", "pneumonia"]`` as the
  demo's pretraining set and the PneumoniaMNIST task. Self-supervised pretraining does not use it.
* ``pneumoniamnist`` -> ``pneumonia``: binary normal / pneumonia, train/val/test = the npz's own splits (upstream
  order within each split).

Caps: ``pretrain`` / ``pneumonia`` per split, applied before any pixel is read.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.format import DatasetWriter
from splicer.data.real.common import SPLITS, BuildError, Caps, check_params, require
from splicer.data.sources import medmnist_info, medmnist_sizes

__all__ = [
    "CHESTMNIST_DEFAULTS",
    "DEFAULTS",
    "PNEUMONIAMNIST_DEFAULTS",
    "XRAY_CLASSES",
    "build_chestmnist",
    "build_pneumoniamnist",
    "read_npz_array",
]

CHESTMNIST_DEFAULTS: dict[str, Any] = {
    # image side 28, 64, 128 or 224; None = the size of the one chestmnist[_<size>].npz provided (the datasets
    # entry's source.size picks which file is downloaded); when set, it must match the file's images
    "size": None,
    # upstream ChestMNIST splits pooled into the single-split pretraining set (the paper does not say; the
    # official train split keeps val/test unseen, as MedMNIST's own protocol does)
    "splits": ["train"],
}
PNEUMONIAMNIST_DEFAULTS: dict[str, Any] = {
    # image side 28, 64, 128 or 224; None = the size of the one pneumoniamnist[_<size>].npz provided
    "size": None,
}
DEFAULTS = {"chestmnist": CHESTMNIST_DEFAULTS, "pneumoniamnist": PNEUMONIAMNIST_DEFAULTS}

XRAY_CLASSES = ["normal", "pneumonia"]
"""Class names of both x-ray datasets (as the demo's ``xray`` family and PneumoniaMNIST's INFO labels)."""

CHANNELS = ["X-ray"]
DATASET = {"chestmnist": "pretrain", "pneumoniamnist": "pneumonia"}
_CHUNK_BYTES = 64 << 20  # image rows read per chunk while streaming a member


# -------------------------------------------------------------------------------------------------------- npz
class _Npz:
    """Arrays of one ``.npz`` read straight from its zip members (no pickles, images streamed by rows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise BuildError(path, f"not a readable .npz (zip) file ({type(err).__name__}: {err})") from err
        self.keys = sorted(n[:-4] for n in self.zip.namelist() if n.endswith(".npy"))

    def __enter__(self) -> _Npz:
        return self

    def __exit__(self, *_: Any) -> None:
        self.zip.close()

    def where(self, key: str) -> str:
        return f"{self.path}:{key}.npy"

    def _open(self, key: str):
        if key not in self.keys:
            raise BuildError(self.where(key), f"array {key!r} missing from the .npz (it has {self.keys})")
        return self.zip.open(f"{key}.npy")

    @staticmethod
    def _header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(fh)
        raise ValueError(f"unsupported .npy format version {version}")

    def header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        """(shape, fortran_order, dtype) of array ``key``."""
        try:
            with self._open(key) as fh:
                return self._header(fh)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
            if isinstance(err, BuildError):
                raise
            raise BuildError(self.where(key), f"not a readable .npy array ({type(err).__name__}: {err})") from err

    def read(self, key: str) -> np.ndarray:
        """The whole array ``key`` (for the small label arrays)."""
        try:
            with self._open(key) as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
            if isinstance(err, BuildError):
                raise
            raise BuildError(self.where(key), f"not a readable .npy array ({type(err).__name__}: {err})") from err

    def rows(self, key: str, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Stream the rows ``rows`` (ascending indices along axis 0) of array ``key`` in chunks:
        yields ``(position in rows of the block's first row, block)``."""
        rows = np.asarray(rows, np.int64)
        if rows.size == 0:
            return
        try:
            with self._open(key) as fh:
                shape, fortran, dtype = self._header(fh)
                if fortran or dtype.hasobject:  # cannot stream rows: read whole (never happens for MedMNIST)
                    fh.close()
                    yield 0, self.read(key)[rows]
                    return
                row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
                per = max(1, _CHUNK_BYTES // max(row_bytes, 1))
                done, last = 0, int(rows[-1])
                for start in range(0, last + 1, per):
                    stop = min(start + per, last + 1)
                    raw = fh.read((stop - start) * row_bytes)
                    if len(raw) != (stop - start) * row_bytes:
                        raise BuildError(self.where(key), f"truncated: rows {start}-{stop - 1} of {shape[0]} cut off")
                    block = np.frombuffer(raw, dtype).reshape(stop - start, *shape[1:])
                    end = int(np.searchsorted(rows, stop))
                    if end > done:
                        yield done, block[rows[done:end] - start]
                        done = end
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
            if isinstance(err, BuildError):
                raise
            raise BuildError(self.where(key), f"not a readable .npy array ({type(err).__name__}: {err})") from err


def read_npz_array(path: str | Path, key: str) -> np.ndarray:
    """Array ``key`` of an ``.npz`` file, without unpickling; a :class:`BuildError` names what is wrong."""
    with _Npz(Path(path)) as npz:
        return npz.read(key)


# ------------------------------------------------------------------------------------------------------ checks
def _flag_info(flag: str) -> tuple[dict[str, Any], str]:
    module = medmnist_info()
    if flag not in module.INFO:
        raise ValueError(f"the installed medmnist {module.__version__} has no dataset {flag!r}")
    return module.INFO[flag], str(module.__version__)


def _locate(flag: str, files: Mapping[str, Path], size: int | None) -> tuple[Path, int]:
    """The ``<flag>[_<size>].npz`` handed to the build, and the size its name says."""
    if size is not None:
        name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
        return require(files, name, flag), size
    pattern = re.compile(rf"{re.escape(flag)}(?:_(\d+))?\.npz")
    found = {name: int(m.group(1) or 28) for name in files if (m := pattern.fullmatch(name))}
    if not found:
        return require(files, f"{flag}.npz", flag), 28  # raises, listing what was provided
    if len(found) > 1:
        raise BuildError(
            f"resources/{flag}", f"several {flag} sizes were provided ({sorted(found)}); choose one with params.size"
        )
    name = next(iter(found))
    return require(files, name, flag), found[name]


def _check(flag: str, params: Mapping) -> dict[str, Any]:
    p = check_params(flag, params, DEFAULTS[flag])
    size = p["size"]
    if size is not None:
        sizes = medmnist_sizes(_flag_info(flag)[0])
        if isinstance(size, bool) or not isinstance(size, int) or size not in sizes:
            raise ValueError(
                f"datasets entry of kind {flag!r}: params.size must be one of {sizes} (or null to use "
                f"the file provided), got {size!r}"
            )
    if "splits" in p:
        splits = p["splits"]
        if (
            not isinstance(splits, list | tuple)
            or not splits
            or any(s not in SPLITS for s in splits)
            or len(set(splits)) != len(splits)
        ):
            raise ValueError(
                f"datasets entry of kind {flag!r}: params.splits must be a non-empty list of distinct "
                f"names from {SPLITS}, got {splits!r}"
            )
        p["splits"] = [s for s in SPLITS if s in splits]  # upstream order
    return p


def _check_arrays(npz: _Npz, split: str, size: int, n_columns: int, n_values: int) -> tuple[int, np.ndarray]:
    """Number of images of one upstream split and its labels (N, n_columns) int64 with values in [0, n_values),
    after checking both arrays (image headers only: no pixel is read)."""
    img_key, lab_key = f"{split}_images", f"{split}_labels"
    shape, _, dtype = npz.header(img_key)
    grey = len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)
    if not grey or dtype != np.uint8:
        raise BuildError(npz.where(img_key), f"expected greyscale uint8 images (N, H, W), got {dtype} {shape}")
    if shape[1:3] != (size, size):
        raise BuildError(
            npz.where(img_key),
            f"images are {shape[1]}x{shape[2]}, expected {size}x{size} (the size of {npz.path.name} / params.size)",
        )
    labels = npz.read(lab_key)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape != (shape[0], n_columns) or not np.issubdtype(labels.dtype, np.integer):
        raise BuildError(
            npz.where(lab_key),
            f"expected integer labels ({shape[0]}, {n_columns}) for {shape[0]} "
            f"images, got {labels.dtype} {labels.shape}",
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_values):
        raise BuildError(
            npz.where(lab_key), f"label values must lie in [0, {n_values}), got [{labels.min()}, {labels.max()}]"
        )
    return int(shape[0]), labels.astype(np.int64)


def _base_info(flag: str, info: dict, version: str, size: int, seed: int, caps: Caps, counts: dict) -> dict:
    return {
        "family": "xray",
        "source": f"MedMNIST v2 {flag}",
        "medmnist_flag": flag,
        "medmnist_version": version,
        "size": size,
        "seed": int(seed),
        "task": info.get("task"),
        "description": info.get("description"),
        "license": info.get("license"),
        "upstream_counts": counts,
        "caps": caps.limits,
    }


def _write(
    out: Path,
    name: str,
    npz: _Npz,
    parts: list[tuple[str, np.ndarray, np.ndarray, int]],
    size: int,
    split_names: list[str],
    class_names: list[str],
    info: dict,
) -> Path:
    """Write dataset ``name``: ``parts`` = (upstream split, kept rows, their labels, split code) in output order."""
    n = sum(rows.size for _, rows, _, _ in parts)
    meta = {
        "name": name,
        "channel_names": CHANNELS,
        "class_names": class_names,
        "split_names": split_names,
        "mask_names": [],
        "info": info,
    }
    with DatasetWriter(out / name, n, (1, size, size), meta) as writer:
        offset = 0
        for split, rows, labels, code in parts:
            for pos, block in npz.rows(f"{split}_images", rows):
                for j, image in enumerate(block.reshape(-1, 1, size, size)):
                    writer.write(offset + pos + j, image, int(labels[pos + j]), code)
            offset += rows.size
    return out / name


# ------------------------------------------------------------------------------------------------------- build
def build_chestmnist(out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int) -> dict[str, Path]:
    """ChestMNIST -> ``pretrain`` (see the module docstring)."""
    flag = "chestmnist"
    p = _check(flag, params)
    info, version = _flag_info(flag)
    path, size = _locate(flag, files, p["size"])
    findings = [info["label"][k] for k in sorted(info["label"], key=int)]
    if "pneumonia" not in findings:
        raise ValueError(f"medmnist {version} INFO[{flag!r}] has no 'pneumonia' finding: {findings}")
    col = findings.index("pneumonia")
    with _Npz(path) as npz:
        counts, src_split, src_row, y = {}, [], [], []
        for split in SPLITS:  # check every split, pool the chosen ones
            n, labels = _check_arrays(npz, split, size, len(findings), 2)
            counts[split] = n
            if split in p["splits"]:
                src_split.append(np.full(n, SPLITS.index(split)))
                src_row.append(np.arange(n))
                y.append(labels[:, col])
        src_split, src_row, y = (np.concatenate(a) for a in (src_split, src_row, y))
        keep = caps.apply(np.arange(y.size), DATASET[flag], "train", seed)
        parts = [
            (s, src_row[keep][src_split[keep] == SPLITS.index(s)], y[keep][src_split[keep] == SPLITS.index(s)], 0)
            for s in p["splits"]
        ]
        meta_info = {
            **_base_info(flag, info, version, size, seed, caps, counts),
            "pooled_splits": p["splits"],
            "rows_per_upstream_split": {s: int(r.size) for s, r, _, _ in parts},
            "findings": findings,
            "label_rule": f"1 if the ChestMNIST finding 'pneumonia' (label column {col}) is present, else 0 (other "
            "findings may be present); class 'normal' = no pneumonia finding",
            "prevalence": float(y[keep].mean()) if keep.size else None,
        }
        return {DATASET[flag]: _write(out, DATASET[flag], npz, parts, size, ["train"], XRAY_CLASSES, meta_info)}


def build_pneumoniamnist(
    out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int
) -> dict[str, Path]:
    """PneumoniaMNIST -> ``pneumonia`` with the npz's train/val/test splits (see the module docstring)."""
    flag = "pneumoniamnist"
    p = _check(flag, params)
    info, version = _flag_info(flag)
    path, size = _locate(flag, files, p["size"])
    class_names = [info["label"][k] for k in sorted(info["label"], key=int)]
    with _Npz(path) as npz:
        counts, parts = {}, []
        for code, split in enumerate(SPLITS):
            n, labels = _check_arrays(npz, split, size, 1, len(class_names))
            counts[split] = n
            rows = caps.apply(np.arange(n), DATASET[flag], split, seed)
            parts.append((split, rows, labels[rows, 0], code))
        meta_info = {
            **_base_info(flag, info, version, size, seed, caps, counts),
            "counts": {s: int(r.size) for s, r, _, _ in parts},
        }
        return {DATASET[flag]: _write(out, DATASET[flag], npz, parts, size, SPLITS, class_names, meta_info)}
