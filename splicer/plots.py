"""Paper figures, tables and the scorecard, drawn only from tidy CSV tables and dataset directories.

Every figure has the same signature::

    fig(inputs: Mapping[str, path | list[path]], outputs: Mapping[str, path], title_suffix: str = "", **opts)

``inputs`` names its files by role (:data:`FIGURE_INPUTS` lists required and optional roles per figure);
``outputs`` needs ``png`` (written at 150 dpi); ``pdf`` and, for tables (:data:`TABLES`), ``csv`` default to
the ``png`` path with that suffix. :data:`FIGURES` maps a name to its function and :func:`make_figure` checks
the name, the input roles and the options before drawing.

Tidy tables have the columns :data:`TIDY_COLUMNS` (spectra add ``rank``; probes may add ``head``), ceilings
:data:`CEILING_COLUMNS`. Every value is first averaged per seed; figures show mean ± sd (sample sd, ddof=1)
over seeds with one dot per seed. A missing column raises ``ValueError`` naming the file and the column; a
filter that leaves no rows raises ``ValueError`` naming the files and the filter; missing combinations are
simply not drawn. Figures are built on :class:`matplotlib.figure.Figure` (Agg canvas), never through pyplot.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from splicer.data.format import ImageDataset, load_dataset
from splicer.paper_numbers import PAPER_NUMBERS

__all__ = [
    "CEILING_COLUMNS",
    "DEMO_LABEL",
    "FIGURES",
    "FIGURE_INPUTS",
    "SCORECARD_COLUMNS",
    "SPECTRA_COLUMNS",
    "TABLES",
    "TIDY_COLUMNS",
    "fig_2a",
    "fig_2b",
    "fig_2c",
    "fig_3a",
    "fig_3b",
    "fig_3c",
    "fig_3d",
    "fig_3e",
    "fig_4a",
    "fig_4b",
    "fig_s1a",
    "make_figure",
    "read_table",
    "scorecard",
    "table_s2",
]

PathLike = str | os.PathLike
Inputs = Mapping[str, PathLike | Sequence[PathLike] | None]
Outputs = Mapping[str, PathLike]

TIDY_COLUMNS = ("experiment", "dataset", "method", "loss", "pairing", "seed", "task", "variant", "metric", "value")
SPECTRA_COLUMNS = (*TIDY_COLUMNS, "rank")
CEILING_COLUMNS = ("experiment", "kind", "seed", "metric", "value")
SCORECARD_COLUMNS = ("figure", "experiment", "method", "loss", "pairing", "task", "variant", "metric", "paper_value",
                     "ours_mean", "ours_sd", "n_seeds", "data")
NUMERIC_COLUMNS = ("value", "rank")
DEMO_LABEL = "demo data (synthetic analogue)"
REAL_LABEL = "real data"
CEILING_KINDS = ("ssl_complex_only", "supervised_complex_only")

METHOD_ORDER = ("baseline", "sigma_je", "trident", "splicer")
METHOD_LABELS = {"baseline": "Baseline", "sigma_je": "Σ-JE", "trident": "TriDeNT", "splicer": "SpliCER"}
LOSS_ORDER = ("vicreg", "simclr")
LOSS_LABELS = {"vicreg": "VICReg", "simclr": "SimCLR"}
CEILING_LABELS = {"supervised_complex_only": "supervised, complex part only",
                  "ssl_complex_only": "SSL, complex part only"}
DPI = 150


# ------------------------------------------------------------------------------------------------- input helpers
def _paths(inputs: Inputs, key: str, fig: str, required: bool = True) -> list[Path]:
    """The path(s) given for input role ``key`` (a single path or a list)."""
    value = inputs.get(key)
    if value is None or (isinstance(value, Sequence) and not isinstance(value, str) and not value):
        if required:
            raise ValueError(f"{fig}: missing input {key!r} (given: {sorted(inputs)})")
        return []
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    return [Path(v) for v in value]


def _coerce_seed(series: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(series, errors="coerce")
    return numeric.astype("int64") if numeric.notna().all() and (numeric % 1 == 0).all() else series


def read_table(paths: PathLike | Sequence[PathLike], columns: Sequence[str], fig: str = "table") -> pd.DataFrame:
    """Read and concatenate CSVs, checking each has ``columns``; strings stay strings ("none" is not NaN).

    ``value``/``rank`` become floats; the files read are kept in ``df.attrs["files"]``.
    """
    paths = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    frames = []
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{fig}: input file {path} does not exist")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError as err:
            raise ValueError(f"{fig}: {path}: empty file, missing columns {list(columns)}") from err
        df.columns = [str(c).strip() for c in df.columns]
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{fig}: {path}: missing column(s) {', '.join(map(repr, missing))} "
                             f"(has {list(df.columns)})")
        frames.append(df)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))
    for col in out.columns:
        if col in NUMERIC_COLUMNS:
            out[col] = pd.to_numeric(out[col].replace("", np.nan), errors="coerce").astype(float)
        else:
            out[col] = out[col].astype(str).str.strip()
    if "seed" in out.columns and len(out):
        out["seed"] = _coerce_seed(out["seed"])
    out.attrs["files"] = [str(p) for p in paths]
    return out


def _describe(filters: Mapping[str, Any]) -> str:
    parts = []
    for key, val in filters.items():
        if val is None:
            continue
        parts.append(f"{key} in {list(val)}" if isinstance(val, list | tuple | set) else f"{key}={val!r}")
    return ", ".join(parts) or "no filter"


def _filter(df: pd.DataFrame, fig: str, **filters: Any) -> pd.DataFrame:
    """Rows matching every non-None filter (a scalar: equality, a list: membership); none left -> ValueError."""
    mask = pd.Series(True, index=df.index)
    for key, val in filters.items():
        if val is None:
            continue
        if key not in df.columns:
            raise ValueError(f"{fig}: {', '.join(df.attrs.get('files', []))}: missing column {key!r} used by filter")
        if isinstance(val, list | tuple | set):
            mask &= df[key].astype(str).isin([str(v) for v in val])
        else:
            mask &= df[key].astype(str) == str(val)
    out = df[mask].copy()
    out.attrs = dict(df.attrs)
    if out.empty:
        files = ", ".join(df.attrs.get("files", [])) or "input table"
        raise ValueError(f"{fig}: no rows in {files} match filter {_describe(filters)} "
                         f"({len(df)} rows before filtering)")
    return out


def _select_head(df: pd.DataFrame, head: str | None, fig: str) -> tuple[pd.DataFrame, str | None]:
    """Keep one probe head: ``head`` if given, else the only one, else ``linear``, else the first (sorted)."""
    if "head" not in df.columns:
        if head is not None:
            raise ValueError(f"{fig}: {', '.join(df.attrs.get('files', []))}: missing column 'head' "
                             f"(option head={head!r})")
        return df, None
    if head is None:
        heads = sorted(df["head"].unique())
        head = "linear" if "linear" in heads else heads[0] if heads else None
    return _filter(df, fig, head=head), head


def _ordered(values: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    """Unique values, those in ``order`` first (in that order), the rest sorted ("none" first)."""
    uniq = list(dict.fromkeys(str(v) for v in values))
    first = [v for v in order if v in uniq]
    rest = sorted((v for v in uniq if v not in first), key=lambda v: (v != "none", v))
    return first + rest


def _method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _loss_label(loss: str) -> str:
    return LOSS_LABELS.get(loss, loss)


def _add_hue(df: pd.DataFrame, with_dataset: bool | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Add a ``hue`` column "Method (pairing)" (+ " [dataset]" when several datasets) and its order."""
    df = df.copy()
    if with_dataset is None:
        with_dataset = df["dataset"].nunique() > 1
    multi_pairing = df.groupby("method")["pairing"].nunique()

    def label(row: pd.Series) -> str:
        text = _method_label(row["method"])
        if row["pairing"] not in ("none", "") or multi_pairing.get(row["method"], 1) > 1:
            text += f" ({row['pairing']})"
        return f"{text} [{row['dataset']}]" if with_dataset else text

    df["hue"] = df.apply(label, axis=1) if len(df) else pd.Series(dtype=str)
    keys = df[["method", "pairing", "dataset", "hue"]].drop_duplicates()
    m_rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    ordered = sorted(keys.itertuples(index=False),
                     key=lambda k: (m_rank.get(k.method, len(m_rank)), k.method, k.pairing != "none", k.pairing,
                                    k.dataset))
    return df, list(dict.fromkeys(k.hue for k in ordered))


def _per_seed(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One value per seed and group (mean of duplicates)."""
    return df.groupby([*keys, "seed"], dropna=False, sort=False)["value"].mean().reset_index()


def _summarise(per_seed: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """mean, sample sd (ddof=1, NaN for one seed) and n_seeds per group of a per-seed table."""
    grouped = per_seed.groupby(list(keys), dropna=False, sort=False)["value"]
    out = grouped.agg(mean="mean", sd=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="count")
    return out.reset_index()


def _palette(hue_order: Sequence[str]) -> dict[str, Any]:
    colors = sns.color_palette("tab10" if len(hue_order) <= 10 else "tab20", n_colors=max(len(hue_order), 1))
    return dict(zip(hue_order, colors, strict=False))


# ------------------------------------------------------------------------------------------------ output helpers
def _out(outputs: Outputs, fig: str, key: str) -> Path:
    if "png" not in outputs:
        raise ValueError(f"{fig}: outputs need a 'png' path (given: {sorted(outputs)})")
    path = Path(outputs[key]) if key in outputs else Path(outputs["png"]).with_suffix(f".{key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, outputs: Outputs, name: str) -> None:
    """Write PNG (150 dpi) and PDF."""
    fig.savefig(_out(outputs, name, "png"), dpi=DPI, bbox_inches="tight")
    fig.savefig(_out(outputs, name, "pdf"), bbox_inches="tight")


def _write_csv(df: pd.DataFrame, outputs: Outputs, name: str) -> None:
    df.to_csv(_out(outputs, name, "csv"), index=False)


def _title(text: str, suffix: str) -> str:
    return f"{text} — {suffix}" if suffix else text


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------------- bar-plot grid
def _bar_grid(data: pd.DataFrame, *, x: str, x_order: Sequence[str], hue_order: Sequence[str], title: str,
              ylabel: str, row: str | None = None, col: str | None = None, row_order: Sequence[str] = ("",),
              col_order: Sequence[str] = ("",), row_labels: Callable[[str], str] = str,
              col_labels: Callable[[str], str] = str, x_labels: Callable[[str], str] = str,
              hlines: Sequence[tuple[float, str]] = (), ylim: Sequence[float] | None = None) -> Figure:
    """Bars (mean ± sd over seeds) with one dot per seed; ``data`` holds one row per seed and group."""
    palette = _palette(hue_order)
    nrows, ncols = len(row_order), len(col_order)
    width = max(3.2, 0.32 * len(x_order) * max(len(hue_order), 1) + 1.2)
    fig = _new_figure(width * ncols + 2.5, 3.2 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    line_colors = sns.color_palette("dark", n_colors=max(len(hlines), 1))
    for i, r in enumerate(row_order):
        for j, c in enumerate(col_order):
            ax = axes[i][j]
            sub = data
            if row is not None:
                sub = sub[sub[row] == r]
            if col is not None:
                sub = sub[sub[col] == c]
            sub = sub[sub[x].isin(x_order) & sub["hue"].isin(hue_order)]
            if sub.empty:
                _no_data(ax)
            else:
                common = dict(data=sub, x=x, y="value", hue="hue", order=list(x_order), hue_order=list(hue_order),
                              ax=ax, legend=False)
                sns.barplot(**common, palette=palette, errorbar="sd", capsize=0.15, alpha=0.85,
                            err_kws={"linewidth": 1.0})
                sns.stripplot(**common, palette={h: "black" for h in hue_order}, dodge=True, size=3, alpha=0.8,
                              jitter=0.08)
                ax.set_xticks(range(len(x_order)), [x_labels(v) for v in x_order])
            for k, (y, _) in enumerate(hlines):
                ax.axhline(y, ls="--", lw=1.2, color=line_colors[k])
            heading = [t for t in ((row_labels(r) if row else ""), (col_labels(c) if col else "")) if t]
            ax.set_title(" · ".join(heading))
            ax.set_xlabel("")
            ax.set_ylabel(ylabel if j == 0 else "")
            if ylim is not None:
                ax.set_ylim(*ylim)
    handles = [Patch(facecolor=palette[h], label=h) for h in hue_order]
    handles += [Line2D([], [], ls="--", color=line_colors[k], label=label) for k, (_, label) in enumerate(hlines)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _probe_bars(df: pd.DataFrame, *, fig_name: str, x: str, x_order: Sequence[str], title: str, ylabel: str,
                outputs: Outputs, row: str | None = None, col: str | None = "loss",
                x_labels: Callable[[str], str] = str, hlines: Sequence[tuple[float, str]] = (),
                ylim: Sequence[float] | None = None, with_dataset: bool | None = None) -> None:
    """Shared body of the probe bar figures: per-seed aggregation, hue labels, facets by loss."""
    df, hue_order = _add_hue(df, with_dataset)
    keys = [k for k in dict.fromkeys([x, "hue", row, col]) if k is not None]
    per_seed = _per_seed(df, keys)
    row_order = _ordered(per_seed[row], LOSS_ORDER) if row else [""]
    col_order = _ordered(per_seed[col], LOSS_ORDER) if col else [""]
    fig = _bar_grid(per_seed, x=x, x_order=x_order, hue_order=hue_order, title=title, ylabel=ylabel, row=row,
                    col=col, row_order=row_order, col_order=col_order,
                    row_labels=_loss_label if row == "loss" else str, col_labels=_loss_label if col == "loss" else str,
                    x_labels=x_labels, hlines=hlines, ylim=ylim)
    _save(fig, outputs, fig_name)


def _metric_label(metric: str, head: str | None) -> str:
    label = metric.replace("_", " ")
    return f"{label} ({head} probe)" if head else label


# ------------------------------------------------------------------------------------------------ image helpers
def _load(inputs: Inputs, key: str, fig: str, split: str | None = None) -> ImageDataset:
    paths = _paths(inputs, key, fig)
    if len(paths) != 1:
        raise ValueError(f"{fig}: input {key!r} must be one dataset directory, got {len(paths)}")
    ds = load_dataset(paths[0])
    return ds.select(split) if split is not None else ds


def _scale(img: np.ndarray) -> np.ndarray:
    """uint8 / 255, uint16 / 65535, as float in [0, 1]."""
    peak = 255.0 if img.dtype == np.uint8 else 65535.0 if img.dtype == np.uint16 else 1.0
    return np.asarray(img, dtype=np.float64) / peak


def _stretch(plane: np.ndarray, lo: float = 1.0, hi: float = 99.5) -> np.ndarray:
    """Percentile contrast stretch of one (H, W) plane to [0, 1]."""
    a, b = np.percentile(plane, [lo, hi])
    if b <= a:
        b = a + 1e-12 if plane.max() <= a else plane.max()
    return np.clip((plane - a) / (b - a), 0.0, 1.0)


def _display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) -> an RGB (first three channels) or grey image for ``imshow``; uint16 is contrast-stretched."""
    x = _scale(img)
    stretch = img.dtype != np.uint8
    if x.shape[0] >= 3:
        rgb = np.stack([_stretch(c) if stretch else c for c in x[:3]], axis=-1)
        return np.clip(rgb, 0.0, 1.0), None
    plane = _stretch(x[0]) if stretch else x[0]
    return plane, "gray"


def _imshow(ax: Any, img: np.ndarray) -> None:
    shown, cmap = _display(img)
    ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------------------- figures
def fig_2a(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, n_per_class: int = 4,
           split: str | None = None, max_classes: int = 10, seed: int = 0) -> None:
    """Fig. 2a: example images, one row per class (``n_per_class`` random examples). Input: ``dataset``."""
    ds = _load(inputs, "dataset", "fig2a", split)
    labels = np.asarray(ds.labels)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, np.ndarray]] = []
    for code in [c for c in np.unique(labels) if c >= 0][:max_classes]:
        idx = np.flatnonzero(labels == code)
        pick = np.sort(rng.choice(idx, size=min(n_per_class, idx.size), replace=False))
        name = ds.class_names[code] if code < len(ds.class_names) else str(code)
        rows.append((name, pick))
    if not rows:
        if ds.n == 0:
            raise ValueError(f"fig2a: {ds.path}: dataset has no images (split={split!r})")
        rows.append(("unlabelled", np.arange(min(n_per_class, ds.n))))
    ncols = max(len(p) for _, p in rows)
    h, w = ds.hw
    cell = 1.6
    fig = _new_figure(ncols * cell * max(w / h, 0.5) + 1.0, len(rows) * cell + 0.6)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, (name, pick) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            if j < len(pick):
                _imshow(ax, np.asarray(ds.images[pick[j]]))
            else:
                ax.axis("off")
        axes[i][0].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(_title(f"{ds.meta.get('name', 'dataset')} examples", title_suffix))
    fig.tight_layout()
    _save(fig, outputs, "fig2a")


def fig_2b(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, task: str | None = None,
           experiment: str | None = None, metric: str = "singular_value", max_rank: int | None = None,
           normalise: bool = True, band: str = "minmax") -> None:
    """Fig. 2b: ranked singular values (log y), one line per method/pairing (mean over seeds, band = min-max or
    ± sd over seeds), facets by loss. Input: ``spectra``. ``task=None`` takes the only (else first) task.

    With ``normalise`` each spectrum is divided by its largest singular value before averaging.
    """
    if band not in ("minmax", "sd"):
        raise ValueError(f"fig2b: band must be 'minmax' or 'sd', got {band!r}")
    df = read_table(_paths(inputs, "spectra", "fig2b"), SPECTRA_COLUMNS, "fig2b")
    df = _filter(df, "fig2b", experiment=experiment, metric=metric)
    if task is None:
        task = sorted(df["task"].unique())[0]
    df = _filter(df, "fig2b", experiment=experiment, metric=metric, task=task)
    df = df.dropna(subset=["rank", "value"])
    df, hue_order = _add_hue(df)
    keys = ["loss", "hue", "seed"]
    if normalise:
        peak = df.groupby(keys)["value"].transform("max")
        df["value"] = np.where(peak > 0, df["value"] / peak.where(peak > 0, 1.0), np.nan)
    if max_rank is not None:
        df = df[df["rank"] <= max_rank]
    curves = df.groupby(["loss", "hue", "rank"])["value"].agg(["mean", "min", "max", "std"]).reset_index()
    losses = _ordered(curves["loss"], LOSS_ORDER) or [""]
    palette = _palette(hue_order)
    fig = _new_figure(4.2 * len(losses) + 2.5, 3.6)
    axes = fig.subplots(1, len(losses), squeeze=False, sharey=True)[0]
    for ax, loss in zip(axes, losses, strict=True):
        sub = curves[curves["loss"] == loss]
        if sub.empty or not (sub["mean"] > 0).any():
            _no_data(ax)
            continue
        for hue in hue_order:
            line = sub[sub["hue"] == hue].sort_values("rank")
            if line.empty:
                continue
            lo, hi = (line["min"], line["max"]) if band == "minmax" else (
                line["mean"] - line["std"].fillna(0), line["mean"] + line["std"].fillna(0))
            ax.plot(line["rank"], line["mean"], color=palette[hue], lw=1.5)
            ax.fill_between(line["rank"], lo.clip(lower=1e-12), hi, color=palette[hue], alpha=0.2, lw=0)
        ax.set_yscale("log", nonpositive="mask")
        ax.set_title(_loss_label(loss))
        ax.set_xlabel("rank")
    axes[0].set_ylabel("normalised singular value" if normalise else "singular value")
    handles = [Patch(facecolor=palette[h], label=h) for h in hue_order]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(_title(f"Ranked singular values ({task})", title_suffix))
    fig.tight_layout()
    _save(fig, outputs, "fig2b")


def fig_2c(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, experiment: str | None = None,
           task: str | None = None, metric: str = "accuracy", variants: Sequence[str] = ("rNONE", "rMNIST", "rCIFAR"),
           head: str | None = None, ylim: Sequence[float] | None = None,
           ceiling_labels: Mapping[str, str] | None = None) -> None:
    """Fig. 2c: probe accuracy on rNONE/rMNIST/rCIFAR per method/pairing, facets by loss; dashed lines for the
    mean of each ceiling kind when the optional ``ceilings`` input is given. Input: ``probes`` [+ ``ceilings``]."""
    df = read_table(_paths(inputs, "probes", "fig2c"), TIDY_COLUMNS, "fig2c")
    df = _filter(df, "fig2c", experiment=experiment, task=task, metric=metric, variant=list(variants))
    df, head = _select_head(df, head, "fig2c")
    hlines: list[tuple[float, str]] = []
    ceiling_paths = _paths(inputs, "ceilings", "fig2c", required=False)
    if ceiling_paths:
        ceil = read_table(ceiling_paths, CEILING_COLUMNS, "fig2c")
        ceil = ceil[(ceil["metric"] == metric) & ((ceil["experiment"] == experiment) if experiment else True)]
        labels = {**CEILING_LABELS, **(ceiling_labels or {})}
        for kind in _ordered(ceil["kind"], CEILING_KINDS):
            per_seed = ceil[ceil["kind"] == kind].groupby("seed")["value"].mean()
            if per_seed.notna().any():
                hlines.append((float(per_seed.mean()), f"{labels.get(kind, kind)} ({per_seed.mean():.3f})"))
    x_order = [v for v in variants if v in set(df["variant"])]
    _probe_bars(df, fig_name="fig2c", x="variant", x_order=x_order, ylabel=_metric_label(metric, head),
                title=_title("MNIST-CIFAR: probe accuracy on randomised inputs", title_suffix), outputs=outputs,
                hlines=hlines, ylim=ylim)


def _hyperstack(inputs: Inputs, outputs: Outputs, fig_name: str, title: str, title_suffix: str, *, index: int,
                split: str | None, channels: Sequence[str] | None, ncols: int | None, cmap: str) -> None:
    ds = _load(inputs, "dataset", fig_name, split)
    if not 0 <= index < ds.n:
        raise ValueError(f"{fig_name}: {ds.path}: index {index} out of range for {ds.n} images (split={split!r})")
    names = ds.channel_names
    chosen = list(channels) if channels is not None else names
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"{fig_name}: {ds.path}/meta.json: unknown channel(s) {unknown}; have {names}")
    img = _scale(np.asarray(ds.images[index]))
    ncols = ncols or min(len(chosen), 6)
    nrows = math.ceil(len(chosen) / ncols)
    fig = _new_figure(1.8 * ncols, 1.9 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(chosen):
            ax.axis("off")
            continue
        ax.imshow(_stretch(img[names.index(chosen[k])]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(chosen[k], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    label = int(ds.labels[index])
    cls = ds.class_names[label] if 0 <= label < len(ds.class_names) else "unlabelled"
    fig.suptitle(_title(f"{title} ({ds.meta.get('name', '')}, image {index}, class {cls})", title_suffix))
    fig.tight_layout()
    _save(fig, outputs, fig_name)


def fig_3a(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, index: int = 0, split: str | None = None,
           channels: Sequence[str] | None = None, ncols: int | None = None, cmap: str = "magma") -> None:
    """Fig. 3a: one multiplex single-cell hyperstack, one panel per channel (percentile-stretched).
    Input: ``dataset``."""
    _hyperstack(inputs, outputs, "fig3a", "Multiplex immunofluorescence hyperstack", title_suffix,
                index=index, split=split, channels=channels, ncols=ncols, cmap=cmap)


def fig_3b(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, experiment: str | None = None,
           tasks: Sequence[str] = ("cell_types", "t_cells"), metric: str = "accuracy", head: str | None = None,
           task_labels: Mapping[str, str] | None = None, ylim: Sequence[float] | None = None) -> None:
    """Fig. 3b: Orion-like probe accuracy per task, method/pairing, facets by loss. Input: ``probes``."""
    df = read_table(_paths(inputs, "probes", "fig3b"), TIDY_COLUMNS, "fig3b")
    df = _filter(df, "fig3b", experiment=experiment, task=list(tasks), metric=metric)
    df, head = _select_head(df, head, "fig3b")
    labels = {"cell_types": "Cell Types", "t_cells": "T Cells", **(task_labels or {})}
    x_order = [t for t in tasks if t in set(df["task"])]
    _probe_bars(df, fig_name="fig3b", x="task", x_order=x_order, ylabel=_metric_label(metric, head),
                title=_title("Spatial proteomics: classification accuracy", title_suffix), outputs=outputs,
                x_labels=lambda t: labels.get(t, t), ylim=ylim)


def fig_3c(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, experiment: str | None = None,
           task: str | None = None, metric: str = "mean_abs_correlation",
           methods: Sequence[str] = ("baseline", "splicer")) -> None:
    """Fig. 3c: mean |correlation| between representation elements and marker intensities, x = loss,
    hue = method/pairing, facets by task. Input: ``correlations``."""
    df = read_table(_paths(inputs, "correlations", "fig3c"), TIDY_COLUMNS, "fig3c")
    df = _filter(df, "fig3c", experiment=experiment, task=task, metric=metric, method=list(methods))
    x_order = _ordered(df["loss"], LOSS_ORDER)
    tasks = _ordered(df["task"])
    _probe_bars(df, fig_name="fig3c", x="loss", x_order=x_order, ylabel="mean |correlation|", outputs=outputs,
                title=_title("Correlation of representation with marker intensities", title_suffix),
                col="task" if len(tasks) > 1 else None, x_labels=_loss_label)


def fig_3d(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, index: int = 0, split: str | None = None,
           channels: Sequence[str] | None = None, ncols: int | None = None, cmap: str = "viridis") -> None:
    """Fig. 3d: one hyperspectral image, one panel per band with its name. Input: ``dataset``."""
    _hyperstack(inputs, outputs, "fig3d", "Hyperspectral hyperstack", title_suffix,
                index=index, split=split, channels=channels, ncols=ncols, cmap=cmap)


def fig_3e(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, experiment: str | None = None,
           task: str | None = None, variants: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
           metric: str = "accuracy", head: str | None = None, ylim: Sequence[float] | None = None) -> None:
    """Fig. 3e: accuracy per variant (e.g. bands13 vs rgb) and method/pairing; rows = pretraining dataset
    (``dataset`` column), columns = loss. Input: ``probes``."""
    df = read_table(_paths(inputs, "probes", "fig3e"), TIDY_COLUMNS, "fig3e")
    df = _filter(df, "fig3e", experiment=experiment, task=task, metric=metric,
                 variant=list(variants) if variants is not None else None,
                 dataset=list(datasets) if datasets is not None else None)
    df, head = _select_head(df, head, "fig3e")
    x_order = _ordered(df["variant"], variants or ("bands13", "rgb"))
    _probe_bars(df, fig_name="fig3e", x="variant", x_order=x_order, ylabel=_metric_label(metric, head),
                title=_title("Hyperspectral land-use classification", title_suffix), outputs=outputs,
                row="dataset", col="loss", ylim=ylim, with_dataset=False)


def fig_4a(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, n_examples: int = 2, mask: int | str = 0,
           complement_name: str = "background", row_labels: Sequence[str] | None = None, split: str | None = None,
           min_fraction: float = 0.02) -> None:
    """Fig. 4a: rows of (original, ROI = image * mask, complement = image * (1 - mask)) for each segmented
    dataset; examples are the first whose mask covers between ``min_fraction`` and 1 - ``min_fraction``.
    Input: ``datasets`` (one or more directories with ``masks.npy``)."""
    paths = _paths(inputs, "datasets", "fig4a")
    if row_labels is not None and len(row_labels) != len(paths):
        raise ValueError(f"fig4a: {len(row_labels)} row_labels for {len(paths)} datasets")
    rows: list[tuple[str, np.ndarray, np.ndarray, str]] = []
    for k, path in enumerate(paths):
        ds = load_dataset(path)
        if split is not None:
            ds = ds.select(split)
        if ds.masks is None:
            raise ValueError(f"fig4a: {Path(path).absolute() / 'masks.npy'}: dataset has no masks")
        if isinstance(mask, str):
            if mask not in ds.mask_names:
                raise ValueError(f"fig4a: {path}/meta.json: no mask named {mask!r}; have {ds.mask_names}")
            m_idx = ds.mask_names.index(mask)
        else:
            m_idx = mask
            if not 0 <= m_idx < len(ds.mask_names):
                raise ValueError(f"fig4a: {path}/meta.json: mask index {m_idx} out of range {ds.mask_names}")
        chosen: list[int] = []
        for i in range(ds.n):
            frac = float(np.asarray(ds.masks[i, m_idx]).mean())
            if min_fraction <= frac <= 1 - min_fraction:
                chosen.append(i)
            if len(chosen) == n_examples:
                break
        chosen = chosen or list(range(min(n_examples, ds.n)))
        label = row_labels[k] if row_labels is not None else str(ds.meta.get("name", Path(path).name))
        for i in chosen:
            rows.append((label, np.asarray(ds.images[i]), np.asarray(ds.masks[i, m_idx]), ds.mask_names[m_idx]))
    if not rows:
        raise ValueError(f"fig4a: no images in {', '.join(map(str, paths))} (split={split!r})")
    fig = _new_figure(3 * 1.9 + 1.2, 1.9 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, (label, img, m, roi_name) in enumerate(rows):
        keep = m.astype(img.dtype)
        panels = (img, img * keep[None], img * (1 - keep)[None])
        titles = ("Original", roi_name.capitalize(), complement_name.capitalize())
        for c in range(3):
            _imshow(axes[r][c], panels[c])
            axes[r][c].set_title(titles[c], fontsize=9)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(_title("Sample segmentations", title_suffix))
    fig.tight_layout()
    _save(fig, outputs, "fig4a")


# ------------------------------------------------------------------------------------------------------ tables
def _render_table(cells: list[list[str]], header: list[str], title: str, bold: list[list[bool]] | None = None,
                  col_widths: Sequence[float] | None = None) -> Figure:
    """A matplotlib table figure (header row shaded; ``bold`` marks cells in bold) sized to its content."""
    ncols = len(header)
    cells = cells or [[""] * ncols]
    widths = list(col_widths) if col_widths is not None else [
        max([len(header[j]), *(len(row[j]) for row in cells)]) * 0.075 + 0.25 for j in range(ncols)]
    row_h, title_h = 0.26, 0.45
    height = row_h * (len(cells) + 1) + title_h
    fig = _new_figure(max(sum(widths), 4.0), height)
    ax = fig.add_axes((0.01, 0.01, 0.98, (height - title_h) / height - 0.01))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=header, cellLoc="center", bbox=(0.0, 0.0, 1.0, 1.0),
                     colWidths=[w / sum(widths) for w in widths])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, c), cell in table.get_celld().items():
        if r == 0:
            cell.set_facecolor("0.88")
            cell.set_text_props(weight="bold")
        elif bold is not None and r - 1 < len(bold) and bold[r - 1][c]:
            cell.set_text_props(weight="bold")
    ax.set_title(title, fontsize=10)
    return fig


def _fmt(mean: float, sd: float, decimals: int) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.{decimals}f}" if pd.isna(sd) else f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def _method_table(df: pd.DataFrame, *, fig_name: str, title: str, outputs: Outputs, methods: Sequence[str] | None,
                  task_order: Sequence[str] | None, task_labels: Mapping[str, str] | None, decimals: int,
                  metric: str, head: str | None) -> None:
    """Rows (loss, method, pairing) x columns task: mean ± sd over seeds; best mean per loss and task in bold."""
    shared = df.groupby("task")["experiment"].nunique()
    df = df.assign(column=[f"{e}:{t}" if shared[t] > 1 else t for e, t in zip(df["experiment"], df["task"],
                                                                                 strict=True)])
    per_seed = _per_seed(df, ["loss", "method", "pairing", "experiment", "task", "column"])
    agg = _summarise(per_seed, ["loss", "method", "pairing", "experiment", "task", "column"])
    agg.insert(5, "metric", metric)
    agg.insert(6, "head", head or "")
    agg["cell"] = [_fmt(m, s, decimals) for m, s in zip(agg["mean"], agg["sd"], strict=True)]
    losses = _ordered(agg["loss"], LOSS_ORDER)
    method_order = _ordered(agg["method"], tuple(methods) if methods is not None else METHOD_ORDER)
    columns = _ordered(agg["column"], task_order or ())
    # a method keeps one row per loss unless it has several pairings within one column (then one per pairing);
    # e.g. SpliCER nuclei+background on NCT and lungs+background on Pneumonia share a row, as in the paper
    split = agg.groupby(["method", "loss", "column"])["pairing"].nunique().groupby("method").max() > 1
    agg["row_pairing"] = [p if split[m] else "" for m, p in zip(agg["method"], agg["pairing"], strict=True)]
    rows = agg[["loss", "method", "row_pairing"]].drop_duplicates()
    rows = rows.assign(_l=rows["loss"].map(losses.index), _m=rows["method"].map(method_order.index),
                       _n=rows["row_pairing"] != "none")
    rows = rows.sort_values(["_l", "_m", "_n", "row_pairing"])
    labels = {**(task_labels or {})}
    header = ["Loss", "Method", *[labels.get(c, c) for c in columns]]
    cells, bold = [], []
    best = agg.groupby(["loss", "column"])["mean"].max()
    for loss, method, pairing in rows[["loss", "method", "row_pairing"]].itertuples(index=False):
        name = _method_label(method) + (f" ({pairing})" if pairing not in ("none", "") else "")
        line, marks = [_loss_label(loss), name], [False, False]
        for col in columns:
            hit = agg[(agg["loss"] == loss) & (agg["method"] == method) & (agg["row_pairing"] == pairing)
                      & (agg["column"] == col)]
            line.append(hit["cell"].iloc[0] if len(hit) else "—")
            marks.append(bool(len(hit)) and hit["mean"].iloc[0] == best.get((loss, col), np.nan))
        cells.append(line)
        bold.append(marks)
    fig = _render_table(cells, header, title, bold)
    _save(fig, outputs, fig_name)
    sort_key = agg.assign(_l=agg["loss"].map(losses.index), _m=agg["method"].map(method_order.index),
                          _c=agg["column"].map(columns.index))
    out = sort_key.sort_values(["_l", "_m", "_c", "pairing"]).drop(columns=["_l", "_m", "_c", "column", "row_pairing"])
    _write_csv(out, outputs, fig_name)


def fig_4b(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, tasks: Sequence[str] | None = None,
           methods: Sequence[str] = ("splicer", "baseline"), pairings: Sequence[str] | None = None,
           experiment: str | Sequence[str] | None = None, metric: str = "accuracy", head: str | None = None,
           task_labels: Mapping[str, str] | None = None, decimals: int = 4) -> None:
    """Fig. 4b table: SpliCER vs Baseline accuracy per loss and task (mean ± sd over seeds); PNG/PDF + CSV.
    Input: ``probes`` (one or several CSVs, e.g. histology and x-ray)."""
    df = read_table(_paths(inputs, "probes", "fig4b"), TIDY_COLUMNS, "fig4b")
    exp = [experiment] if isinstance(experiment, str) else list(experiment) if experiment is not None else None
    df = _filter(df, "fig4b", experiment=exp, task=list(tasks) if tasks is not None else None, metric=metric,
                 method=list(methods), pairing=list(pairings) if pairings is not None else None)
    df, head = _select_head(df, head, "fig4b")
    _method_table(df, fig_name="fig4b", title=_title(f"Classification {_metric_label(metric, head)}", title_suffix),
                  outputs=outputs, methods=methods, task_order=tasks, task_labels=task_labels, decimals=decimals,
                  metric=metric, head=head)


def table_s2(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, tasks: Sequence[str] | None = None,
             methods: Sequence[str] | None = None, pairings: Sequence[str] | None = None,
             experiment: str | Sequence[str] | None = None, metric: str = "accuracy", head: str | None = None,
             task_labels: Mapping[str, str] | None = None, decimals: int = 4) -> None:
    """Table S2: accuracy per pairing (e.g. nuclei vs nuclei+background), method and loss, per task; PNG/PDF +
    CSV. Input: ``probes``."""
    df = read_table(_paths(inputs, "probes", "tableS2"), TIDY_COLUMNS, "tableS2")
    exp = [experiment] if isinstance(experiment, str) else list(experiment) if experiment is not None else None
    df = _filter(df, "tableS2", experiment=exp, task=list(tasks) if tasks is not None else None, metric=metric,
                 method=list(methods) if methods is not None else None,
                 pairing=list(pairings) if pairings is not None else None)
    df, head = _select_head(df, head, "tableS2")
    _method_table(df, fig_name="tableS2", title=_title(f"{_metric_label(metric, head)} by pairing", title_suffix),
                  outputs=outputs, methods=methods, task_order=tasks, task_labels=task_labels, decimals=decimals,
                  metric=metric, head=head)


def fig_s1a(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, mode: str = "image_mean",
            split: str | None = None, max_images: int = 2000, seed: int = 0, log: bool = False,
            batch: int = 256) -> None:
    """Fig. S1a: per-channel variance, sorted descending, of intensities scaled to [0, 1] (uint8/255,
    uint16/65535). ``mode="image_mean"``: variance over images of each image's mean intensity (default);
    ``mode="pixel"``: variance over all pixels. At most ``max_images`` random images. Input: ``dataset``;
    also writes ``outputs["csv"]`` (channel, variance) when given."""
    if mode not in ("image_mean", "pixel"):
        raise ValueError(f"figS1a: mode must be 'image_mean' or 'pixel', got {mode!r}")
    ds = _load(inputs, "dataset", "figS1a", split)
    if ds.n == 0:
        raise ValueError(f"figS1a: {ds.path}: dataset has no images (split={split!r})")
    idx = np.arange(ds.n)
    if ds.n > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(ds.n, size=max_images, replace=False))
    c = ds.channels
    means, total, total_sq, count = [], np.zeros(c), np.zeros(c), 0
    for start in range(0, idx.size, batch):
        x = _scale(np.asarray(ds.images[idx[start:start + batch]]))
        if mode == "image_mean":
            means.append(x.mean(axis=(2, 3)))
        else:
            total += x.sum(axis=(0, 2, 3))
            total_sq += np.square(x).sum(axis=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
    if mode == "image_mean":
        var = np.concatenate(means).var(axis=0)
    else:
        mu = total / count
        var = np.maximum(total_sq / count - mu**2, 0.0)
    table = pd.DataFrame({"channel": ds.channel_names, "variance": var, "mode": mode, "n_images": idx.size})
    table = table.sort_values("variance", ascending=False, kind="stable").reset_index(drop=True)
    fig = _new_figure(max(4.0, 0.35 * c + 1.5), 3.6)
    ax = fig.add_subplot(111)
    sns.barplot(data=table, x="channel", y="variance", color=sns.color_palette("tab10")[0], ax=ax)
    ax.tick_params(axis="x", rotation=90)
    if log and (table["variance"] > 0).any():
        ax.set_yscale("log", nonpositive="mask")
    what = "per-image mean intensity" if mode == "image_mean" else "pixel intensity"
    ax.set_ylabel(f"variance of {what}")
    ax.set_xlabel("")
    ax.set_title(_title(f"Per-channel variance ({ds.meta.get('name', '')})", title_suffix))
    fig.tight_layout()
    _save(fig, outputs, "figS1a")
    if "csv" in outputs:
        _write_csv(table, outputs, "figS1a")


# --------------------------------------------------------------------------------------------------- scorecard
KeyLike = str | tuple
MappingValue = Mapping[str, Any] | tuple


def _norm_key(key: KeyLike) -> tuple[str | None, str | None, str | None]:
    parts: list[Any] = key.split("/") if isinstance(key, str) else list(key)
    parts = [None if p in (None, "", "*", "None") else str(p) for p in parts][:3]
    parts += [None] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def _mapped(mapping: Mapping[KeyLike, MappingValue], experiment: str, task: str, variant: str | None
            ) -> dict[str, Any]:
    """Our-table filter overrides for a paper (experiment, task, variant) key; most specific key wins."""
    norm = {_norm_key(k): v for k, v in mapping.items()}
    for key in ((experiment, task, variant), (experiment, task, None), (experiment, None, None)):
        if key in norm:
            value = norm[key]
            if isinstance(value, Mapping):
                return dict(value)
            return {k: v for k, v in zip(("experiment", "task", "variant"), value, strict=False)}
    return {}


def _scorecard_rows(entry: Mapping[str, Any], probes: pd.DataFrame, ceilings: pd.DataFrame | None,
                    mapping: Mapping[KeyLike, MappingValue], head: str | None) -> list[dict[str, Any]]:
    """Our mean/sd/n for one paper number: one row per value of the fields the paper leaves open."""
    base = {k: entry.get(k) for k in ("figure", "experiment", "method", "loss", "pairing", "task", "variant",
                                      "metric", "paper_value")}
    filters: dict[str, Any] = {k: entry.get(k) for k in ("experiment", "task", "variant", "method", "loss",
                                                           "pairing", "metric")}
    filters.update(_mapped(mapping, entry["experiment"], entry["task"], entry.get("variant")))
    empty = {"ours_mean": np.nan, "ours_sd": np.nan, "n_seeds": 0}
    if entry["method"] in CEILING_KINDS:
        if ceilings is None:
            return [{**base, **empty}]
        sel = ceilings[(ceilings["kind"] == entry["method"]) & (ceilings["metric"] == filters["metric"])]
        if filters.get("experiment") is not None:
            sel = sel[sel["experiment"] == filters["experiment"]]
        per_seed = sel.dropna(subset=["value"]).groupby("seed")["value"].mean()
        if per_seed.empty:
            return [{**base, **empty}]
        sd = per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan
        return [{**base, "ours_mean": per_seed.mean(), "ours_sd": sd, "n_seeds": len(per_seed)}]
    sel = probes
    for key, val in filters.items():
        if val is None:
            continue
        if key not in sel.columns:
            raise ValueError(f"scorecard: {', '.join(probes.attrs.get('files', []))}: missing column {key!r} "
                             f"used by the mapping for {entry['experiment']}/{entry['task']}")
        sel = sel[sel[key].isin([str(v) for v in val]) if isinstance(val, list | tuple) else sel[key] == str(val)]
    if "head" in sel.columns and len(sel):
        use = head if head is not None else ("linear" if "linear" in set(sel["head"]) else sorted(sel["head"])[0])
        sel = sel[sel["head"] == use]
    sel = sel.dropna(subset=["value"])
    if sel.empty:
        return [{**base, **empty}]
    open_keys = [k for k in ("loss", "pairing", "variant") if filters.get(k) is None]
    if sel["dataset"].nunique() > 1 and filters.get("dataset") is None:
        open_keys.append("dataset")
    rows = []
    groups = sel.groupby(open_keys, sort=False) if open_keys else [((), sel)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        found = dict(zip(open_keys, values, strict=True))
        per_seed = group.groupby("seed")["value"].mean()
        row = {**base, **{k: v for k, v in found.items() if k != "dataset"},
               "ours_mean": per_seed.mean(), "ours_sd": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan,
               "n_seeds": len(per_seed)}
        if "dataset" in found:
            row["experiment"] = f"{base['experiment']} (dataset={found['dataset']})"
        rows.append(row)
    loss_rank = {loss: i for i, loss in enumerate(LOSS_ORDER)}
    return sorted(rows, key=lambda r: (loss_rank.get(r["loss"], 9), str(r["loss"]), str(r["pairing"]),
                                       str(r["variant"])))


def scorecard(inputs: Inputs, outputs: Outputs, title_suffix: str = "", *, demo: bool = False,
              mapping: Mapping[KeyLike, MappingValue] | None = None, head: str | None = None,
              numbers: Sequence[Mapping[str, Any]] | None = None, data_label: str | None = None,
              decimals: int = 3) -> None:
    """Scorecard: each paper number (:mod:`splicer.paper_numbers`) beside ours (mean ± sd over seeds).

    Inputs: ``probes`` (one or more tidy CSVs), optional ``ceilings``. ``mapping`` maps a paper key
    (experiment, task, variant) -- a tuple or "experiment/task/variant" string, trailing parts optional -- to
    filters on our tables: a tuple (experiment, task, variant) or a dict of column -> value (any tidy column,
    e.g. dataset, pairing; None drops that filter). Default identity. Paper fields left None (e.g. the loss of
    Fig. 2c) give one row per value found in ours. ``demo`` labels the title and every CSV row with
    :data:`DEMO_LABEL`. Writes PNG/PDF and a CSV with :data:`SCORECARD_COLUMNS`.
    """
    probes = read_table(_paths(inputs, "probes", "scorecard"), TIDY_COLUMNS, "scorecard")
    ceiling_paths = _paths(inputs, "ceilings", "scorecard", required=False)
    ceilings = read_table(ceiling_paths, CEILING_COLUMNS, "scorecard") if ceiling_paths else None
    label = data_label or (DEMO_LABEL if demo else REAL_LABEL)
    rows: list[dict[str, Any]] = []
    for entry in numbers if numbers is not None else PAPER_NUMBERS:
        rows.extend(_scorecard_rows(entry, probes, ceilings, mapping or {}, head))
    table = pd.DataFrame(rows, columns=[c for c in SCORECARD_COLUMNS if c != "data"])
    table = table.astype({"n_seeds": int})
    for col in ("loss", "pairing", "variant", "task", "method"):
        table[col] = table[col].fillna("")
    table["data"] = label
    _write_csv(table[list(SCORECARD_COLUMNS)], outputs, "scorecard")
    header = ["Fig.", "Experiment", "Task", "Variant", "Method", "Loss", "Pairing", "Paper", "Ours (mean ± sd)",
              "n", "Δ"]
    cells = []
    for r in table.itertuples(index=False):
        delta = r.ours_mean - r.paper_value if not pd.isna(r.ours_mean) else np.nan
        method = CEILING_LABELS.get(r.method, _method_label(r.method))
        cells.append([r.figure, r.experiment, r.task, r.variant, method, _loss_label(r.loss), r.pairing,
                      f"{r.paper_value:.4g}",
                      _fmt(r.ours_mean, r.ours_sd, decimals), str(r.n_seeds),
                      "—" if pd.isna(delta) else f"{delta:+.{decimals}f}"])
    title = "Scorecard: paper vs ours" + (f" — {label}" if demo or data_label else "")
    fig = _render_table(cells, header, _title(title, title_suffix))
    _save(fig, outputs, "scorecard")


# ---------------------------------------------------------------------------------------------------- registry
FigureFn = Callable[..., None]
FIGURES: dict[str, FigureFn] = {
    "fig2a": fig_2a,
    "fig2b": fig_2b,
    "fig2c": fig_2c,
    "fig3a": fig_3a,
    "fig3b": fig_3b,
    "fig3c": fig_3c,
    "fig3d": fig_3d,
    "fig3e": fig_3e,
    "fig4a": fig_4a,
    "fig4b": fig_4b,
    "figS1a": fig_s1a,
    "tableS2": table_s2,
    "scorecard": scorecard,
}
#: input roles per figure: (required, optional)
FIGURE_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fig2a": (("dataset",), ()),
    "fig2b": (("spectra",), ()),
    "fig2c": (("probes",), ("ceilings",)),
    "fig3a": (("dataset",), ()),
    "fig3b": (("probes",), ()),
    "fig3c": (("correlations",), ()),
    "fig3d": (("dataset",), ()),
    "fig3e": (("probes",), ()),
    "fig4a": (("datasets",), ()),
    "fig4b": (("probes",), ()),
    "figS1a": (("dataset",), ()),
    "tableS2": (("probes",), ()),
    "scorecard": (("probes",), ("ceilings",)),
}
#: figures that also write the aggregated table as CSV (``outputs["csv"]``)
TABLES = ("fig4b", "tableS2", "scorecard")


def make_figure(name: str, inputs: Inputs, outputs: Outputs, **opts: Any) -> None:
    """Draw figure ``name`` after checking the name, the input roles and the option names (ValueError)."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known figures: {', '.join(FIGURES)}")
    required, optional = FIGURE_INPUTS[name]
    missing = [k for k in required if inputs.get(k) is None]
    if missing:
        raise ValueError(f"{name}: missing input(s) {missing} (required {list(required)}, optional "
                         f"{list(optional)}; given {sorted(inputs)})")
    unknown_inputs = sorted(set(inputs) - set(required) - set(optional))
    if unknown_inputs:
        raise ValueError(f"{name}: unknown input(s) {unknown_inputs} (required {list(required)}, optional "
                         f"{list(optional)})")
    if "png" not in outputs:
        raise ValueError(f"{name}: outputs need a 'png' path (given: {sorted(outputs)})")
    fn = FIGURES[name]
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in ("inputs", "outputs")]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {allowed}")
    fn(inputs, outputs, **opts)
