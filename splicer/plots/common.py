"""Shared helpers of the figures: reading and filtering tidy tables, bar grids, tables, image display.

Tidy tables have the columns of :mod:`splicer.pipeline.tables` (:data:`TIDY_COLUMNS`; spectra add ``rank``,
probes may add ``head``). Every value is first averaged per seed; figures show mean ± sd (sample sd, ddof=1) over
seeds with one dot per seed. A missing column raises ``ValueError`` naming the file and the column; a filter that
leaves no rows raises ``ValueError`` naming the files and the filter. Figures are built on
:class:`matplotlib.figure.Figure` (Agg canvas), never through pyplot.
"""

from __future__ import annotations

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

from splicer.data.format import ImageDataset, load_dataset, to_unit
from splicer.pipeline.tables import CEILING_COLUMNS, CEILING_KINDS, PROBE_COLUMNS, SPECTRA_COLUMNS, TIDY_COLUMNS
from splicer.registry import LOSSES, METHODS

__all__ = [
    "CEILING_COLUMNS",
    "CEILING_KINDS",
    "CEILING_LABELS",
    "DPI",
    "LOSS_ORDER",
    "METHOD_ORDER",
    "NUMERIC_COLUMNS",
    "PROBE_COLUMNS",
    "SPECTRA_COLUMNS",
    "TIDY_COLUMNS",
    "Inputs",
    "Outputs",
    "PathLike",
    "add_hue",
    "bar_grid",
    "contrast_stretch",
    "displayable",
    "filter_rows",
    "fmt_mean_sd",
    "hue_palette",
    "in_order",
    "input_paths",
    "load_input",
    "loss_label",
    "method_label",
    "metric_label",
    "new_figure",
    "no_data",
    "output_path",
    "probe_bars",
    "read_table",
    "render_table",
    "save_figure",
    "seed_means",
    "seed_summary",
    "select_head",
    "show_image",
    "titled",
    "unit_scale",
    "write_csv",
]

PathLike = str | os.PathLike
Inputs = Mapping[str, PathLike | Sequence[PathLike] | None]
Outputs = Mapping[str, PathLike]

NUMERIC_COLUMNS = ("value", "rank")
METHOD_ORDER = tuple(METHODS)
LOSS_ORDER = tuple(LOSSES)
CEILING_LABELS = {
    "supervised_complex_only": "supervised, complex part only",
    "ssl_complex_only": "SSL, complex part only",
}
DPI = 150


# ------------------------------------------------------------------------------------------------- input helpers
def input_paths(inputs: Inputs, key: str, fig: str, required: bool = True) -> list[Path]:
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
            raise ValueError(
                f"{fig}: {path}: missing column(s) {', '.join(map(repr, missing))} (has {list(df.columns)})"
            )
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


def filter_rows(df: pd.DataFrame, fig: str, **filters: Any) -> pd.DataFrame:
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
        raise ValueError(
            f"{fig}: no rows in {files} match filter {_describe(filters)} ({len(df)} rows before filtering)"
        )
    return out


def select_head(df: pd.DataFrame, head: str | None, fig: str) -> tuple[pd.DataFrame, str | None]:
    """Keep one probe head: ``head`` if given, else the only one, else ``linear``, else the first (sorted)."""
    if "head" not in df.columns:
        if head is not None:
            raise ValueError(
                f"{fig}: {', '.join(df.attrs.get('files', []))}: missing column 'head' (option head={head!r})"
            )
        return df, None
    if head is None:
        heads = sorted(df["head"].unique())
        head = "linear" if "linear" in heads else heads[0] if heads else None
    return filter_rows(df, fig, head=head), head


def in_order(values: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    """Unique values, those in ``order`` first (in that order), the rest sorted ("none" first)."""
    uniq = list(dict.fromkeys(str(v) for v in values))
    first = [v for v in order if v in uniq]
    rest = sorted((v for v in uniq if v not in first), key=lambda v: (v != "none", v))
    return first + rest


def method_label(method: str) -> str:
    return METHODS[method].label if method in METHODS else method


def loss_label(loss: str) -> str:
    return LOSSES[loss].label if loss in LOSSES else loss


def add_hue(df: pd.DataFrame, with_dataset: bool | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Add a ``hue`` column "Method (pairing)" (+ " [dataset]" when several datasets) and its order."""
    df = df.copy()
    if with_dataset is None:
        with_dataset = df["dataset"].nunique() > 1
    multi_pairing = df.groupby("method")["pairing"].nunique()

    def label(row: pd.Series) -> str:
        text = method_label(row["method"])
        if row["pairing"] not in ("none", "") or multi_pairing.get(row["method"], 1) > 1:
            text += f" ({row['pairing']})"
        return f"{text} [{row['dataset']}]" if with_dataset else text

    df["hue"] = df.apply(label, axis=1) if len(df) else pd.Series(dtype=str)
    keys = df[["method", "pairing", "dataset", "hue"]].drop_duplicates()
    m_rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    ordered = sorted(
        keys.itertuples(index=False),
        key=lambda k: (m_rank.get(k.method, len(m_rank)), k.method, k.pairing != "none", k.pairing, k.dataset),
    )
    return df, list(dict.fromkeys(k.hue for k in ordered))


def seed_means(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One value per seed and group (mean of duplicates)."""
    return df.groupby([*keys, "seed"], dropna=False, sort=False)["value"].mean().reset_index()


def seed_summary(per_seed: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """mean, sample sd (ddof=1, NaN for one seed) and n_seeds per group of a per-seed table."""
    grouped = per_seed.groupby(list(keys), dropna=False, sort=False)["value"]
    out = grouped.agg(mean="mean", sd=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_seeds="count")
    return out.reset_index()


def hue_palette(hue_order: Sequence[str]) -> dict[str, Any]:
    colors = sns.color_palette("tab10" if len(hue_order) <= 10 else "tab20", n_colors=max(len(hue_order), 1))
    return dict(zip(hue_order, colors, strict=False))


# ------------------------------------------------------------------------------------------------ output helpers
def output_path(outputs: Outputs, fig: str, key: str) -> Path:
    if "png" not in outputs:
        raise ValueError(f"{fig}: outputs need a 'png' path (given: {sorted(outputs)})")
    path = Path(outputs[key]) if key in outputs else Path(outputs["png"]).with_suffix(f".{key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, outputs: Outputs, name: str) -> None:
    """Write PNG (150 dpi) and PDF."""
    fig.savefig(output_path(outputs, name, "png"), dpi=DPI, bbox_inches="tight")
    fig.savefig(output_path(outputs, name, "pdf"), bbox_inches="tight")


def write_csv(df: pd.DataFrame, outputs: Outputs, name: str) -> None:
    df.to_csv(output_path(outputs, name, "csv"), index=False)


def titled(text: str, suffix: str) -> str:
    return f"{text} — {suffix}" if suffix else text


def no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------------- bar-plot grid
def bar_grid(
    data: pd.DataFrame,
    *,
    x: str,
    x_order: Sequence[str],
    hue_order: Sequence[str],
    title: str,
    ylabel: str,
    row: str | None = None,
    col: str | None = None,
    row_order: Sequence[str] = ("",),
    col_order: Sequence[str] = ("",),
    row_labels: Callable[[str], str] = str,
    col_labels: Callable[[str], str] = str,
    x_labels: Callable[[str], str] = str,
    hlines: Sequence[tuple[float, str]] = (),
    ylim: Sequence[float] | None = None,
) -> Figure:
    """Bars (mean ± sd over seeds) with one dot per seed; ``data`` holds one row per seed and group."""
    palette = hue_palette(hue_order)
    nrows, ncols = len(row_order), len(col_order)
    width = max(3.2, 0.32 * len(x_order) * max(len(hue_order), 1) + 1.2)
    fig = new_figure(width * ncols + 2.5, 3.2 * nrows + 0.6)
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
                no_data(ax)
            else:
                common = dict(
                    data=sub,
                    x=x,
                    y="value",
                    hue="hue",
                    order=list(x_order),
                    hue_order=list(hue_order),
                    ax=ax,
                    legend=False,
                )
                sns.barplot(
                    **common, palette=palette, errorbar="sd", capsize=0.15, alpha=0.85, err_kws={"linewidth": 1.0}
                )
                sns.stripplot(
                    **common, palette={h: "black" for h in hue_order}, dodge=True, size=3, alpha=0.8, jitter=0.08
                )
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


def probe_bars(
    df: pd.DataFrame,
    *,
    fig_name: str,
    x: str,
    x_order: Sequence[str],
    title: str,
    ylabel: str,
    outputs: Outputs,
    row: str | None = None,
    col: str | None = "loss",
    x_labels: Callable[[str], str] = str,
    hlines: Sequence[tuple[float, str]] = (),
    ylim: Sequence[float] | None = None,
    with_dataset: bool | None = None,
) -> None:
    """Shared body of the probe bar figures: per-seed aggregation, hue labels, facets by loss."""
    df, hue_order = add_hue(df, with_dataset)
    keys = [k for k in dict.fromkeys([x, "hue", row, col]) if k is not None]
    per_seed = seed_means(df, keys)
    row_order = in_order(per_seed[row], LOSS_ORDER) if row else [""]
    col_order = in_order(per_seed[col], LOSS_ORDER) if col else [""]
    fig = bar_grid(
        per_seed,
        x=x,
        x_order=x_order,
        hue_order=hue_order,
        title=title,
        ylabel=ylabel,
        row=row,
        col=col,
        row_order=row_order,
        col_order=col_order,
        row_labels=loss_label if row == "loss" else str,
        col_labels=loss_label if col == "loss" else str,
        x_labels=x_labels,
        hlines=hlines,
        ylim=ylim,
    )
    save_figure(fig, outputs, fig_name)


def metric_label(metric: str, head: str | None) -> str:
    label = metric.replace("_", " ")
    return f"{label} ({head} probe)" if head else label


# ------------------------------------------------------------------------------------------------ image helpers
def load_input(inputs: Inputs, key: str, fig: str, split: str | None = None) -> ImageDataset:
    paths = input_paths(inputs, key, fig)
    if len(paths) != 1:
        raise ValueError(f"{fig}: input {key!r} must be one dataset directory, got {len(paths)}")
    ds = load_dataset(paths[0])
    return ds.select(split) if split is not None else ds


def unit_scale(img: np.ndarray) -> np.ndarray:
    """uint8 / 255, uint16 / 65535 (floats as they are), as float64."""
    return to_unit(img, np.float64)


def contrast_stretch(plane: np.ndarray, lo: float = 1.0, hi: float = 99.5) -> np.ndarray:
    """Percentile contrast stretch of one (H, W) plane to [0, 1]."""
    a, b = np.percentile(plane, [lo, hi])
    if b <= a:
        b = a + 1e-12 if plane.max() <= a else plane.max()
    return np.clip((plane - a) / (b - a), 0.0, 1.0)


def displayable(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) -> an RGB (first three channels) or grey image for ``imshow``; uint16 is contrast-stretched."""
    x = unit_scale(img)
    stretch = img.dtype != np.uint8
    if x.shape[0] >= 3:
        rgb = np.stack([contrast_stretch(c) if stretch else c for c in x[:3]], axis=-1)
        return np.clip(rgb, 0.0, 1.0), None
    plane = contrast_stretch(x[0]) if stretch else x[0]
    return plane, "gray"


def show_image(ax: Any, img: np.ndarray) -> None:
    shown, cmap = displayable(img)
    ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------------------ tables
def render_table(
    cells: list[list[str]],
    header: list[str],
    title: str,
    bold: list[list[bool]] | None = None,
    col_widths: Sequence[float] | None = None,
) -> Figure:
    """A matplotlib table figure (header row shaded; ``bold`` marks cells in bold) sized to its content."""
    ncols = len(header)
    cells = cells or [[""] * ncols]
    widths = (
        list(col_widths)
        if col_widths is not None
        else [max([len(header[j]), *(len(row[j]) for row in cells)]) * 0.075 + 0.25 for j in range(ncols)]
    )
    row_h, title_h = 0.26, 0.45
    height = row_h * (len(cells) + 1) + title_h
    fig = new_figure(max(sum(widths), 4.0), height)
    ax = fig.add_axes((0.01, 0.01, 0.98, (height - title_h) / height - 0.01))
    ax.axis("off")
    table = ax.table(
        cellText=cells,
        colLabels=header,
        cellLoc="center",
        bbox=(0.0, 0.0, 1.0, 1.0),
        colWidths=[w / sum(widths) for w in widths],
    )
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


def fmt_mean_sd(mean: float, sd: float, decimals: int) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.{decimals}f}" if pd.isna(sd) else f"{mean:.{decimals}f} ± {sd:.{decimals}f}"
