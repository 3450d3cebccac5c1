"""The segment stage: give every image of a dataset a set of masks from a chosen segmenter.

Segmenters are registered in ``SEGMENTERS`` by name; each maps a dataset to ``(N, M, H, W)`` uint8 masks and
their names. Implemented here:

* ``truth``: the masks a dataset already carries (the demo generators know them by construction).
* ``classical_nuclei``: haematoxylin channel by colour deconvolution, Otsu, opening, size filter
  (:mod:`splicer.segmenters`); the offline stand-in for HoVer-Net.
* ``classical_lungs``: body by multi-level Otsu, dark regions inside it, one component per image half; the
  offline stand-in for HybridGNet.

The pretrained HoVer-Net / HybridGNet paths are planned (``PLANNED``). When the input dataset already carries
masks of the same names (the demo's ground truth), the record also holds the segmenter's Dice against them.

The output dataset links (or copies) the input arrays and adds ``masks.npy`` plus ``segmentation.json``
(segmenter, version, mask names, mask coverage).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from splicer.data.format import ImageDataset, load_dataset
from splicer.segmenters import classical_lungs, classical_nuclei, dice

__all__ = ["SEGMENTERS", "segment_dataset", "segment_manifest"]

SEGMENTER_VERSION = "1"


def _truth(data: ImageDataset) -> tuple[np.ndarray, list[str]]:
    if data.masks is None:
        raise ValueError(
            f"segmenter 'truth' needs masks stored with the dataset, but {data.path} has no masks.npy; "
            "choose a segmenter that computes masks"
        )
    return np.asarray(data.masks), list(data.mask_names)


SEGMENTERS: dict[str, Callable[[ImageDataset], tuple[np.ndarray, list[str]]]] = {
    "truth": _truth,
    "classical_nuclei": classical_nuclei,
    "classical_lungs": classical_lungs,
}
PLANNED = ("hovernet", "hybridgnet")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    except OSError:
        shutil.copy2(src, dst)


def _dice_vs_stored(data: ImageDataset, masks: np.ndarray, names: list[str]) -> dict[str, float]:
    """Dice of each produced mask against a stored mask of the same name (the demo's ground truth), if any."""
    if data.masks is None:
        return {}
    stored = list(data.mask_names)
    return {
        n: dice(masks[:, i], np.asarray(data.masks[:, stored.index(n)])) for i, n in enumerate(names) if n in stored
    }


def segment_dataset(src: str | Path, dst: str | Path, segmenter: str) -> dict:
    """Write ``dst`` = dataset ``src`` with masks from ``segmenter``; returns the segmentation record."""
    if segmenter in PLANNED:
        raise NotImplementedError(
            f"segmenter {segmenter!r} is not implemented yet (segmentation work in progress); "
            "use 'classical_nuclei' / 'classical_lungs' (offline) or 'truth' (masks known by construction)"
        )
    if segmenter not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {segmenter!r}; choose one of {sorted(SEGMENTERS)}")
    src, dst = Path(src), Path(dst)
    data = load_dataset(src)
    masks, names = SEGMENTERS[segmenter](data)
    if masks.shape[0] != data.n or masks.shape[2:] != data.images.shape[2:]:
        raise ValueError(f"segmenter {segmenter!r} gave masks {masks.shape} for images {data.images.shape} of {src}")
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("images.npy", "labels.npy", "split.npy"):
        _link_or_copy(src / name, tmp / name)
    np.save(tmp / "masks.npy", masks.astype(np.uint8))
    meta = dict(data.meta, mask_names=names)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    record = {
        "segmenter": segmenter,
        "version": SEGMENTER_VERSION,
        "dice_vs_stored_masks": _dice_vs_stored(data, masks, names),
        "source": str(src),
        "mask_names": names,
        "coverage": {n: float(masks[:, i].mean()) for i, n in enumerate(names)},
    }
    (tmp / "segmentation.json").write_text(json.dumps(record, indent=2))
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    load_dataset(dst)  # the result must be a valid dataset
    return record


def segment_manifest(src_manifest: str | Path, dst_manifest: str | Path, segmenter: str) -> dict:
    """Segment every dataset a data manifest lists; write the new manifest last (it marks completion)."""
    src_manifest, dst_manifest = Path(src_manifest), Path(dst_manifest)
    manifest = json.loads(src_manifest.read_text())
    records = {
        name: segment_dataset(src_manifest.parent / name, dst_manifest.parent / name, segmenter)
        for name in manifest["datasets"]
    }
    out = {**manifest, "segmentation": records}
    dst_manifest.write_text(json.dumps(out, indent=2))
    return out
