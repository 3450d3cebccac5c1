"""Fig. 4 and Table S2: segmentation examples (4a), SpliCER vs Baseline table (4b), accuracy by pairing (S2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from splicer.data.format import load_dataset
from splicer.plots.common import (
    LOSS_ORDER,
    METHOD_ORDER,
    TIDY_COLUMNS,
    Inputs,
    Outputs,
    filter_rows,
    fmt_mean_sd,
    in_order,
    input_paths,
    loss_label,
    method_label,
    metric_label,
    new_figure,
    read_table,
    render_table,
    save_figure,
    seed_means,
    seed_summary,
    select_head,
    show_image,
    titled,
    write_csv,
)

__all__ = ["fig_4a", "fig_4b", "table_s2"]


def fig_4a(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    n_examples: int = 2,
    mask: int | str = 0,
    complement_name: str = "background",
    row_labels: Sequence[str] | None = None,
    split: str | None = None,
    min_fraction: float = 0.02,
) -> None:
    """Fig. 4a: rows of (original, ROI = image * mask, complement = image * (1 - mask)) for each segmented
    dataset; examples are the first whose mask covers between ``min_fraction`` and 1 - ``min_fraction``.
    Input: ``datasets`` (one or more directories with ``masks.npy``)."""
    paths = input_paths(inputs, "datasets", "fig4a")
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
    fig = new_figure(3 * 1.9 + 1.2, 1.9 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, (label, img, m, roi_name) in enumerate(rows):
        keep = m.astype(img.dtype)
        panels = (img, img * keep[None], img * (1 - keep)[None])
        titles = ("Original", roi_name.capitalize(), complement_name.capitalize())
        for c in range(3):
            show_image(axes[r][c], panels[c])
            axes[r][c].set_title(titles[c], fontsize=9)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(titled("Sample segmentations", title_suffix))
    fig.tight_layout()
    save_figure(fig, outputs, "fig4a")


def _method_table(
    df: pd.DataFrame,
    *,
    fig_name: str,
    title: str,
    outputs: Outputs,
    methods: Sequence[str] | None,
    task_order: Sequence[str] | None,
    task_labels: Mapping[str, str] | None,
    decimals: int,
    metric: str,
    head: str | None,
) -> None:
    """Rows (loss, method, pairing) x columns task: mean ± sd over seeds; best mean per loss and task in bold."""
    shared = df.groupby("task")["experiment"].nunique()
    df = df.assign(
        column=[f"{e}:{t}" if shared[t] > 1 else t for e, t in zip(df["experiment"], df["task"], strict=True)]
    )
    per_seed = seed_means(df, ["loss", "method", "pairing", "experiment", "task", "column"])
    agg = seed_summary(per_seed, ["loss", "method", "pairing", "experiment", "task", "column"])
    agg.insert(5, "metric", metric)
    agg.insert(6, "head", head or "")
    agg["cell"] = [fmt_mean_sd(m, s, decimals) for m, s in zip(agg["mean"], agg["sd"], strict=True)]
    losses = in_order(agg["loss"], LOSS_ORDER)
    method_order = in_order(agg["method"], tuple(methods) if methods is not None else METHOD_ORDER)
    columns = in_order(agg["column"], task_order or ())
    # a method keeps one row per loss unless it has several pairings within one column (then one per pairing);
    # e.g. SpliCER nuclei+background on NCT and lungs+background on Pneumonia share a row, as in the paper
    split = agg.groupby(["method", "loss", "column"])["pairing"].nunique().groupby("method").max() > 1
    agg["row_pairing"] = [p if split[m] else "" for m, p in zip(agg["method"], agg["pairing"], strict=True)]
    rows = agg[["loss", "method", "row_pairing"]].drop_duplicates()
    rows = rows.assign(
        _l=rows["loss"].map(losses.index), _m=rows["method"].map(method_order.index), _n=rows["row_pairing"] != "none"
    )
    rows = rows.sort_values(["_l", "_m", "_n", "row_pairing"])
    labels = {**(task_labels or {})}
    header = ["Loss", "Method", *[labels.get(c, c) for c in columns]]
    cells, bold = [], []
    best = agg.groupby(["loss", "column"])["mean"].max()
    for loss, method, pairing in rows[["loss", "method", "row_pairing"]].itertuples(index=False):
        name = method_label(method) + (f" ({pairing})" if pairing not in ("none", "") else "")
        line, marks = [loss_label(loss), name], [False, False]
        for col in columns:
            hit = agg[
                (agg["loss"] == loss)
                & (agg["method"] == method)
                & (agg["row_pairing"] == pairing)
                & (agg["column"] == col)
            ]
            line.append(hit["cell"].iloc[0] if len(hit) else "—")
            marks.append(bool(len(hit)) and hit["mean"].iloc[0] == best.get((loss, col), np.nan))
        cells.append(line)
        bold.append(marks)
    fig = render_table(cells, header, title, bold)
    save_figure(fig, outputs, fig_name)
    sort_key = agg.assign(
        _l=agg["loss"].map(losses.index), _m=agg["method"].map(method_order.index), _c=agg["column"].map(columns.index)
    )
    out = sort_key.sort_values(["_l", "_m", "_c", "pairing"]).drop(columns=["_l", "_m", "_c", "column", "row_pairing"])
    write_csv(out, outputs, fig_name)


def fig_4b(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] = ("splicer", "baseline"),
    pairings: Sequence[str] | None = None,
    experiment: str | Sequence[str] | None = None,
    metric: str = "accuracy",
    head: str | None = None,
    task_labels: Mapping[str, str] | None = None,
    decimals: int = 4,
) -> None:
    """Fig. 4b table: SpliCER vs Baseline accuracy per loss and task (mean ± sd over seeds); PNG/PDF + CSV.
    Input: ``probes`` (one or several CSVs, e.g. histology and x-ray)."""
    df = read_table(input_paths(inputs, "probes", "fig4b"), TIDY_COLUMNS, "fig4b")
    exp = [experiment] if isinstance(experiment, str) else list(experiment) if experiment is not None else None
    df = filter_rows(
        df,
        "fig4b",
        experiment=exp,
        task=list(tasks) if tasks is not None else None,
        metric=metric,
        method=list(methods),
        pairing=list(pairings) if pairings is not None else None,
    )
    df, head = select_head(df, head, "fig4b")
    _method_table(
        df,
        fig_name="fig4b",
        title=titled(f"Classification {metric_label(metric, head)}", title_suffix),
        outputs=outputs,
        methods=methods,
        task_order=tasks,
        task_labels=task_labels,
        decimals=decimals,
        metric=metric,
        head=head,
    )


def table_s2(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    pairings: Sequence[str] | None = None,
    experiment: str | Sequence[str] | None = None,
    metric: str = "accuracy",
    head: str | None = None,
    task_labels: Mapping[str, str] | None = None,
    decimals: int = 4,
) -> None:
    """Table S2: accuracy per pairing (e.g. nuclei vs nuclei+background), method and loss, per task; PNG/PDF +
    CSV. Input: ``probes``."""
    df = read_table(input_paths(inputs, "probes", "tableS2"), TIDY_COLUMNS, "tableS2")
    exp = [experiment] if isinstance(experiment, str) else list(experiment) if experiment is not None else None
    df = filter_rows(
        df,
        "tableS2",
        experiment=exp,
        task=list(tasks) if tasks is not None else None,
        metric=metric,
        method=list(methods) if methods is not None else None,
        pairing=list(pairings) if pairings is not None else None,
    )
    df, head = select_head(df, head, "tableS2")
    _method_table(
        df,
        fig_name="tableS2",
        title=titled(f"{metric_label(metric, head)} by pairing", title_suffix),
        outputs=outputs,
        methods=methods,
        task_order=tasks,
        task_labels=task_labels,
        decimals=decimals,
        metric=metric,
        head=head,
    )
