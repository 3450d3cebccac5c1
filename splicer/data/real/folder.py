"""Dataset kind ``folder``: the user's own images (and masks, labels) read in place -- no archives.

Config::

    datasets:
      mine:
        kind: folder
        params:
          images: /data/tiles            # PNG / TIFF files (required)
          masks: /data/tiles_nuclei      # optional: one mask per image, same stem (a.png -> a.png / a.tif)
          mask_names: [nuclei]           # names of the mask planes (default: mask / mask0, mask1, ...)
          labels: /data/labels.csv       # optional: CSV "file,label[,split]" (file = stem or file name)
          name: tiles                    # dataset name (default "images")
        segment: {segmenter: truth}      # use the masks read here

Params (``DEFAULTS``):

* ``images`` -- folder of images, read in sorted order of file stem (hidden files and other extensions are skipped;
  stems must be unique). PNG: greyscale (1 channel), RGB (3), palette (converted to RGB), grey+alpha / RGBA (the
  alpha plane is dropped, and noted in ``info``), 8 or 16 bit. TIFF (``tifffile``): 2-D, or multi-channel
  ``(C, H, W)`` / ``(H, W, C)`` (multiplex); ``channel_axis`` ``auto`` takes the TIFF's own axes (samples ``S``
  last = ``(H, W, C)``, else channels first), and for arrays without that takes the last axis when it is small
  (<= 4) and the first is not. ``first`` / ``last`` force it. Pixels must be uint8 or uint16 (other types: error),
  all images the same type and channel count (error naming the first file that differs).
* ``channel_names`` -- one per channel (default ``c0, c1, ...``).
* ``size`` -- resize every image to ``size`` (int: square, or ``[H, W]``; bilinear, antialiased; masks nearest).
  Without it all images must share one size (error naming the first that differs).
* ``masks`` -- folder holding, for every image, a mask file with the same stem (PNG or TIFF); an image without
  one is an error naming it (masks without an image are ignored, counted in ``info``). A mask is single-plane
  (binary 0/non-zero, or a label image: non-zero = inside) or multi-plane ``(M, H, W)`` / ``(H, W, M)`` (one plane
  per mask). ``mask_values`` (``{name: value or [values]}``) instead splits a single-plane label image into one
  plane per name (e.g. ``{lungs: [1, 2], heart: 3}``). Every plane is stored as 0/1. A mask whose size differs
  from its image is an error naming both files, unless ``resize_masks: true`` (nearest-neighbour resize to the
  image). Empty (all-zero) masks are kept: their count per plane is in ``info.empty_masks`` and logged as a
  warning; the region-of-interest component of such an image is all zero (and its complement the whole image).
* ``labels`` -- CSV with columns ``file,label`` and optionally ``split`` (train/val/test); a header line naming
  the columns is optional. Class names are the distinct labels (sorted, numerically when all are integers).
  Images without a row are unlabelled (-1, counted in ``info``); rows without an image are counted and ignored.
* ``split`` -- ``[train, val, test]`` fractions of a seeded split, stratified by label (default
  ``[0.7, 0.15, 0.15]`` when ``labels`` are given, else every image is ``train``); a ``split`` column in the
  labels CSV overrides it per image. Split names are always ``train, val, test``.
* ``name`` -- dataset (and folder) name, default ``images``.

Rows are ordered by split (train, val, test; each a contiguous block) and, within a split, by file stem;
``info.stems`` lists the file stem of every row. Caps (``datasets.<entry>.caps``) keep a seeded subset per split.
Every file problem raises
:class:`~splicer.data.real.common.BuildError` whose message starts with the file at fault.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.format import DatasetWriter
from splicer.data.real.common import SPLITS, BuildError, Caps, check_params, split_order, three_way_split
from splicer.registry import Layout

__all__ = ["DEFAULTS", "IMAGE_SUFFIXES", "build_folder", "layout", "read_image", "read_mask"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
DEFAULTS: dict[str, Any] = {
    "images": "",
    "masks": None,
    "mask_names": None,
    "mask_values": None,
    "labels": None,
    "channel_names": None,
    "channel_axis": "auto",
    "name": "images",
    "split": None,
    "size": None,
    "resize_masks": False,
}
DEFAULT_SPLIT = [0.7, 0.15, 0.15]
_SHOWN = 20  # names listed per kind of skipped file or unmatched label row (log and meta.json)


# =========================================================================================== reading files
def _list_files(folder: Path, what: str) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Stem -> file of the PNG/TIFF files of ``folder`` (sorted by stem), and what was skipped, by reason:
    ``hidden`` files, ``other_suffix`` (not PNG/TIFF), ``dangling_links`` (symlinks to nothing), ``not_files``
    (folders and the like). Duplicate stems are an error."""
    if not folder.is_dir():
        raise BuildError(folder, f"{what} folder does not exist")
    out: dict[str, Path] = {}
    skipped: dict[str, list[str]] = {"hidden": [], "other_suffix": [], "dangling_links": [], "not_files": []}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            skipped["hidden"].append(p.name)
        elif p.is_symlink() and not p.exists():
            skipped["dangling_links"].append(p.name)
        elif not p.is_file():
            skipped["not_files"].append(p.name)
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped["other_suffix"].append(p.name)
        elif p.stem in out:
            raise BuildError(p, f"two {what} files with stem {p.stem!r}: {out[p.stem].name} and {p.name}")
        else:
            out[p.stem] = p
    return dict(sorted(out.items())), {k: v for k, v in skipped.items() if v}


def _report_skipped(folder: Path, what: str, skipped: Mapping[str, list[str]]) -> dict[str, Any]:
    """Log what :func:`_list_files` skipped (a dangling link as a warning) and summarise it for ``meta.json``."""
    for reason, names in skipped.items():
        shown = ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")
        if reason == "dangling_links":
            log.warning("folder %s: skipped %d symlink(s) pointing to nothing: %s", folder, len(names), shown)
        else:
            log.info("folder %s: skipped %d %s entr(y/ies) (%s): %s", folder, len(names), what, reason, shown)
    return {reason: {"count": len(names), "names": names[:_SHOWN]} for reason, names in skipped.items()}


def _read_png(path: Path) -> tuple[np.ndarray, str, bool]:
    """(array (H, W) or (H, W, C), axes, alpha dropped)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode, dropped = im.mode, False
        if mode == "1":
            im = im.convert("L")
        elif mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("LA", "RGBA", "PA"):
            dropped = True
            im = im.convert("L" if im.mode == "LA" else "RGB")
        arr = np.asarray(im)
        if im.mode in ("I", "I;16", "I;16B", "I;16L") and arr.dtype != np.uint16:
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise BuildError(path, f"{mode} PNG values outside 0..65535 cannot be stored as uint16")
            arr = arr.astype(np.uint16)
    return arr, "YXS" if arr.ndim == 3 else "YX", dropped


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr, axes = series.asarray(), series.axes
    keep = [n != 1 for n in arr.shape]
    if len(axes) != arr.ndim:  # unusual series: fall back to the bare array
        return np.squeeze(arr), ""
    return arr.reshape([n for n, k in zip(arr.shape, keep, strict=True) if k]), "".join(
        ax for ax, k in zip(axes, keep, strict=True) if k
    )


def _tiff_header(path: Path) -> tuple[tuple[int, ...], str, np.dtype]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
    keep = [n != 1 for n in shape]
    if len(axes) != len(shape):
        return tuple(n for n in shape if n != 1), "", dtype
    return (
        tuple(n for n, k in zip(shape, keep, strict=True) if k),
        "".join(ax for ax, k in zip(axes, keep, strict=True) if k),
        dtype,
    )


def _read(path: Path) -> tuple[np.ndarray, str, bool]:
    try:
        if path.suffix.lower() == ".png":
            return _read_png(path)
        arr, axes = _read_tiff(path)
        return arr, axes, False
    except BuildError:
        raise
    except Exception as err:  # PIL/tifffile raise many types for damaged or unsupported files
        raise BuildError(path, f"cannot be read as an image: {type(err).__name__}: {err}") from err


def _channels_last(shape: Sequence[int], axes: str, channel_axis: str) -> bool:
    """Whether a 3-D image of ``shape`` (TIFF ``axes`` if known) holds its channels last."""
    if channel_axis in ("first", "last"):
        return channel_axis == "last"
    if len(axes) == 3 and axes[-1] == "S":
        return True
    if len(axes) == 3 and axes[-2:] == "YX":
        return False
    return shape[-1] <= 4 < shape[0]


def _channels_first(arr: np.ndarray, axes: str, channel_axis: str, path: Path) -> np.ndarray:
    """(H, W) -> (1, H, W); (C, H, W) / (H, W, C) -> (C, H, W)."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise BuildError(path, f"image of shape {arr.shape} (axes {axes or '?'}): expected 2-D or 3-D (channels)")
    return np.moveaxis(arr, -1, 0) if _channels_last(arr.shape, axes, channel_axis) else arr


def read_image(path: str | Path, channel_axis: str = "auto") -> tuple[np.ndarray, bool]:
    """One image as ``(C, H, W)`` uint8/uint16 and whether an alpha plane was dropped; BuildError otherwise."""
    path = Path(path)
    arr, axes, dropped = _read(path)
    arr = _channels_first(arr, axes, channel_axis, path)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype not in (np.uint8, np.uint16):
        raise BuildError(path, f"pixel type {arr.dtype} is not supported: save images as uint8 or uint16")
    return np.ascontiguousarray(arr), dropped


def read_mask(path: str | Path, hw: tuple[int, int], values: Mapping[str, Any] | None = None) -> np.ndarray:
    """One mask file as ``(M, H, W)`` bool planes (see the module docstring); ``hw`` disambiguates plane axes."""
    path = Path(path)
    arr, axes, _ = _read(path)
    if arr.ndim == 3 and axes.endswith("S") and path.suffix.lower() == ".png":
        if not (arr == arr[..., :1]).all():
            raise BuildError(path, "colour mask (RGB channels differ): save masks as single-plane images")
        arr = arr[..., 0]
    if arr.ndim == 2:
        planes = arr[None]
    elif arr.ndim == 3:
        if axes.endswith("S") or tuple(arr.shape[:2]) == tuple(hw) != tuple(arr.shape[1:]):
            last = True
        elif tuple(arr.shape[1:]) == tuple(hw):
            last = False
        else:  # size differs from the image (resize_masks): guess as for images
            last = _channels_last(arr.shape, axes, "auto")
        planes = np.moveaxis(arr, -1, 0) if last else arr
    else:
        raise BuildError(path, f"mask of shape {arr.shape}: expected 2-D, or 3-D with one plane per mask")
    if not (np.issubdtype(planes.dtype, np.integer) or planes.dtype == np.bool_):
        raise BuildError(path, f"mask pixel type {planes.dtype} is not supported: save masks as integers")
    if values is None:
        return planes != 0
    if planes.shape[0] != 1:
        raise BuildError(
            path, f"params.mask_values splits a single-plane label image, but the mask has {planes.shape[0]} planes"
        )
    out = []
    for name, v in values.items():
        wanted = [v] if isinstance(v, int | np.integer) else list(v)
        if not all(isinstance(x, int | np.integer) and not isinstance(x, bool) for x in wanted):
            raise ValueError(
                f"datasets entry of kind 'folder': params.mask_values.{name} must be an integer or a "
                f"list of integers, got {v!r}"
            )
        out.append(np.isin(planes[0], wanted))
    return np.stack(out)


def _header(path: Path, channel_axis: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(C, H, W)`` and dtype of an image file from its header (pixels are not decoded)."""
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
                mode = im.mode
            bands = {
                "1": 1,
                "L": 1,
                "LA": 1,
                "P": 3,
                "PA": 3,
                "RGB": 3,
                "RGBA": 3,
                "I": 1,
                "I;16": 1,
                "I;16B": 1,
                "I;16L": 1,
                "F": 1,
            }
            if mode not in bands:
                raise BuildError(path, f"PNG mode {mode!r} is not supported (grey, RGB, palette, 8/16 bit)")
            dtype = np.dtype(np.uint16 if mode.startswith("I") else np.float32 if mode == "F" else np.uint8)
            return (bands[mode], h, w), dtype
        shape, axes, dtype = _tiff_header(path)
        if len(shape) == 2:
            return (1, *shape), dtype
        if len(shape) != 3:
            raise BuildError(path, f"image of shape {shape} (axes {axes or '?'}): expected 2-D or 3-D (channels)")
        if _channels_last(shape, axes, channel_axis):
            return (shape[2], shape[0], shape[1]), dtype
        return shape, dtype
    except BuildError:
        raise
    except Exception as err:
        raise BuildError(path, f"cannot be read as an image: {type(err).__name__}: {err}") from err


# ================================================================================================= builder
@dataclass
class _Plan:
    stems: list[str]
    files: list[Path]
    shape: tuple[int, int, int]
    dtype: np.dtype
    sizes: list[tuple[int, int]]


def _scan(files: dict[str, Path], channel_axis: str, size: tuple[int, int] | None) -> _Plan:
    """First pass, from file headers: every image's channel count, size and type must agree."""
    first: tuple[Path, int, np.dtype] | None = None
    sizes: list[tuple[int, int]] = []
    for path in files.values():
        shape, dtype = _header(path, channel_axis)
        if dtype == np.bool_:
            dtype = np.dtype(np.uint8)
        if dtype not in (np.uint8, np.uint16):
            raise BuildError(path, f"pixel type {dtype} is not supported: save images as uint8 or uint16")
        c, h, w = shape
        if first is None:
            first = (path, c, dtype)
        elif c != first[1]:
            raise BuildError(
                path, f"has {c} channel(s) but {first[0].name} has {first[1]}: all images need the same channels"
            )
        elif dtype != first[2]:
            raise BuildError(
                path, f"pixel type {dtype} differs from {first[0].name} ({first[2]}): all images need one type"
            )
        if size is None and sizes and (h, w) != sizes[0]:
            raise BuildError(
                path,
                f"size {h}x{w} differs from {first[0].name} ({sizes[0][0]}x{sizes[0][1]}): set "
                "params.size to resize every image",
            )
        sizes.append((h, w))
    assert first is not None
    hw = size if size is not None else sizes[0]
    return _Plan(list(files), list(files.values()), (first[1], *hw), first[2], sizes)


def _read_labels(path: Path, stems: Sequence[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Stem -> label, stem -> split (if a split column) from the labels CSV, and the files named by rows that
    match no image. A CSV with no row, or none matching an image, is an error naming it."""
    if not path.is_file():
        raise BuildError(path, "labels CSV does not exist")
    try:
        rows = [r for r in csv.reader(path.read_text(encoding="utf-8-sig").splitlines()) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise BuildError(path, f"cannot be read as CSV: {err}") from err
    has_header = bool(rows) and [c.strip().lower() for c in rows[0][:2]] == ["file", "label"]
    if has_header:
        header = [c.strip().lower() for c in rows[0]]
        if header[2:] not in ([], ["split"]):
            raise BuildError(path, f"columns must be file,label[,split]; got {header}")
        rows = rows[1:]
    if not rows:
        raise BuildError(path, "labels CSV has no rows (expected file,label[,split] lines)")
    known = set(stems)
    labels: dict[str, str] = {}
    splits: dict[str, str] = {}
    unmatched: list[str] = []
    for i, row in enumerate(rows, start=2 if has_header else 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise BuildError(path, f"line {i}: need file,label, got {row}")
        if len(row) > 3:
            raise BuildError(path, f"line {i}: columns must be file,label[,split], got {row}")
        file = Path(row[0].strip()).name
        stem = Path(file).stem if Path(file).suffix.lower() in IMAGE_SUFFIXES else file
        label = row[1].strip()
        if stem in labels and labels[stem] != label:
            raise BuildError(path, f"line {i}: {stem!r} labelled both {labels[stem]!r} and {label!r}")
        if stem not in known:
            unmatched.append(row[0].strip())
            continue
        labels[stem] = label
        if len(row) > 2 and row[2].strip():
            split = row[2].strip().lower()
            if split not in SPLITS:
                raise BuildError(path, f"line {i}: split {row[2]!r} is not one of {SPLITS}")
            splits[stem] = split
    if not labels:
        raise BuildError(
            path,
            f"none of its {len(unmatched)} row(s) names an image (rows name e.g. {unmatched[:3]}; the images are "
            f"e.g. {list(stems)[:3]}): the file column must hold an image's file name or stem, without folders",
        )
    return labels, splits, unmatched


def _class_names(labels: Sequence[str]) -> list[str]:
    names = sorted(set(labels))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def _size_param(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return (size, size)
    if (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"datasets entry of kind 'folder': params.size must be a positive integer or [H, W], got {size!r}")


def _resize_image(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if img.shape[1:] == tuple(hw):
        return img
    from skimage.transform import resize

    out = resize(img.astype(np.float64), (img.shape[0], *hw), order=1, preserve_range=True, anti_aliasing=True)
    info = np.iinfo(img.dtype)
    return np.clip(np.rint(out), 0, info.max).astype(img.dtype)


def _resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if mask.shape[1:] == tuple(hw):
        return mask
    from skimage.transform import resize

    return resize(mask, (mask.shape[0], *hw), order=0, preserve_range=True, anti_aliasing=False).astype(bool)


def _check(p: dict[str, Any]) -> None:
    if not p["images"]:
        raise ValueError("datasets entry of kind 'folder': params.images (the folder of images) is required")
    for key in ("masks", "labels"):
        if p[key] is not None and not isinstance(p[key], str):
            raise ValueError(f"datasets entry of kind 'folder': params.{key} must be a path, got {p[key]!r}")
    for key in ("channel_names", "mask_names"):
        v = p[key]
        if v is not None and (not isinstance(v, list | tuple) or not v or not all(isinstance(s, str) for s in v)):
            raise ValueError(f"datasets entry of kind 'folder': params.{key} must be a list of names, got {v!r}")
    if p["mask_values"] is not None:
        if not isinstance(p["mask_values"], Mapping) or not p["mask_values"]:
            raise ValueError(
                "datasets entry of kind 'folder': params.mask_values must map mask names to label "
                f"values, got {p['mask_values']!r}"
            )
        if p["mask_names"] is not None:
            raise ValueError(
                "datasets entry of kind 'folder': give params.mask_values (its keys name the masks) or "
                "params.mask_names, not both"
            )
        if p["masks"] is None:
            raise ValueError("datasets entry of kind 'folder': params.mask_values needs params.masks")
    if p["channel_axis"] not in ("auto", "first", "last"):
        raise ValueError(
            f"datasets entry of kind 'folder': params.channel_axis must be auto, first or last, got "
            f"{p['channel_axis']!r}"
        )
    if not isinstance(p["name"], str) or not re.fullmatch(r"[A-Za-z0-9_]+", p["name"]):
        raise ValueError(
            "datasets entry of kind 'folder': params.name must be a plain name of letters, digits and _ (it is a "
            f"folder, and experiments name it as pretrain or evaluate data), got {p['name']!r}"
        )
    if p["split"] is not None and (not isinstance(p["split"], list | tuple) or len(p["split"]) != 3):
        raise ValueError(
            f"datasets entry of kind 'folder': params.split must be [train, val, test] fractions, got {p['split']!r}"
        )


def build_folder(out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int) -> dict[str, Path]:
    """Build dataset ``params.name`` from a folder of images (+ masks, labels); see the module docstring."""
    p = check_params("folder", params, DEFAULTS)
    _check(p)
    if files:
        raise ValueError(f"dataset kind 'folder' reads its files in place and takes no archives, got {sorted(files)}")
    name, size = p["name"], _size_param(p["size"])
    image_dir = Path(p["images"]).expanduser()
    found, skipped = _list_files(image_dir, "image")
    if not found:
        raise BuildError(
            image_dir,
            f"no PNG or TIFF images ({', '.join(IMAGE_SUFFIXES)}) in the folder"
            + (f" (skipped: { {k: len(v) for k, v in skipped.items()} })" if skipped else ""),
        )
    skipped_info = _report_skipped(image_dir, "image", skipped)
    plan = _scan(found, p["channel_axis"], size)
    c, h, w = plan.shape
    channel_names = list(p["channel_names"]) if p["channel_names"] is not None else [f"c{i}" for i in range(c)]
    if len(channel_names) != c:
        raise ValueError(
            f"datasets entry of kind 'folder': params.channel_names has {len(channel_names)} names but "
            f"the images have {c} channel(s)"
        )

    # labels and splits
    info: dict[str, Any] = {
        "source": str(image_dir.absolute()),
        "files": len(plan.stems),
        "skipped_files": skipped_info,
    }
    if p["labels"] is not None:
        labels_by_stem, split_by_stem, unmatched = _read_labels(Path(p["labels"]).expanduser(), plan.stems)
        if unmatched:
            log.warning(
                "folder %s: %d row(s) of %s name no image (ignored): %s",
                image_dir,
                len(unmatched),
                p["labels"],
                ", ".join(unmatched[:_SHOWN]) + (", ..." if len(unmatched) > _SHOWN else ""),
            )
        class_names = _class_names(list(labels_by_stem.values()))
        labels = np.array(
            [class_names.index(labels_by_stem[s]) if s in labels_by_stem else -1 for s in plan.stems], np.int64
        )
        info.update(
            labels_csv=str(Path(p["labels"]).absolute()),
            unlabelled=int((labels < 0).sum()),
            label_rows_without_image=len(unmatched),
            label_files_without_image=unmatched[:_SHOWN],
        )
        if (labels < 0).any():
            log.warning(
                "folder %s: %d image(s) have no row in %s (unlabelled)", image_dir, int((labels < 0).sum()), p["labels"]
            )
    else:
        class_names, labels, split_by_stem = [], np.full(len(plan.stems), -1, np.int64), {}
    fractions = p["split"] if p["split"] is not None else (DEFAULT_SPLIT if p["labels"] is not None else None)
    if fractions is not None:
        labelled = labels >= 0
        split = np.zeros(len(plan.stems), np.uint8)
        split[labelled] = three_way_split(
            int(labelled.sum()), fractions, seed, name, labels[labelled] if class_names else None
        )
        split[~labelled] = three_way_split(int((~labelled).sum()), fractions, seed, f"{name}/unlabelled")
    else:
        split = np.zeros(len(plan.stems), np.uint8)
    for i, s in enumerate(plan.stems):
        if s in split_by_stem:
            split[i] = SPLITS.index(split_by_stem[s])

    # masks: every image needs one
    mask_files: list[Path] = []
    mask_names: list[str] = []
    if p["masks"] is not None:
        mask_dir = Path(p["masks"]).expanduser()
        available, mask_skipped = _list_files(mask_dir, "mask")
        info["skipped_mask_files"] = _report_skipped(mask_dir, "mask", mask_skipped)
        for stem, path in zip(plan.stems, plan.files, strict=True):
            if stem not in available:
                raise BuildError(path, f"has no mask in {mask_dir} (expected {stem}.png or {stem}.tif)")
            mask_files.append(available[stem])
        info.update(masks=str(mask_dir.absolute()), masks_without_image=len(set(available) - set(plan.stems)))

    # rows: split blocks, capped
    order = split_order(split)
    rows = np.concatenate([caps.apply(order[split[order] == k], name, SPLITS[k], seed) for k in range(len(SPLITS))])
    n_masks = 0
    if mask_files:
        first = read_mask(
            mask_files[rows[0]] if rows.size else mask_files[0],
            plan.sizes[rows[0] if rows.size else 0],
            p["mask_values"],
        )
        n_masks = first.shape[0]
        if p["mask_values"] is not None:
            mask_names = list(p["mask_values"])
        elif p["mask_names"] is not None:
            mask_names = list(p["mask_names"])
            if len(mask_names) != n_masks:
                raise ValueError(
                    f"datasets entry of kind 'folder': params.mask_names has {len(mask_names)} names but "
                    f"{mask_files[rows[0]]} has {n_masks} plane(s)"
                )
        else:
            mask_names = ["mask"] if n_masks == 1 else [f"mask{i}" for i in range(n_masks)]
    meta = {
        "name": name,
        "channel_names": channel_names,
        "class_names": class_names,
        "split_names": list(SPLITS),
        "mask_names": mask_names,
        "info": info,
    }

    empty = np.zeros(n_masks, np.int64)
    dropped_alpha = 0
    with DatasetWriter(out / name, len(rows), (c, h, w), meta, dtype=plan.dtype, n_masks=n_masks) as writer:
        for row, i in enumerate(rows):
            img, dropped = read_image(plan.files[i], p["channel_axis"])
            dropped_alpha += dropped
            img_hw = img.shape[1:]
            mask = None
            if mask_files:
                mask = read_mask(mask_files[i], img_hw, p["mask_values"])
                if mask.shape[0] != n_masks:
                    raise BuildError(mask_files[i], f"has {mask.shape[0]} plane(s), but the first mask has {n_masks}")
                if mask.shape[1:] != img_hw:
                    if not p["resize_masks"]:
                        raise BuildError(
                            mask_files[i],
                            f"size {mask.shape[1]}x{mask.shape[2]} differs from its image "
                            f"{plan.files[i]} ({img_hw[0]}x{img_hw[1]}); set "
                            "params.resize_masks: true to resize masks to their images",
                        )
                    mask = _resize_mask(mask, img_hw)
                mask = _resize_mask(mask, (h, w))
                empty += ~mask.reshape(n_masks, -1).any(axis=1)
            writer.write(
                row,
                _resize_image(img, (h, w)),
                int(labels[i]),
                int(split[i]),
                None if mask is None else mask.astype(np.uint8),
            )
        writer.meta["info"].update(
            rows=len(rows),
            stems=[plan.stems[i] for i in rows],
            dropped_alpha=dropped_alpha,
            empty_masks={n: int(e) for n, e in zip(mask_names, empty, strict=True)},
            resized=bool(size is not None and any(s != (h, w) for s in plan.sizes)),
        )
        path = writer.close()
    for n, e in zip(mask_names, empty, strict=True):
        if e:
            log.warning(
                "folder %s: %d of %d mask(s) %r are empty (kept; their region component is all zero)",
                image_dir,
                int(e),
                len(rows),
                n,
            )
    return {name: path}


def layout(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """``Kind.layout`` of ``folder``: what the params declare, without reading an image (a bad param is a
    ValueError). Channel names are known only from ``channel_names``, the size only from ``size``, and mask names
    from ``mask_values`` / ``mask_names`` (no ``masks``: none); anything else is ``None`` (known after the
    build)."""
    p = {**DEFAULTS, **dict(spec.get("params") or {})}
    _check(p)  # the params alone (no file is read): a bad name or option fails in the dry run
    names = p["channel_names"]
    channels = tuple(names) if isinstance(names, list | tuple) and all(isinstance(c, str) for c in names) else None
    masks: tuple[str, ...] | None
    if p["masks"] is None:
        masks = ()
    elif isinstance(p["mask_values"], Mapping):
        masks = tuple(str(k) for k in p["mask_values"])
    elif isinstance(p["mask_names"], list | tuple):
        masks = tuple(str(k) for k in p["mask_names"])
    else:
        masks = None
    try:
        size = _size_param(p["size"])
    except ValueError:
        size = None  # the params check names it
    return {str(p["name"]): Layout(channels, masks, size)}
