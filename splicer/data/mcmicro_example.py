"""A synthetic MCMICRO output folder: the worked example's, the tests' and the benchmark's multiplex slides.

``write_mcmicro(out, samples=["slide1", ...])`` writes, per sample, the folder MCMICRO leaves after a run::

    <out>/<sample>/markers.csv                               cycle, marker_name, channel_number
    <out>/<sample>/registration/<sample>.ome.tif            tiled, zlib, pyramidal OME-TIFF (SubIFDs), uint16
    <out>/<sample>/segmentation/unmicst-<sample>/cell.ome.tif    uint32 label mask (pixel value = CellID)
    <out>/<sample>/segmentation/unmicst-<sample>/nuclei.ome.tif
    <out>/<sample>/quantification/<sample>--unmicst_cell.csv  CellID, marker means, X/Y_centroid, Area, ...

plus ``<out>/ground_truth.csv`` (sample, CellID, cell_type): the type each cell was drawn as, in the layout of a
user's label CSV. Cells lie on a jittered grid (``spacing`` px), elliptical, with a nucleus; each of six types
carries its markers where biology puts them (membrane rings for CD45/CD3e/CD4/CD8a/CD20, cytoplasm for CD68,
Pan-CK, SMA, nuclear DNA), with lognormal cell-to-cell variation, a smooth autofluorescence field and noise.
Tumour cells cluster in nests, as in a carcinoma. The table's means are computed from the written pixels and mask,
as MCMICRO's quantification (mcquant) computes them, so table, image and mask agree exactly.

Command line: ``python -m splicer.data.mcmicro_example OUT [--samples 3] [--size 768] [--spacing 18]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CELL_TYPES", "PANEL", "TYPE_MARKERS", "write_mcmicro", "write_sample"]

PANEL = ["DNA_1", "AF488", "CD45", "CD3e", "CD4", "CD8a", "CD20", "CD68", "Pan-CK", "SMA", "DNA_2"]
"""The example's 11-channel panel (cycle order): two DNA rounds, autofluorescence and eight markers."""
CELL_TYPES = ["tumour", "stromal", "macrophage", "B cell", "CD4 T cell", "CD8 T cell"]
TYPE_MARKERS = {
    "tumour": {"Pan-CK": "cytoplasm"},
    "stromal": {"SMA": "cytoplasm"},
    "macrophage": {"CD45": "membrane", "CD68": "cytoplasm"},
    "B cell": {"CD45": "membrane", "CD20": "membrane"},
    "CD4 T cell": {"CD45": "membrane", "CD3e": "membrane", "CD4": "membrane"},
    "CD8 T cell": {"CD45": "membrane", "CD3e": "membrane", "CD8a": "membrane"},
}
"""Markers each type carries and where in the cell."""
RADIUS = {"tumour": 7.5, "stromal": 6.5, "macrophage": 7.0, "B cell": 5.0, "CD4 T cell": 5.0, "CD8 T cell": 5.0}
MORPHOLOGY = ["Area", "MajorAxisLength", "MinorAxisLength", "Eccentricity", "Orientation"]


def _types(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """Type index per cell: tumour nests where a smooth random field is high, a stromal/immune mix elsewhere."""
    k = rng.normal(size=(4, 2)) * (2 * np.pi / size) * 3
    phase = rng.uniform(0, 2 * np.pi, 4)
    field = sum(np.cos(k[i, 0] * xs + k[i, 1] * ys + phase[i]) for i in range(4)) / 2
    tumour = field > 0.35
    other = rng.choice(np.arange(1, len(CELL_TYPES)), size=xs.size, p=[0.3, 0.2, 0.15, 0.2, 0.15])
    return np.where(tumour & (rng.random(xs.size) < 0.9), 0, other)


def _stamp(r: float, ecc: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (dy, dx) of an ellipse's pixels and their normalised radius (0 centre .. 1 edge)."""
    a, b = r * (1 + ecc), r / (1 + ecc)
    n = int(np.ceil(a)) + 1
    dy, dx = np.mgrid[-n : n + 1, -n : n + 1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    rho = np.sqrt(u * u + v * v)
    inside = rho <= 1.0
    return dy[inside], dx[inside], rho[inside]


def _render(size: int, spacing: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image (C, H, W) uint16, cell mask, nuclei mask (uint32), cell types) of one synthetic slide."""
    rng = np.random.default_rng(seed)
    g = np.arange(spacing // 2 + 4, size - spacing // 2 - 4, spacing, dtype=np.float64)
    ys, xs = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
    keep = rng.random(xs.size) < 0.92  # a few gaps, as in tissue
    xs = xs[keep] + rng.uniform(-spacing / 5, spacing / 5, keep.sum())
    ys = ys[keep] + rng.uniform(-spacing / 5, spacing / 5, keep.sum())
    types = _types(rng, xs, ys, size)
    cell = np.zeros((size, size), np.uint32)
    nuclei = np.zeros((size, size), np.uint32)
    signal = np.zeros((len(PANEL), size, size), np.float32)
    channel = {m: i for i, m in enumerate(PANEL)}
    for cid, (x, y, t) in enumerate(zip(xs, ys, types, strict=True), start=1):
        name = CELL_TYPES[t]
        r = min(RADIUS[name] * rng.uniform(0.85, 1.15), spacing / 2 - 1)
        dy, dx, rho = _stamp(r, rng.uniform(0.0, 0.35 if name != "stromal" else 0.8), rng.uniform(0, np.pi))
        py, px = np.round(y).astype(int) + dy, np.round(x).astype(int) + dx
        cell[py, px] = cid
        nucleus = rho < 0.55
        nuclei[py[nucleus], px[nucleus]] = cid
        dna = rng.lognormal(np.log(9000), 0.25)
        signal[channel["DNA_1"], py[nucleus], px[nucleus]] += dna * (1 - 0.4 * rho[nucleus])
        signal[channel["DNA_2"], py[nucleus], px[nucleus]] += 0.8 * dna * (1 - 0.4 * rho[nucleus])
        for marker, where in TYPE_MARKERS[name].items():
            level = rng.lognormal(np.log(5000), 0.35)
            weight = np.where(rho > 0.7, 1.0, 0.25) if where == "membrane" else np.where(nucleus, 0.3, 1.0)
            signal[channel[marker], py, px] += level * weight
    axis = np.arange(size, dtype=np.float32) / size
    af = 600 + 400 * np.sin(axis * 5.1 + 0.7)[None, :] * np.cos(axis * 3.7)[:, None]
    image = np.empty(signal.shape, np.uint16)
    for c in range(len(PANEL)):  # one channel at a time: a 10^5-cell slide stays within a few GB
        plane = signal[c]
        plane += 250.0 + af * (1.15 if PANEL[c] == "AF488" else 0.15)
        plane += rng.standard_normal(plane.shape, dtype=np.float32) * np.sqrt(plane) * 2.0
        image[c] = np.clip(plane, 0, 65535)
    return image, cell, nuclei, types


def _table(image: np.ndarray, cell: np.ndarray) -> pd.DataFrame:
    """mcquant's columns: CellID, mean intensity per marker over the cell mask, centroid, area, shape moments."""
    labels = cell.ravel().astype(np.int64)
    n = int(labels.max())
    area = np.bincount(labels, minlength=n + 1)[1:].astype(np.float64)
    present = area > 0
    ids = np.arange(1, n + 1)[present]
    area = area[present]
    out = {"CellID": ids}
    for i, marker in enumerate(PANEL):
        sums = np.bincount(labels, weights=image[i].ravel().astype(np.float64), minlength=n + 1)[1:]
        out[marker] = sums[present] / area
    h, w = cell.shape
    ys = np.repeat(np.arange(h, dtype=np.float64), w)  # pixel coordinates in label order (row-major)
    xs = np.tile(np.arange(w, dtype=np.float64), h)

    def moment(values: np.ndarray) -> np.ndarray:
        return np.bincount(labels, weights=values, minlength=n + 1)[1:][present] / area

    cx, cy = moment(xs), moment(ys)
    sxx, syy, sxy = moment(xs * xs) - cx**2, moment(ys * ys) - cy**2, moment(xs * ys) - cx * cy
    common = np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    major = 4 * np.sqrt(np.maximum((sxx + syy) / 2 + common, 0))
    minor = 4 * np.sqrt(np.maximum((sxx + syy) / 2 - common, 0))
    out.update(
        {
            "X_centroid": cx,
            "Y_centroid": cy,
            "Area": area,
            "MajorAxisLength": major,
            "MinorAxisLength": minor,
            "Eccentricity": np.sqrt(np.clip(1 - (minor / np.maximum(major, 1e-9)) ** 2, 0, 1)),
            "Orientation": 0.5 * np.arctan2(-2 * sxy, sxx - syy),
        }
    )
    return pd.DataFrame(out)


def _write_tiff(path: Path, data: np.ndarray, names: Sequence[str] | None, tile: int, pixel_size: float) -> None:
    """A tiled, zlib-compressed OME-TIFF; images (C, Y, X) get a SubIFD pyramid (2x steps), label masks none."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"tile": (tile, tile), "compression": "zlib", "photometric": "minisblack"}
    levels = []
    if data.ndim == 3:
        level = data
        while max(level.shape[-2:]) > 2 * tile:
            h, w = level.shape[-2] // 2 * 2, level.shape[-1] // 2 * 2
            level = level[:, :h, :w].reshape(level.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4))
            levels.append(level.astype(data.dtype))
    meta = {"axes": "CYX" if data.ndim == 3 else "YX", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size}
    if names is not None:
        meta["Channel"] = {"Name": list(names)}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(data, subifds=len(levels), metadata=meta, **opts)
        for level in levels:
            tw.write(level, subfiletype=1, **opts)


def write_sample(
    out: str | Path, sample: str, size: int = 768, spacing: int = 18, seed: int = 0, tile: int = 256
) -> pd.DataFrame:
    """Write one MCMICRO project folder ``out/<sample>/`` (module docstring); returns (sample, CellID, cell_type)."""
    project = Path(out) / sample
    image, cell, nuclei, types = _render(size, spacing, seed)
    (project / "registration").mkdir(parents=True, exist_ok=True)
    markers = pd.DataFrame(
        {"cycle": [1 + i // 4 for i in range(len(PANEL))], "marker_name": PANEL, "channel_number": range(1, 12)}
    )
    markers.to_csv(project / "markers.csv", index=False)
    _write_tiff(project / "registration" / f"{sample}.ome.tif", image, PANEL, tile, 0.65)
    seg = project / "segmentation" / f"unmicst-{sample}"
    _write_tiff(seg / "cell.ome.tif", cell, None, tile, 0.65)
    _write_tiff(seg / "nuclei.ome.tif", nuclei, None, tile, 0.65)
    table = _table(image, cell)
    (project / "quantification").mkdir(parents=True, exist_ok=True)
    table.to_csv(project / "quantification" / f"{sample}--unmicst_cell.csv", index=False)
    return pd.DataFrame(
        {"sample": sample, "CellID": table["CellID"], "cell_type": [CELL_TYPES[t] for t in types[table["CellID"] - 1]]}
    )


def write_mcmicro(
    out: str | Path,
    samples: Sequence[str] = ("slide1", "slide2", "slide3"),
    size: int = 768,
    spacing: int = 18,
    seed: int = 0,
    tile: int = 256,
) -> Path:
    """Write one MCMICRO project folder per sample under ``out`` and ``out/ground_truth.csv``; returns ``out``."""
    out = Path(out)
    truth = [write_sample(out, s, size, spacing, seed + i, tile) for i, s in enumerate(samples)]
    pd.concat(truth, ignore_index=True).to_csv(out / "ground_truth.csv", index=False)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m splicer.data.mcmicro_example", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (one MCMICRO project folder per sample)")
    p.add_argument("--samples", type=int, default=3, help="number of samples (slides)")
    p.add_argument("--size", type=int, default=768, help="slide width and height in px")
    p.add_argument("--spacing", type=int, default=18, help="cell spacing in px")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = [f"slide{i + 1}" for i in range(args.samples)]
    print(write_mcmicro(args.out, names, args.size, args.spacing, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
