"""On-disk dataset format: a directory of memory-mappable ``.npy`` arrays plus ``meta.json``.

Layout of a dataset directory::

    images.npy   (N, C, H, W) uint8 or uint16
    labels.npy   (N,) int64, -1 = unlabelled, else an index into meta["class_names"]
    split.npy    (N,) uint8, an index into meta["split_names"] (e.g. ["train", "val", "test"])
    masks.npy    optional (N, M, H, W) uint8 in {0, 1}, one plane per meta["mask_names"]
    meta.json    {"name", "channel_names", "class_names", "split_names", "mask_names", "info": {...}}

Every validation failure raises :class:`DatasetFormatError` (a ``ValueError``) whose message names the
offending file (full path) and key.

A folder of datasets built by the pipeline holds a ``manifest.json`` beside them whose ``arrays`` record each
array's size in bytes and a checksum of a sample of it (:func:`array_record`). :func:`load_dataset` compares the
arrays with that record and fails with :class:`DatasetChangedError`, naming the file, what changed and how to
rebuild, when one was truncated or modified after the build (Snakemake itself tracks only the manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ARRAY_FILES",
    "IMAGE_DTYPES",
    "META_KEYS",
    "DatasetChangedError",
    "DatasetFormatError",
    "DatasetWriter",
    "ImageDataset",
    "array_record",
    "array_records",
    "load_dataset",
    "save_dataset",
    "to_float",
    "to_unit",
    "value_scale",
]

META_KEYS = ("name", "channel_names", "class_names", "split_names", "mask_names")
IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
ARRAY_FILES = {"images": "images.npy", "labels": "labels.npy", "split": "split.npy", "masks": "masks.npy"}
META_FILE = "meta.json"


class DatasetFormatError(ValueError):
    """A dataset directory or the arrays passed to :func:`save_dataset` do not follow the format."""


class DatasetChangedError(DatasetFormatError):
    """An array of a built dataset no longer matches the size or sampled checksum its manifest recorded."""


def _fail(file: Path, key: str, problem: str) -> DatasetFormatError:
    return DatasetFormatError(f"{file}: key {key!r}: {problem}")


@dataclass
class ImageDataset:
    """Arrays of one dataset (possibly memory-mapped) and its metadata."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    masks: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        """Number of image channels C."""
        return int(self.images.shape[1])

    @property
    def hw(self) -> tuple[int, int]:
        """Spatial shape (H, W)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def size(self) -> int:
        """Largest spatial side max(H, W) (== H == W for square images, e.g. for encoder stem choice)."""
        return max(self.hw)

    @property
    def channel_names(self) -> list[str]:
        return list(self.meta.get("channel_names", []))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names", []))

    @property
    def split_names(self) -> list[str]:
        return list(self.meta.get("split_names", []))

    @property
    def mask_names(self) -> list[str]:
        return list(self.meta.get("mask_names", []))

    def select(self, split_name: str) -> ImageDataset:
        """Rows whose split is ``split_name``; a contiguous block stays a memory-mapped view."""
        names = self.split_names
        if split_name not in names:
            where = self.path / META_FILE if self.path is not None else "dataset"
            raise DatasetFormatError(f"{where}: key 'split_names': unknown split {split_name!r}; have {names}")
        idx = np.flatnonzero(np.asarray(self.split) == names.index(split_name))
        if idx.size and idx[-1] - idx[0] + 1 == idx.size:
            rows: slice | np.ndarray = slice(int(idx[0]), int(idx[-1]) + 1)
        else:
            rows = idx
        return ImageDataset(
            images=self.images[rows],
            labels=self.labels[rows],
            split=self.split[rows],
            masks=None if self.masks is None else self.masks[rows],
            meta=self.meta,
            path=self.path,
        )

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name (unlabelled ``-1`` rows are not counted)."""
        labels = np.asarray(self.labels)
        counts = np.bincount(labels[labels >= 0], minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=False)}


# ----------------------------------------------------------------------------------------------- validation
def _check_str_list(meta: dict[str, Any], key: str, file: Path) -> list[str]:
    value = meta[key]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(file, key, f"must be a list of strings, got {value!r}")
    return list(value)


def _validate_meta(meta: Any, file: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise _fail(file, "meta", f"must be a JSON object, got {type(meta).__name__}")
    for key in META_KEYS:
        if key not in meta:
            raise _fail(file, key, "missing from meta")
    if not isinstance(meta["name"], str):
        raise _fail(file, "name", f"must be a string, got {meta['name']!r}")
    for key in META_KEYS[1:]:
        _check_str_list(meta, key, file)
    if not meta["split_names"]:
        raise _fail(file, "split_names", "must name at least one split")
    if "info" in meta and not isinstance(meta["info"], dict):
        raise _fail(file, "info", f"must be a dict, got {type(meta['info']).__name__}")
    return meta


def _validate_arrays(
    root: Path,
    images: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    masks: np.ndarray | None,
    meta: dict[str, Any],
    *,
    check_mask_values: bool,
) -> None:
    """Check shapes, dtypes, label/split codes and consistency with meta (mask values only when asked:
    scanning a large memory-mapped mask file on every load would be slow)."""
    f_img, f_lab, f_spl, f_msk = (root / ARRAY_FILES[k] for k in ("images", "labels", "split", "masks"))
    f_meta = root / META_FILE
    if images.ndim != 4:
        raise _fail(f_img, "images", f"must be 4-D (N, C, H, W), got shape {images.shape}")
    if images.dtype not in IMAGE_DTYPES:
        raise _fail(f_img, "images", f"dtype must be uint8 or uint16, got {images.dtype}")
    n, c, h, w = images.shape
    if len(meta["channel_names"]) != c:
        raise _fail(f_meta, "channel_names", f"has {len(meta['channel_names'])} names but images have C={c}")
    if labels.ndim != 1 or labels.dtype != np.int64:
        raise _fail(f_lab, "labels", f"must be 1-D int64, got shape {labels.shape} dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise _fail(f_lab, "labels", f"length {labels.shape[0]} != number of images {n}")
    if split.ndim != 1 or split.dtype != np.uint8:
        raise _fail(f_spl, "split", f"must be 1-D uint8, got shape {split.shape} dtype {split.dtype}")
    if split.shape[0] != n:
        raise _fail(f_spl, "split", f"length {split.shape[0]} != number of images {n}")
    n_classes, n_splits = len(meta["class_names"]), len(meta["split_names"])
    if n:
        lab, spl = np.asarray(labels), np.asarray(split)
        if lab.min() < -1 or lab.max() >= n_classes:
            raise _fail(
                f_lab,
                "labels",
                f"values must lie in [-1, {n_classes}) (class_names {meta['class_names']}), "
                f"got range [{lab.min()}, {lab.max()}]",
            )
        if spl.max() >= n_splits:
            raise _fail(f_spl, "split", f"code {int(spl.max())} out of range for split_names {meta['split_names']}")
    n_masks = len(meta["mask_names"])
    if masks is None:
        if n_masks:
            raise _fail(f_msk, "masks", f"file missing but meta mask_names = {meta['mask_names']}")
        return
    if masks.ndim != 4 or masks.dtype != np.uint8:
        raise _fail(f_msk, "masks", f"must be 4-D uint8 (N, M, H, W), got shape {masks.shape} dtype {masks.dtype}")
    if masks.shape[0] != n or masks.shape[2:] != (h, w):
        raise _fail(f_msk, "masks", f"shape {masks.shape} does not match images {images.shape}")
    if masks.shape[1] != n_masks:
        raise _fail(f_meta, "mask_names", f"has {n_masks} names but masks have M={masks.shape[1]}")
    if check_mask_values and masks.size and np.asarray(masks).max() > 1:
        raise _fail(f_msk, "masks", "values must be 0 or 1")


# -------------------------------------------------------------------------------------------------- save
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def _as_int_array(x: Any, dtype: type, file: Path, key: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == dtype:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise _fail(file, key, f"must be an integer array, got dtype {arr.dtype}")
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise _fail(file, key, f"values out of range for {np.dtype(dtype).name}")
    return arr.astype(dtype)


def save_dataset(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    meta: dict[str, Any],
    masks: np.ndarray | None = None,
) -> Path:
    """Validate and write a dataset directory atomically; returns its path.

    Files are written into ``<path>.tmp-<pid>`` which then replaces ``path`` (an existing dataset is first
    moved aside, so readers never see a half-written directory). Integer labels/splits are cast to
    int64/uint8 and boolean masks to uint8; images must already be uint8 or uint16.
    """
    root = Path(path).absolute()
    images = np.asarray(images)
    labels = _as_int_array(labels, np.int64, root / ARRAY_FILES["labels"], "labels")
    split = _as_int_array(split, np.uint8, root / ARRAY_FILES["split"], "split")
    if masks is not None:
        masks = _as_int_array(masks, np.uint8, root / ARRAY_FILES["masks"], "masks")
    meta = _validate_meta(dict(meta), root / META_FILE)
    meta = {**meta, **{k: list(meta[k]) for k in META_KEYS[1:]}, "info": dict(meta.get("info", {}))}
    _validate_arrays(root, images, labels, split, masks, meta, check_mask_values=True)
    try:
        meta_text = json.dumps(meta, indent=2, default=_json_default)
    except TypeError as err:
        raise _fail(root / META_FILE, "meta", str(err)) from err

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        arrays = {"images": images, "labels": labels, "split": split}
        if masks is not None:
            arrays["masks"] = masks
        for key, arr in arrays.items():
            np.save(tmp / ARRAY_FILES[key], np.ascontiguousarray(arr), allow_pickle=False)
        (tmp / META_FILE).write_text(meta_text + "\n")
        _move_into_place(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


class DatasetWriter:
    """Write a dataset too large for memory row by row into memory-mapped files, atomically on :meth:`close`.

    ``images.npy`` (and ``masks.npy`` if ``n_masks``) are created at full size in ``<path>.tmp-<pid>``; rows are
    filled with :meth:`write` (any order); :meth:`close` validates everything as :func:`save_dataset` does and
    moves the directory into place. Leaving the ``with`` block on an exception deletes the temp directory, so a
    half-built dataset is never seen. Labels and splits are kept in memory (8 + 1 bytes per row).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n: int,
        shape: tuple[int, int, int],
        meta: dict[str, Any],
        dtype: Any = np.uint8,
        n_masks: int = 0,
    ) -> None:
        self.root = Path(path).absolute()
        self.meta = _validate_meta(dict(meta), self.root / META_FILE)
        if np.dtype(dtype) not in IMAGE_DTYPES:
            raise _fail(self.root / ARRAY_FILES["images"], "images", f"dtype must be uint8 or uint16, got {dtype}")
        self.tmp = self.root.with_name(f"{self.root.name}.tmp-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        c, h, w = shape
        self.shape, self.mask_shape = (c, h, w), (n_masks, h, w)
        try:
            self.images = np.lib.format.open_memmap(
                self.tmp / ARRAY_FILES["images"], "w+", np.dtype(dtype), (n, c, h, w)
            )
            self.masks = (
                np.lib.format.open_memmap(self.tmp / ARRAY_FILES["masks"], "w+", np.uint8, (n, n_masks, h, w))
                if n_masks
                else None
            )
        except BaseException:  # e.g. the disk is full: leave no half-made directory behind
            self.abort()
            raise
        self.labels = np.full(n, -1, np.int64)
        self.split = np.zeros(n, np.uint8)
        self.written = np.zeros(n, bool)

    def write(self, row: int, image: np.ndarray, label: int, split: int, mask: np.ndarray | None = None) -> None:
        """Fill row ``row``: image (C, H, W), integer label (-1 = none), split code, masks (M, H, W)."""
        if np.shape(image) != self.shape:
            raise _fail(
                self.root / ARRAY_FILES["images"], "images", f"row {row}: image shape {np.shape(image)} != {self.shape}"
            )
        if mask is not None and np.shape(mask) != self.mask_shape:
            raise _fail(
                self.root / ARRAY_FILES["masks"],
                "masks",
                f"row {row}: mask shape {np.shape(mask)} != {self.mask_shape}",
            )
        self.images[row] = image
        self.labels[row] = label
        self.split[row] = split
        if self.masks is not None:
            if mask is None:
                raise _fail(self.root / ARRAY_FILES["masks"], "masks", f"row {row} written without its masks")
            self.masks[row] = mask
        self.written[row] = True

    def close(self) -> Path:
        """Validate, write labels/split/meta and move the dataset into place; returns its path. On any failure
        the temp directory is deleted and the error raised (an existing dataset at ``path`` is kept)."""
        try:
            return self._close()
        except BaseException:
            self.abort()
            raise

    def _close(self) -> Path:
        if not self.written.all():
            missing = np.flatnonzero(~self.written)
            raise _fail(
                self.root / ARRAY_FILES["images"],
                "images",
                f"{missing.size} rows never written (first: {missing[:5].tolist()})",
            )
        self.images.flush()
        if self.masks is not None:
            self.masks.flush()
        meta = {**self.meta, **{k: list(self.meta[k]) for k in META_KEYS[1:]}, "info": dict(self.meta.get("info", {}))}
        _validate_arrays(self.root, self.images, self.labels, self.split, self.masks, meta, check_mask_values=False)
        if self.masks is not None and self.masks.size and self.masks.max() > 1:
            raise _fail(self.root / ARRAY_FILES["masks"], "masks", "values must be 0 or 1")
        np.save(self.tmp / ARRAY_FILES["labels"], self.labels, allow_pickle=False)
        np.save(self.tmp / ARRAY_FILES["split"], self.split, allow_pickle=False)
        (self.tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        del self.images, self.masks
        _move_into_place(self.tmp, self.root)
        return self.root

    def abort(self) -> None:
        """Delete the temp directory (nothing is moved into place)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif self.tmp.exists():
            self.close()


def _move_into_place(tmp: Path, root: Path) -> None:
    """Replace ``root`` by the finished directory ``tmp`` (an existing ``root`` is moved aside first)."""
    old = root.with_name(f"{root.name}.old-{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    if root.exists():
        os.replace(root, old)
        try:
            os.replace(tmp, root)
        except BaseException:
            os.replace(old, root)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, root)


# ------------------------------------------------------------------------------------------ manifest record
MANIFEST = "manifest.json"
_SAMPLE_BLOCK = 64 << 10  # bytes per sampled block
_SAMPLE_BLOCKS = 17  # evenly spaced blocks, first and last included: ~1 MiB read per array


def array_record(path: str | os.PathLike) -> dict[str, Any]:
    """Size in bytes and a cheap checksum of a (possibly huge) file: BLAKE2b of its size and of 17 evenly spaced
    64 KiB blocks (the .npy header, the start and the end included), ~1 MiB read whatever the file's size. It
    catches truncation, growth and any change inside the sampled blocks; a change elsewhere goes unseen (a full
    hash of a 50 GB array would cost minutes in every job)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as fh:
        starts = sorted({round(i * max(size - _SAMPLE_BLOCK, 0) / (_SAMPLE_BLOCKS - 1)) for i in range(_SAMPLE_BLOCKS)})
        for start in starts:
            fh.seek(start)
            digest.update(fh.read(_SAMPLE_BLOCK))
    return {"bytes": size, "sampled_blake2b": digest.hexdigest()}


def array_records(folder: str | os.PathLike, names: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{dataset: {array file: array_record}}`` for datasets ``names`` of ``folder`` (a manifest's ``arrays``)."""
    folder = Path(folder)
    return {
        name: {f: array_record(folder / name / f) for f in ARRAY_FILES.values() if (folder / name / f).exists()}
        for name in names
    }


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (as Snakemake names it), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_manifest_record(root: Path) -> None:
    """Compare the arrays of dataset ``root`` with the record of ``root/../manifest.json``, when there is one and
    the dataset is not newer than it (a folder being rebuilt rewrites ``meta.json`` before its manifest)."""
    manifest = root.parent / MANIFEST
    try:
        if manifest.stat().st_mtime_ns < (root / META_FILE).stat().st_mtime_ns:
            return
        record = json.loads(manifest.read_text()).get("arrays", {}).get(root.name)
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    if not isinstance(record, dict):
        return
    for name, expected in record.items():
        file = root / name
        try:
            actual = array_record(file) if file.exists() else None
        except OSError as err:
            actual, problem = None, f"cannot be read ({err})"
        else:
            problem = "is missing"
        if actual == expected:
            continue
        if actual is not None and actual["bytes"] != expected.get("bytes"):
            problem = f"has {actual['bytes']} bytes, but {expected.get('bytes')} when it was built (truncated?)"
        elif actual is not None:
            problem = "has the size it was built with but other contents (its sampled checksum differs)"
        owner = file.resolve().parent.parent / MANIFEST  # a segmented folder links its images to the data folder
        try:
            rule = "segment" if "segmentation" in json.loads(owner.read_text()) else "build_data"
        except (OSError, json.JSONDecodeError):
            owner, rule = manifest, "build_data"
        raise DatasetChangedError(
            f"{_shown(file)} {problem}: the dataset changed after the build recorded in {_shown(manifest)}. "
            f"Rebuild it: `snakemake --forcerun {_shown(owner)} <your target>` (rule {rule}; it reruns what depends "
            f"on it), or delete {_shown(owner.parent)} and rerun"
        )


# -------------------------------------------------------------------------------------------------- load
def _load_array(file: Path, key: str, mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise _fail(file, key, "file missing")
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _fail(file, key, f"cannot be read as .npy: {err}") from err


def load_dataset(path: str | os.PathLike, mmap: bool = True) -> ImageDataset:
    """Load and validate a dataset directory (arrays memory-mapped read-only when ``mmap``); arrays that differ
    from the record of the folder's ``manifest.json`` raise :class:`DatasetChangedError`."""
    root = Path(path).absolute()
    f_meta = root / META_FILE
    if not root.is_dir():
        raise _fail(root, "path", "dataset directory missing")
    if not f_meta.is_file():
        raise _fail(f_meta, "meta", "file missing")
    try:
        meta = json.loads(f_meta.read_text())
    except json.JSONDecodeError as err:
        raise _fail(f_meta, "meta", f"invalid JSON: {err}") from err
    meta = _validate_meta(meta, f_meta)
    meta.setdefault("info", {})
    _check_manifest_record(root)
    images = _load_array(root / ARRAY_FILES["images"], "images", mmap)
    labels = _load_array(root / ARRAY_FILES["labels"], "labels", mmap)
    split = _load_array(root / ARRAY_FILES["split"], "split", mmap)
    f_msk = root / ARRAY_FILES["masks"]
    masks = _load_array(f_msk, "masks", mmap) if f_msk.exists() else None
    if masks is not None and not meta["mask_names"]:
        raise _fail(f_meta, "mask_names", f"is empty but {f_msk.name} exists")
    _validate_arrays(root, images, labels, split, masks, meta, check_mask_values=False)
    return ImageDataset(images=images, labels=labels, split=split, masks=masks, meta=meta, path=root)


# ------------------------------------------------------------------------------------------------ tensors
def value_scale(dtype: Any) -> float:
    """What a stored value is divided by to lie in [0, 1]: 255 for uint8, 65535 for uint16, 1 for floats."""
    name = str(dtype).removeprefix("torch.")
    if name == "uint8":
        return 255.0
    if name == "uint16":
        return 65535.0
    if name.startswith(("float", "bfloat")):
        return 1.0
    raise TypeError(f"unsupported image dtype {dtype} (expected uint8, uint16 or float)")


def to_unit(x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """uint8 -> x/255, uint16 -> x/65535 as a new float array of ``dtype``; floats keep their values."""
    arr = np.asarray(x)
    out = np.array(arr, dtype=dtype)
    scale = value_scale(arr.dtype)
    if scale != 1.0:
        out /= out.dtype.type(scale)
    return out


def to_float(x: Any) -> Any:
    """uint8 -> x/255, uint16 -> x/65535 as a float32 torch tensor (tensors stay on their device); float inputs
    are returned as float32 unchanged in value."""
    import torch

    if isinstance(x, torch.Tensor):
        scale = value_scale(x.dtype)
        return x.float() if scale == 1.0 else x.float().div_(scale)
    return torch.from_numpy(to_unit(x, np.float32))
