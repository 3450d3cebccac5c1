"""Fig. 3 and S1a: multiplex and hyperspectral hyperstacks (3a, 3d), probe accuracy (3b, 3e), marker
correlation (3c), per-channel variance (S1a).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from splicer.plots.common import (
    TIDY_COLUMNS,
    Inputs,
    Outputs,
    contrast_stretch,
    filter_rows,
    in_order,
    input_paths,
    load_input,
    metric_label,
    new_figure,
    probe_bars,
    read_table,
    save_figure,
    select_head,
    titled,
    unit_scale,
    write_csv,
)

__all__ = ["fig_3a", "fig_3b", "fig_3c", "fig_3d", "fig_3e", "fig_s1a"]


def _hyperstack(
    inputs: Inputs,
    outputs: Outputs,
    fig_name: str,
    title: str,
    title_suffix: str,
    *,
    index: int,
    split: str | None,
    channels: Sequence[str] | None,
    ncols: int | None,
    cmap: str,
) -> None:
    ds = load_input(inputs, "dataset", fig_name, split)
    if not 0 <= index < ds.n:
        raise ValueError(f"{fig_name}: {ds.path}: index {index} out of range for {ds.n} images (split={split!r})")
    names = ds.channel_names
    chosen = list(channels) if channels is not None else names
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"{fig_name}: {ds.path}/meta.json: unknown channel(s) {unknown}; have {names}")
    img = unit_scale(np.asarray(ds.images[index]))
    ncols = ncols or min(len(chosen), 6)
    nrows = math.ceil(len(chosen) / ncols)
    fig = new_figure(1.8 * ncols, 1.9 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(chosen):
            ax.axis("off")
            continue
        ax.imshow(contrast_stretch(img[names.index(chosen[k])]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(chosen[k], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    label = int(ds.labels[index])
    cls = ds.class_names[label] if 0 <= label < len(ds.class_names) else "unlabelled"
    fig.suptitle(titled(f"{title} ({ds.meta.get('name', '')}, image {index}, class {cls})", title_suffix))
    fig.tight_layout()
    save_figure(fig, outputs, fig_name)


def fig_3a(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    index: int = 0,
    split: str | None = None,
    channels: Sequence[str] | None = None,
    ncols: int | None = None,
    cmap: str = "magma",
) -> None:
    """Fig. 3a: one multiplex single-cell hyperstack, one panel per channel (percentile-stretched).
    Input: ``dataset``."""
    _hyperstack(
        inputs,
        outputs,
        "fig3a",
        "Multiplex immunofluorescence hyperstack",
        title_suffix,
        index=index,
        split=split,
        channels=channels,
        ncols=ncols,
        cmap=cmap,
    )


def fig_3b(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    experiment: str | None = None,
    tasks: Sequence[str] = ("cell_types", "t_cells"),
    metric: str = "accuracy",
    head: str | None = None,
    task_labels: Mapping[str, str] | None = None,
    ylim: Sequence[float] | None = None,
) -> None:
    """Fig. 3b: Orion-like probe accuracy per task, method/pairing, facets by loss. Input: ``probes``."""
    df = read_table(input_paths(inputs, "probes", "fig3b"), TIDY_COLUMNS, "fig3b")
    df = filter_rows(df, "fig3b", experiment=experiment, task=list(tasks), metric=metric)
    df, head = select_head(df, head, "fig3b")
    labels = {"cell_types": "Cell Types", "t_cells": "T Cells", **(task_labels or {})}
    x_order = [t for t in tasks if t in set(df["task"])]
    probe_bars(
        df,
        fig_name="fig3b",
        x="task",
        x_order=x_order,
        ylabel=metric_label(metric, head),
        title=titled("Spatial proteomics: classification accuracy", title_suffix),
        outputs=outputs,
        x_labels=lambda t: labels.get(t, t),
        ylim=ylim,
    )


OVERALL = "all markers"


def fig_3c(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    experiment: str | None = None,
    task: str | None = None,
    methods: Sequence[str] = ("baseline", "splicer"),
    markers: Sequence[str] | None = None,
) -> None:
    """Fig. 3c: mean |correlation| between representation elements and marker intensities, per marker and over all
    markers (first group), Baseline beside SpliCER (mean ± sd over seeds, one dot per seed), one row per loss.
    ``markers`` picks and orders markers (default: all, in the table's order). Input: ``correlations``."""
    df = read_table(input_paths(inputs, "correlations", "fig3c"), TIDY_COLUMNS, "fig3c")
    df = filter_rows(df, "fig3c", experiment=experiment, task=task, method=list(methods))
    overall = df["metric"] == "mean_abs_correlation"
    per_marker = df["metric"].str.startswith("channel:")
    df = df[overall | per_marker].copy()
    df["marker"] = np.where(df["metric"] == "mean_abs_correlation", OVERALL, df["metric"].str.removeprefix("channel:"))
    found = [m for m in dict.fromkeys(df["marker"]) if m != OVERALL]
    if markers is not None:
        if unknown := [m for m in markers if m not in found]:
            raise ValueError(f"fig3c: marker(s) {unknown} not in the correlations table (markers: {found})")
        found = list(markers)
    if len(set(df["task"])) > 1:
        raise ValueError(f"fig3c: several tasks {sorted(set(df['task']))}; choose one with option task")
    probe_bars(
        df,
        fig_name="fig3c",
        x="marker",
        x_order=[OVERALL, *found],
        ylabel="mean |correlation|",
        outputs=outputs,
        title=titled("Correlation of representation elements with marker intensities", title_suffix),
        row="loss",
        col=None,
    )


def fig_3d(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    index: int = 0,
    split: str | None = None,
    channels: Sequence[str] | None = None,
    ncols: int | None = None,
    cmap: str = "viridis",
) -> None:
    """Fig. 3d: one hyperspectral image, one panel per band with its name. Input: ``dataset``."""
    _hyperstack(
        inputs,
        outputs,
        "fig3d",
        "Hyperspectral hyperstack",
        title_suffix,
        index=index,
        split=split,
        channels=channels,
        ncols=ncols,
        cmap=cmap,
    )


def fig_3e(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    experiment: str | None = None,
    task: str | None = None,
    variants: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    metric: str = "accuracy",
    head: str | None = None,
    ylim: Sequence[float] | None = None,
) -> None:
    """Fig. 3e: accuracy per variant (e.g. bands13 vs rgb) and method/pairing; rows = pretraining dataset
    (``dataset`` column), columns = loss. Input: ``probes``."""
    df = read_table(input_paths(inputs, "probes", "fig3e"), TIDY_COLUMNS, "fig3e")
    df = filter_rows(
        df,
        "fig3e",
        experiment=experiment,
        task=task,
        metric=metric,
        variant=list(variants) if variants is not None else None,
        dataset=list(datasets) if datasets is not None else None,
    )
    df, head = select_head(df, head, "fig3e")
    x_order = in_order(df["variant"], variants or ("bands13", "rgb"))
    probe_bars(
        df,
        fig_name="fig3e",
        x="variant",
        x_order=x_order,
        ylabel=metric_label(metric, head),
        title=titled("Hyperspectral land-use classification", title_suffix),
        outputs=outputs,
        row="dataset",
        col="loss",
        ylim=ylim,
        with_dataset=False,
    )


def fig_s1a(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    mode: str = "image_mean",
    split: str | None = None,
    max_images: int = 2000,
    seed: int = 0,
    log: bool = False,
    batch: int = 256,
) -> None:
    """Fig. S1a: per-channel variance, sorted descending, of intensities scaled to [0, 1] (uint8/255,
    uint16/65535). ``mode="image_mean"``: variance over images of each image's mean intensity (default);
    ``mode="pixel"``: variance over all pixels. At most ``max_images`` random images. Input: ``dataset``;
    also writes ``outputs["csv"]`` (channel, variance) when given."""
    if mode not in ("image_mean", "pixel"):
        raise ValueError(f"figS1a: mode must be 'image_mean' or 'pixel', got {mode!r}")
    ds = load_input(inputs, "dataset", "figS1a", split)
    if ds.n == 0:
        raise ValueError(f"figS1a: {ds.path}: dataset has no images (split={split!r})")
    idx = np.arange(ds.n)
    if ds.n > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(ds.n, size=max_images, replace=False))
    c = ds.channels
    means, total, total_sq, count = [], np.zeros(c), np.zeros(c), 0
    for start in range(0, idx.size, batch):
        x = unit_scale(np.asarray(ds.images[idx[start : start + batch]]))
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
    fig = new_figure(max(4.0, 0.35 * c + 1.5), 3.6)
    ax = fig.add_subplot(111)
    sns.barplot(data=table, x="channel", y="variance", color=sns.color_palette("tab10")[0], ax=ax)
    ax.tick_params(axis="x", rotation=90)
    if log and (table["variance"] > 0).any():
        ax.set_yscale("log", nonpositive="mask")
    what = "per-image mean intensity" if mode == "image_mean" else "pixel intensity"
    ax.set_ylabel(f"variance of {what}")
    ax.set_xlabel("")
    ax.set_title(titled(f"Per-channel variance ({ds.meta.get('name', '')})", title_suffix))
    fig.tight_layout()
    save_figure(fig, outputs, "figS1a")
    if "csv" in outputs:
        write_csv(table, outputs, "figS1a")
