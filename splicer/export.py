"""Per-cell embeddings to AnnData: one ``.h5ad`` per sample, as scanpy, squidpy and scimap read them.

:func:`export_h5ad` embeds every cell of a dataset built from multiplex slides (kinds ``multiplex`` and
``orion_crc``, whose datasets carry per-row cell records: :data:`splicer.data.real.multiplex.CELL_FILES`) with a
frozen encoder and writes, per sample, ``<out>/<sample>.h5ad`` with the ``anndata`` package:

* ``obs`` indexed by CellID (as text, as AnnData wants): ``CellID``, ``sample`` and ``imageid`` (scimap's sample
  column), ``X_centroid``, ``Y_centroid``, ``split``, and the label (categorical; column ``meta.info.labels.key``,
  e.g. ``cell_type``) where the dataset has labels;
* ``X``: the quantification table's mean intensity per marker (float32) and ``var`` the markers (index), with
  ``var["crop_channel"]`` marking the markers the crops (and so the encoder) saw;
* ``obsm["X_splicer"]``: the primary encoder's embedding; ``obsm["spatial"]``: the centroids (X, Y), in level-0
  pixels, as squidpy expects;
* ``uns["splicer"]``: the encoder, dataset, channels, crop size and normalisation (JSON text).

Images are read and embedded in batches (``batch_size`` rows of the memory-mapped dataset at a time); the
embedding of a sample is written batch by batch into a memory-mapped scratch file, so memory holds one batch of
images plus the page cache. Each file is written under a temporary name and renamed when complete; ``manifest.json``
(files, cells per sample, encoder, dataset) is written last and marks the export as complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MANIFEST", "export_h5ad", "h5ad_files", "sample_file"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def sample_file(sample: str) -> str:
    """The file name of a sample's export (characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample) + ".h5ad"


def _records(root: Path) -> dict[str, np.ndarray]:
    from splicer.data.real.multiplex import CELL_FILES

    missing = [f for f in CELL_FILES.values() if not (root / f).is_file()]
    if missing:
        raise ValueError(
            f"dataset {root} has no per-cell records ({', '.join(missing)} missing): AnnData export needs a dataset "
            "built from multiplex slides (kind multiplex or orion_crc)"
        )
    return {key: np.load(root / name, mmap_mode="r") for key, name in CELL_FILES.items()}


def _categorical(codes: np.ndarray, categories: list[str]) -> Any:
    """A categorical of ``categories`` (-1: missing) whose categories are plain Python strings: pandas 3 infers a
    string dtype that anndata (0.12) refuses to write unless told to."""
    import pandas as pd

    return pd.Categorical.from_codes(codes, categories=pd.Index(list(categories), dtype=object))


def _label_key(info: dict, dataset: str) -> str:
    key = (info.get("labels") or {}).get("key")
    return str(key) if key else ("cell_type" if dataset in ("cells", "cell_types") else dataset)


def export_h5ad(
    encoder_path: str | Path,
    dataset_dir: str | Path,
    out_dir: str | Path,
    device: str = "cpu",
    batch_size: int = 256,
    progress: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Write ``<out_dir>/<sample>.h5ad`` for every sample of the dataset (module docstring) and
    ``<out_dir>/manifest.json``; returns the manifest's path. ``progress(done, total, cells_per_s)`` is called
    after every batch."""
    import anndata as ad
    import pandas as pd

    from splicer.data.format import load_dataset
    from splicer.encoders import load_encoder
    from splicer.evaluate import embed
    from splicer.fileio import write_json

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = load_dataset(dataset_dir)
    rec = _records(data.path)
    info = data.meta.get("info", {})
    samples, markers = list(info.get("samples", [])), list(info.get("quant_markers", []))
    if not samples or not markers or rec["marker_means"].shape[1] != len(markers):
        raise ValueError(f"dataset {data.path}: meta.json info lacks 'samples' / 'quant_markers' matching its records")
    encoder = load_encoder(encoder_path).to(device)  # once: embed() then leaves it there between batches
    key = _label_key(info, data.meta["name"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    written, counts = {}, {}
    total, done, start = data.n, 0, time.monotonic()
    sample_of = np.asarray(rec["cell_samples"])
    for index, sample in enumerate(samples):
        rows = np.flatnonzero(sample_of == index)
        if rows.size == 0:
            continue
        scratch = out / f".{sample_file(sample)}.features.npy"
        features = None
        try:
            for i in range(0, rows.size, batch_size):
                batch = rows[i : i + batch_size]
                emb = embed(encoder, np.asarray(data.images[batch]), batch_size=batch_size, device=device)
                if features is None:
                    features = np.lib.format.open_memmap(scratch, "w+", np.float32, (rows.size, emb.shape[1]))
                features[i : i + batch.size] = emb
                done += batch.size
                if progress is not None:
                    progress(done, total, done / max(time.monotonic() - start, 1e-9))
            assert features is not None
            features.flush()
            labels = np.asarray(data.labels[rows])
            obs = pd.DataFrame(
                {
                    "CellID": np.asarray(rec["cell_ids"][rows]),
                    "sample": _categorical(np.zeros(rows.size, np.int64), [sample]),
                    "imageid": _categorical(np.zeros(rows.size, np.int64), [sample]),
                    "X_centroid": np.asarray(rec["centroids"][rows, 0]),
                    "Y_centroid": np.asarray(rec["centroids"][rows, 1]),
                    "split": _categorical(np.asarray(data.split[rows]).astype(np.int64), data.split_names),
                },
                index=pd.Index(np.asarray(rec["cell_ids"][rows]).astype(str).astype(object), dtype=object),
            )
            if data.class_names:
                obs[key] = _categorical(labels, data.class_names)  # -1 (unlabelled) -> NaN
            var = pd.DataFrame(
                {"crop_channel": [m in data.channel_names for m in markers]}, index=pd.Index(markers, dtype=object)
            )
            adata = ad.AnnData(X=np.asarray(rec["marker_means"][rows], np.float32), obs=obs, var=var)
            adata.obsm["X_splicer"] = np.asarray(features)
            adata.obsm["spatial"] = np.asarray(rec["centroids"][rows], np.float64)
            adata.uns["splicer"] = {
                "encoder": str(Path(encoder_path).resolve()),
                "dataset": str(data.path),
                "sample": sample,
                "label_key": key if data.class_names else "",
                "channels": list(data.channel_names),
                "crop_size": int(data.hw[0]),
                "embedding_dim": int(features.shape[1]),
                "dataset_info": json.dumps(
                    {k: info.get(k) for k in ("source", "normalisation", "labels", "split_by", "crop_size", "edge")},
                    default=str,
                ),
            }
            target = out / sample_file(sample)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            adata.write_h5ad(tmp)
            os.replace(tmp, target)
        finally:
            del features
            scratch.unlink(missing_ok=True)
            for leftover in out.glob(f".{sample_file(sample)}.tmp-*"):
                leftover.unlink(missing_ok=True)
        written[sample], counts[sample] = target.name, int(rows.size)
        log.info(
            "%s: %d cells -> %s (%.0f cells/s so far)", sample, rows.size, target, done / (time.monotonic() - start)
        )
    seconds = time.monotonic() - start
    return write_json(
        out / MANIFEST,
        {
            "files": written,
            "n_cells": counts,
            "encoder": str(Path(encoder_path).resolve()),
            "dataset": str(data.path),
            "label_key": key if data.class_names else None,
            "seconds": round(seconds, 3),
            "cells_per_second": round(done / max(seconds, 1e-9), 1),
        },
    )


def h5ad_files(manifest: str | Path) -> list[Path]:
    """The ``.h5ad`` files an export's ``manifest.json`` lists (ValueError when one is missing)."""
    manifest = Path(manifest)
    try:
        entry: dict[str, Any] = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read embedding export manifest {manifest}: {err}") from None
    files = [manifest.parent / name for name in entry.get("files", {}).values()]
    if missing := [str(f) for f in files if not f.is_file()]:
        raise ValueError(f"{manifest} lists file(s) that are missing: {missing}")
    return files
