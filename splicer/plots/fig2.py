"""Fig. 2: MNIST-CIFAR examples (2a), ranked singular values (2b), probe accuracy on randomised inputs (2c)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.patches import Patch

from splicer.plots.common import (
    CEILING_COLUMNS,
    CEILING_KINDS,
    CEILING_LABELS,
    LOSS_ORDER,
    SPECTRA_COLUMNS,
    TIDY_COLUMNS,
    Inputs,
    Outputs,
    add_hue,
    filter_rows,
    hue_palette,
    in_order,
    input_paths,
    load_input,
    loss_label,
    metric_label,
    new_figure,
    no_data,
    probe_bars,
    read_table,
    save_figure,
    select_head,
    show_image,
    titled,
)

__all__ = ["fig_2a", "fig_2b", "fig_2c"]


def fig_2a(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    n_per_class: int = 4,
    split: str | None = None,
    max_classes: int = 10,
    seed: int = 0,
) -> None:
    """Fig. 2a: example images, one row per class (``n_per_class`` random examples). Input: ``dataset``."""
    ds = load_input(inputs, "dataset", "fig2a", split)
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
    fig = new_figure(ncols * cell * max(w / h, 0.5) + 1.0, len(rows) * cell + 0.6)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, (name, pick) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            if j < len(pick):
                show_image(ax, np.asarray(ds.images[pick[j]]))
            else:
                ax.axis("off")
        axes[i][0].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(titled(f"{ds.meta.get('name', 'dataset')} examples", title_suffix))
    fig.tight_layout()
    save_figure(fig, outputs, "fig2a")


def fig_2b(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    task: str | None = None,
    experiment: str | None = None,
    metric: str = "singular_value",
    max_rank: int | None = None,
    normalise: bool = True,
    band: str = "minmax",
) -> None:
    """Fig. 2b: ranked singular values (log y), one line per method/pairing (mean over seeds, band = min-max or
    ± sd over seeds), facets by loss. Input: ``spectra``. ``task=None`` takes the only (else first) task.

    With ``normalise`` each spectrum is divided by its largest singular value before averaging.
    """
    if band not in ("minmax", "sd"):
        raise ValueError(f"fig2b: band must be 'minmax' or 'sd', got {band!r}")
    df = read_table(input_paths(inputs, "spectra", "fig2b"), SPECTRA_COLUMNS, "fig2b")
    df = filter_rows(df, "fig2b", experiment=experiment, metric=metric)
    if task is None:
        task = sorted(df["task"].unique())[0]
    df = filter_rows(df, "fig2b", experiment=experiment, metric=metric, task=task)
    df = df.dropna(subset=["rank", "value"])
    df, hue_order = add_hue(df)
    keys = ["loss", "hue", "seed"]
    if normalise:
        peak = df.groupby(keys)["value"].transform("max")
        df["value"] = np.where(peak > 0, df["value"] / peak.where(peak > 0, 1.0), np.nan)
    if max_rank is not None:
        df = df[df["rank"] <= max_rank]
    curves = df.groupby(["loss", "hue", "rank"])["value"].agg(["mean", "min", "max", "std"]).reset_index()
    losses = in_order(curves["loss"], LOSS_ORDER) or [""]
    palette = hue_palette(hue_order)
    fig = new_figure(4.2 * len(losses) + 2.5, 3.6)
    axes = fig.subplots(1, len(losses), squeeze=False, sharey=True)[0]
    for ax, loss in zip(axes, losses, strict=True):
        sub = curves[curves["loss"] == loss]
        if sub.empty or not (sub["mean"] > 0).any():
            no_data(ax)
            continue
        for hue in hue_order:
            line = sub[sub["hue"] == hue].sort_values("rank")
            if line.empty:
                continue
            lo, hi = (
                (line["min"], line["max"])
                if band == "minmax"
                else (line["mean"] - line["std"].fillna(0), line["mean"] + line["std"].fillna(0))
            )
            ax.plot(line["rank"], line["mean"], color=palette[hue], lw=1.5)
            ax.fill_between(line["rank"], lo.clip(lower=1e-12), hi, color=palette[hue], alpha=0.2, lw=0)
        ax.set_yscale("log", nonpositive="mask")
        ax.set_title(loss_label(loss))
        ax.set_xlabel("rank")
    axes[0].set_ylabel("normalised singular value" if normalise else "singular value")
    handles = [Patch(facecolor=palette[h], label=h) for h in hue_order]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(titled(f"Ranked singular values ({task})", title_suffix))
    fig.tight_layout()
    save_figure(fig, outputs, "fig2b")


def fig_2c(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    experiment: str | None = None,
    task: str | None = None,
    metric: str = "accuracy",
    variants: Sequence[str] = ("rNONE", "rMNIST", "rCIFAR"),
    head: str | None = None,
    ylim: Sequence[float] | None = None,
    ceiling_labels: Mapping[str, str] | None = None,
) -> None:
    """Fig. 2c: probe accuracy on rNONE/rMNIST/rCIFAR per method/pairing, facets by loss; dashed lines for the
    mean of each ceiling kind when the optional ``ceilings`` input is given. Input: ``probes`` [+ ``ceilings``]."""
    df = read_table(input_paths(inputs, "probes", "fig2c"), TIDY_COLUMNS, "fig2c")
    df = filter_rows(df, "fig2c", experiment=experiment, task=task, metric=metric, variant=list(variants))
    df, head = select_head(df, head, "fig2c")
    hlines: list[tuple[float, str]] = []
    ceiling_paths = input_paths(inputs, "ceilings", "fig2c", required=False)
    if ceiling_paths:
        ceil = read_table(ceiling_paths, CEILING_COLUMNS, "fig2c")
        ceil = ceil[(ceil["metric"] == metric) & ((ceil["experiment"] == experiment) if experiment else True)]
        labels = {**CEILING_LABELS, **(ceiling_labels or {})}
        for kind in in_order(ceil["kind"], CEILING_KINDS):
            per_seed = ceil[ceil["kind"] == kind].groupby("seed")["value"].mean()
            if per_seed.notna().any():
                hlines.append((float(per_seed.mean()), f"{labels.get(kind, kind)} ({per_seed.mean():.3f})"))
    x_order = [v for v in variants if v in set(df["variant"])]
    probe_bars(
        df,
        fig_name="fig2c",
        x="variant",
        x_order=x_order,
        ylabel=metric_label(metric, head),
        title=titled("MNIST-CIFAR: probe accuracy on randomised inputs", title_suffix),
        outputs=outputs,
        hlines=hlines,
        ylim=ylim,
    )
