"""The scorecard: each paper number (:mod:`splicer.paper_numbers`) beside ours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from splicer.paper_numbers import PAPER_NUMBERS
from splicer.plots.common import (
    CEILING_COLUMNS,
    CEILING_KINDS,
    CEILING_LABELS,
    LOSS_ORDER,
    TIDY_COLUMNS,
    Inputs,
    Outputs,
    fmt_mean_sd,
    input_paths,
    loss_label,
    method_label,
    read_table,
    render_table,
    save_figure,
    titled,
    write_csv,
)

__all__ = ["DEMO_LABEL", "REAL_LABEL", "SCORECARD_COLUMNS", "scorecard"]

SCORECARD_COLUMNS = (
    "figure",
    "experiment",
    "method",
    "loss",
    "pairing",
    "task",
    "variant",
    "metric",
    "paper_value",
    "ours_mean",
    "ours_sd",
    "n_seeds",
    "data",
)
DEMO_LABEL = "demo data (synthetic analogue)"
REAL_LABEL = "real data"


# --------------------------------------------------------------------------------------------------- scorecard
def _scorecard_rows(
    entry: Mapping[str, Any], probes: pd.DataFrame, ceilings: pd.DataFrame | None, head: str | None
) -> list[dict[str, Any]]:
    """Our mean/sd/n for one paper number: one row per value of the fields the paper leaves open."""
    base = {
        k: entry.get(k)
        for k in ("figure", "experiment", "method", "loss", "pairing", "task", "variant", "metric", "paper_value")
    }
    filters: dict[str, Any] = {
        k: entry.get(k) for k in ("experiment", "task", "variant", "method", "loss", "pairing", "metric")
    }
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
            raise ValueError(
                f"scorecard: {', '.join(probes.attrs.get('files', []))}: missing column {key!r} "
                f"used by the paper number for {entry['experiment']}/{entry['task']}"
            )
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
        row = {
            **base,
            **{k: v for k, v in found.items() if k != "dataset"},
            "ours_mean": per_seed.mean(),
            "ours_sd": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan,
            "n_seeds": len(per_seed),
        }
        if "dataset" in found:
            row["experiment"] = f"{base['experiment']} (dataset={found['dataset']})"
        rows.append(row)
    loss_rank = {loss: i for i, loss in enumerate(LOSS_ORDER)}
    return sorted(
        rows, key=lambda r: (loss_rank.get(r["loss"], 9), str(r["loss"]), str(r["pairing"]), str(r["variant"]))
    )


def scorecard(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    demo: bool = False,
    head: str | None = None,
    numbers: Sequence[Mapping[str, Any]] | None = None,
    data_label: str | None = None,
    decimals: int = 3,
) -> None:
    """Scorecard: each paper number (:mod:`splicer.paper_numbers`) beside ours (mean ± sd over seeds).

    Inputs: ``probes`` (one or more tidy CSVs), optional ``ceilings``. A paper number's experiment, task and
    variant are those of our tables (both configs use the same experiment names). Paper fields left None (e.g. the
    loss of Fig. 2c) give one row per value found in ours. ``demo`` labels the title and every CSV row with
    :data:`DEMO_LABEL`. Writes PNG/PDF and a CSV with :data:`SCORECARD_COLUMNS`.
    """
    probes = read_table(input_paths(inputs, "probes", "scorecard"), TIDY_COLUMNS, "scorecard")
    ceiling_paths = input_paths(inputs, "ceilings", "scorecard", required=False)
    ceilings = read_table(ceiling_paths, CEILING_COLUMNS, "scorecard") if ceiling_paths else None
    label = data_label or (DEMO_LABEL if demo else REAL_LABEL)
    rows: list[dict[str, Any]] = []
    for entry in numbers if numbers is not None else PAPER_NUMBERS:
        rows.extend(_scorecard_rows(entry, probes, ceilings, head))
    table = pd.DataFrame(rows, columns=[c for c in SCORECARD_COLUMNS if c != "data"])
    table = table.astype({"n_seeds": int})
    for col in ("loss", "pairing", "variant", "task", "method"):
        table[col] = table[col].fillna("")
    table["data"] = label
    write_csv(table[list(SCORECARD_COLUMNS)], outputs, "scorecard")
    header = [
        "Fig.",
        "Experiment",
        "Task",
        "Variant",
        "Method",
        "Loss",
        "Pairing",
        "Paper",
        "Ours (mean ± sd)",
        "n",
        "Δ",
    ]
    cells = []
    for r in table.itertuples(index=False):
        delta = r.ours_mean - r.paper_value if not pd.isna(r.ours_mean) else np.nan
        method = CEILING_LABELS.get(r.method, method_label(r.method))
        cells.append(
            [
                r.figure,
                r.experiment,
                r.task,
                r.variant,
                method,
                loss_label(r.loss),
                r.pairing,
                f"{r.paper_value:.4g}",
                fmt_mean_sd(r.ours_mean, r.ours_sd, decimals),
                str(r.n_seeds),
                "—" if pd.isna(delta) else f"{delta:+.{decimals}f}",
            ]
        )
    title = "Scorecard: paper vs ours" + (f" — {label}" if demo or data_label else "")
    fig = render_table(cells, header, titled(title, title_suffix))
    save_figure(fig, outputs, "scorecard")
