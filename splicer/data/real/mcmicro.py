"""The MCMICRO output layout: samples of a project folder, markers.csv, panels, and the per-cell tables.

One project folder (MCMICRO names it after its sample; ``labsyspharm/mcmicro`` docs, "Directory structure")::

    markers.csv                                  a ``marker_name`` column, one row per image channel, in order
    registration/<sample>.ome.tif                the stitched, registered image (pyramidal OME-TIFF)
    dearray/<core>.tif                           TMA mode: one image per core
    segmentation/<method>-<sample>/cell.ome.tif  label masks (pixel value = CellID), also nuclei.ome.tif, ...
    quantification/<sample>--<method>_cell.csv   CellID, one mean-intensity column per marker, X_centroid,
                                                 Y_centroid, Area, ... (before 2022-10: <method>-<sample>_cell.csv)
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from splicer.data.real.common import BuildError

__all__ = [
    "CELL_ID",
    "CENTROIDS",
    "Sample",
    "find_mcmicro",
    "folder_paths",
    "read_marker_names",
    "read_table",
    "resolve_channels",
]

KIND = "multiplex"
CENTROIDS = ("X_centroid", "Y_centroid")
CELL_ID = "CellID"


@dataclass
class Sample:
    """One slide (or TMA core): its image, cell table, marker list and (optional) label masks."""

    name: str
    image: Path
    table: Path
    markers_file: Path
    markers: list[str]
    masks: dict[str, Path] = field(default_factory=dict)


def read_marker_names(path: Path) -> list[str]:
    """Channel names of a ``markers.csv`` in file order: its ``marker_name`` column (MCMICRO; other columns such as
    ``cycle``/``channel_number`` ignored) or, without that header, the first column of a header-less file."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "marker_name" not in table.columns:
            table = pd.read_csv(path, header=None, usecols=[0], names=["marker_name"], dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise BuildError(path, f"cannot be read as a marker list ({err})") from err
    names = [str(n).strip() for n in table["marker_name"]]
    if not names or "" in names:
        raise BuildError(path, f"names no marker in some row (a blank marker_name); got {names}")
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise BuildError(path, f"names marker(s) {dup} more than once; every image channel needs its own name")
    return names


_NEW_TABLE = re.compile(r"(?P<sample>.+)--(?P<method>[^-]+)_cell\.csv$")
_OLD_TABLE = re.compile(r"(?P<method>[^-]+)-(?P<sample>.+)_cell\.csv$")


def _table_sample(name: str) -> tuple[str, str] | None:
    """(sample, method) of a quantification file name (``<sample>--<method>_cell.csv`` or the older
    ``<method>-<sample>_cell.csv``), else None."""
    match = _NEW_TABLE.match(name) or _OLD_TABLE.match(name)
    return (match.group("sample"), match.group("method")) if match else None


def _project_folders(path: Path) -> list[Path]:
    if (path / "markers.csv").is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and (p / "markers.csv").is_file())
    if not found:
        raise BuildError(
            path,
            "is not an MCMICRO output folder (no markers.csv in it or in any of its subfolders); expected "
            "<project>/markers.csv, registration/<sample>.ome.tif, quantification/<sample>--<method>_cell.csv",
        )
    return found


def _image_of(project: Path, sample: str) -> Path | None:
    for candidate in (
        *(project / "registration" / f"{sample}{ext}" for ext in (".ome.tif", ".ome.tiff", ".tif", ".tiff")),
        *(project / "dearray" / f"{sample}{ext}" for ext in (".tif", ".ome.tif", ".tiff", ".ome.tiff")),
    ):
        if candidate.is_file():
            return candidate
    return None


def folder_paths(path: Any) -> list[Path]:
    if isinstance(path, str | Path) and str(path):
        return [Path(path)]
    if isinstance(path, list | tuple) and path and all(isinstance(p, str | Path) and str(p) for p in path):
        return [Path(p) for p in path]
    raise ValueError(f"{KIND}: params.path must name an MCMICRO output folder (or a list of them), got {path!r}")


def find_mcmicro(path: Any, segmentation: str = "", samples: Sequence[str] = ()) -> list[Sample]:
    """Every sample of the MCMICRO folder(s) ``path`` (see the module docstring), in folder and name order."""
    found: list[Sample] = []
    for root in folder_paths(path):
        if not root.is_dir():
            raise BuildError(root, "MCMICRO output folder not found (params.path)")
        for project in _project_folders(root):
            found += _project_samples(project, segmentation)
    names = [s.name for s in found]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise BuildError(path, f"sample name(s) {dup} occur in more than one MCMICRO folder; rename one of them")
    if samples:
        if unknown := sorted(set(samples) - set(names)):
            raise BuildError(path, f"params.samples names sample(s) {unknown} not found; samples: {names}")
        found = [s for s in found if s.name in set(samples)]
    return found


def _project_samples(project: Path, segmentation: str) -> list[Sample]:
    quant = project / "quantification"
    tables: dict[str, dict[str, Path]] = {}
    if quant.is_dir():
        for csv in sorted(quant.glob("*_cell.csv")):
            parsed = _table_sample(csv.name)
            if parsed:
                tables.setdefault(parsed[0], {})[parsed[1]] = csv
    if not tables:
        raise BuildError(
            quant, "holds no cell table (<sample>--<method>_cell.csv): run MCMICRO's quantification step first"
        )
    markers = read_marker_names(project / "markers.csv")
    out = []
    for sample, by_method in sorted(tables.items()):
        if segmentation:
            if segmentation not in by_method:
                raise BuildError(
                    quant, f"sample {sample!r} has no table of segmentation {segmentation!r}; found {sorted(by_method)}"
                )
            method = segmentation
        elif len(by_method) == 1:
            method = next(iter(by_method))
        else:
            raise BuildError(
                quant,
                f"sample {sample!r} has tables of several segmentation methods {sorted(by_method)}: choose one "
                "with params.segmentation",
            )
        image = _image_of(project, sample)
        if image is None:
            raise BuildError(
                project / "registration" / f"{sample}.ome.tif",
                f"image of sample {sample!r} not found (nor dearray/{sample}.tif); its table is {by_method[method]}",
            )
        seg = project / "segmentation" / f"{method}-{sample}"
        masks = {p.name.split(".")[0]: p for p in sorted(seg.glob("*.tif*"))} if seg.is_dir() else {}
        out.append(Sample(sample, image, by_method[method], project / "markers.csv", markers, masks))
    return out


def _match(patterns: Sequence[str], names: Sequence[str], what: str) -> list[str]:
    """Names matching any pattern, in pattern order (then name order); a pattern matching nothing is an error."""
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{KIND}: params.{what} entries must be marker names or patterns, got {pattern!r}")
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"{KIND}: params.{what} {pattern!r} matches no marker; markers: {list(names)}")
        out += [h for h in hits if h not in out]
    return out


def resolve_channels(
    samples: Sequence[Sample], keep: Sequence[str] = (), drop: Sequence[str] = (), common_panel: bool = False
) -> tuple[list[str], list[str]]:
    """(crop channels, markers every sample's table quantifies): the panel filtered by ``keep``/``drop``.

    Samples must share one panel (any order; dropped markers aside) unless ``keep`` names only markers they all
    have or ``common_panel`` asks for the markers they all share."""
    first = samples[0]
    union = list(dict.fromkeys(m for s in samples for m in s.markers))
    shared = [m for m in first.markers if all(m in s.markers for s in samples)]
    dropped = set(_match(drop, union, "drop")) if drop else set()
    base = shared if common_panel else (union if keep else first.markers)
    channels = [c for c in (_match(keep, base, "keep") if keep else base) if c not in dropped]
    if not channels:
        raise ValueError(f"{KIND}: params.keep/drop leave no channel of the panel {first.markers}")
    for s in samples:
        lacks = [c for c in channels if c not in s.markers]
        adds = [] if keep or common_panel else [m for m in s.markers if m not in first.markers and m not in dropped]
        if lacks or adds:
            culprit, other = (s, first) if s is not first else (next(o for o in samples if o is not s), s)
            raise BuildError(
                culprit.markers_file,
                f"sample {culprit.name!r} has a different panel: it lacks {lacks} and adds {adds} compared with "
                f"{other.markers_file} of sample {other.name!r}; keep only markers all samples share "
                "(params.keep) or set params.common_panel: true",
            )
    return channels, shared


def read_table(
    path: Path, markers: Sequence[str], width: int, height: int, extra: Sequence[str] = ()
) -> tuple[pd.DataFrame, int]:
    """CellID, centroids, the ``markers``' mean intensities (float32) and ``extra`` columns of every complete row."""
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise BuildError(path, f"cannot be read as a per-cell CSV ({err})") from err
    if missing := [c for c in (CELL_ID, *CENTROIDS, *markers, *extra) if c not in header]:
        raise BuildError(
            path,
            f"per-cell table lacks column(s) {missing} (MCMICRO quantification: {CELL_ID}, one mean-intensity column "
            f"per marker of markers.csv, {list(CENTROIDS)}, Area, ...); has {header[:30]}",
        )
    numeric = [CELL_ID, *CENTROIDS, *markers]
    try:
        table = pd.read_csv(path, usecols=list(dict.fromkeys([*numeric, *extra])))
        table[numeric] = table[numeric].apply(pd.to_numeric, errors="raise")
    except (ValueError, OSError) as err:
        raise BuildError(path, f"non-numeric or unreadable values in columns {numeric} ({err})") from err
    complete = table[numeric].notna().all(axis=1).to_numpy()
    table = table.loc[complete].reset_index(drop=True)
    ids = table[CELL_ID].to_numpy()
    if ids.size and (np.any(ids != np.round(ids)) or ids.min() < 1):
        raise BuildError(path, f"{CELL_ID} must hold positive integers (mask labels); got e.g. {ids[:5].tolist()}")
    table[CELL_ID] = ids.astype(np.int64)
    if dup := np.unique(ids[pd.Series(ids).duplicated().to_numpy()]).tolist()[:5]:
        raise BuildError(path, f"{CELL_ID} values repeat (e.g. {dup}); each row must be one cell")
    x, y = table["X_centroid"].to_numpy(), table["Y_centroid"].to_numpy()
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise BuildError(
            path,
            f"{int(outside.sum())} centroid(s) lie outside the {width}x{height} image (first: CellID "
            f"{int(ids[i])} at X={x[i]}, Y={y[i]}): table and image of different samples?",
        )
    table[list(markers)] = table[list(markers)].astype(np.float32)
    return table, int((~complete).sum())
