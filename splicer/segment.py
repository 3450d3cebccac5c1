"""The segment stage: give every image of a dataset a set of masks from a chosen segmenter.

Segmenters are registered in ``SEGMENTERS`` by name; each maps a dataset to ``(N, M, H, W)`` uint8 masks and
their names. Implemented here:

* ``truth``: the masks a dataset already carries (the demo generators know them by construction). It stands
  in for HoVer-Net (nuclei) and HybridGNet (lungs) until the classical and pretrained segmenters land; the
  record says which segmenter made the masks, so figures and tables can tell.

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

__all__ = ["SEGMENTERS", "segment_dataset", "segment_manifest"]

SEGMENTER_VERSION = "1"


def _truth(data: ImageDataset) -> tuple[np.ndarray, list[str]]:
    if data.masks is None:
        raise ValueError(
            f"segmenter 'truth' needs masks stored with the dataset, but {data.path} has no masks.npy; "
            "choose a segmenter that computes masks"
        )
    return np.asarray(data.masks), list(data.mask_names)


SEGMENTERS: dict[str, Callable[[ImageDataset], tuple[np.ndarray, list[str]]]] = {"truth": _truth}
PLANNED = ("classical_nuclei", "classical_lungs", "hovernet", "hybridgnet")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    except OSError:
        shutil.copy2(src, dst)


def segment_dataset(src: str | Path, dst: str | Path, segmenter: str) -> dict:
    """Write ``dst`` = dataset ``src`` with masks from ``segmenter``; returns the segmentation record."""
    if segmenter in PLANNED:
        raise NotImplementedError(
            f"segmenter {segmenter!r} is not implemented yet (segmentation work in progress); "
            "the demo uses 'truth' (masks known by construction)"
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
