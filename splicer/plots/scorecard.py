"""The scorecard: every claim of the paper (:mod:`splicer.claims`) judged on our results, as effects.

For each claim and loss: the paper's effect, ours (mean over paired seeds with its 95 % interval), n and a verdict.
Writes the CSV (:data:`SCORECARD_COLUMNS`) and a forest plot: one row per claim and loss, our effect with its
interval coloured by verdict, the paper's effect as a diamond, the equivalence band of "no difference" claims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from splicer.claims import CLAIMS, RESULT_COLUMNS, judge
from splicer.plots.common import (
    CEILING_COLUMNS,
    PROBE_COLUMNS,
    SPECTRA_COLUMNS,
    TIDY_COLUMNS,
    Inputs,
    Outputs,
    input_paths,
    loss_label,
    new_figure,
    read_table,
    save_figure,
    titled,
    write_csv,
)

__all__ = ["DEMO_LABEL", "REAL_LABEL", "SCORECARD_COLUMNS", "VERDICT_COLOURS", "read_claim_tables", "scorecard"]

SCORECARD_COLUMNS = (*RESULT_COLUMNS, "data")
DEMO_LABEL = "demo data (synthetic analogue)"
REAL_LABEL = "real data"
VERDICT_COLOURS = {"reproduced": "#2a9d3f", "not reproduced": "#c8372d", "inconclusive": "#8c8c8c"}
_TABLES = {
    "probes": PROBE_COLUMNS,
    "correlations": TIDY_COLUMNS,
    "spectra": SPECTRA_COLUMNS,
    "ceilings": CEILING_COLUMNS,
}


def read_claim_tables(paths: Mapping[str, Sequence[str | Path]], what: str = "scorecard") -> dict[str, pd.DataFrame]:
    """Table name (``probes``, ``correlations``, ``spectra``, ``ceilings``) -> its CSVs read and concatenated, with
    the columns :func:`splicer.claims.judge` needs checked; names without files are left out."""
    out = {}
    for role, columns in _TABLES.items():
        if paths.get(role):
            required = TIDY_COLUMNS if role == "probes" else columns
            out[role] = read_table(paths[role], required, what)
    return out


def _tables(inputs: Inputs) -> dict[str, pd.DataFrame]:
    return read_claim_tables(
        {role: input_paths(inputs, role, "scorecard", required=role == "probes") for role in _TABLES}
    )


def _scaled(row: Any, key: str) -> float:
    value = row[key]
    return math.nan if value is None or pd.isna(value) else 100.0 * float(value)


def scorecard(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    *,
    demo: bool = False,
    claims: list[str] | None = None,
    data_label: str | None = None,
) -> None:
    """Judge the paper's claims on our tables. Inputs: ``probes`` (tidy CSVs of every experiment the claims
    name), optional ``correlations`` (Fig. 3c), ``spectra`` (Fig. 2b), ``ceilings`` (Fig. 2c). ``claims``
    restricts to some claim ids; ``demo`` labels the title and every CSV row with :data:`DEMO_LABEL`."""
    chosen = [c for c in CLAIMS if claims is None or c.id in claims]
    if claims is not None and (unknown := sorted(set(claims) - {c.id for c in CLAIMS})):
        raise ValueError(f"scorecard: unknown claim id(s) {unknown}; claims: {[c.id for c in CLAIMS]}")
    table = pd.DataFrame(judge(_tables(inputs), chosen), columns=list(RESULT_COLUMNS))
    label = data_label or (DEMO_LABEL if demo else REAL_LABEL)
    table["data"] = label
    write_csv(table[list(SCORECARD_COLUMNS)], outputs, "scorecard")

    rows = list(table.itertuples(index=False))
    fig = new_figure(11.0, 0.32 * len(rows) + 1.6)
    ax = fig.add_axes((0.47, 0.9 / (0.32 * len(rows) + 1.6), 0.5, 1 - 1.35 / (0.32 * len(rows) + 1.6)))
    for y, r in enumerate(rows):
        row = r._asdict()
        colour = VERDICT_COLOURS[row["verdict"]]
        effect, lo, hi, paper = (_scaled(row, k) for k in ("effect", "ci_low", "ci_high", "paper_effect"))
        if row["kind"] == "equal":
            m = 100.0 * float(row["margin"])
            ax.fill_betweenx([y - 0.35, y + 0.35], -m, m, color="0.9", lw=0)
        if not math.isnan(lo):
            ax.plot([lo, hi], [y, y], color=colour, lw=2)
        if not math.isnan(effect):
            ax.plot(effect, y, "o", color=colour, ms=5)
        else:
            ax.text(0, y, "not run", ha="center", va="center", fontsize=7, color=colour)
        if not math.isnan(paper):
            ax.plot(paper, y, "D", mfc="none", mec="black", ms=5)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(
        range(len(rows)),
        [
            f"{r.figure} {r.statement[:58]}{'…' if len(r.statement) > 58 else ''} [{loss_label(r.loss)}, n={r.n}]"
            for r in rows
        ],
        fontsize=7,
    )
    ax.set_xlabel("effect × 100 (accuracy points; % of the control for relative claims)")
    ax.grid(axis="x", color="0.92")
    handles = [Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [
        Line2D([], [], marker="D", mfc="none", mec="black", ls="", label="paper's effect"),
        Patch(color="0.9", label="'no difference' margin"),
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=True)
    counts = table["verdict"].value_counts()
    tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICT_COLOURS)
    fig.suptitle(
        titled(f"The paper's claims, judged on {label} ({tally}); 95 % interval over seeds", title_suffix), fontsize=10
    )
    save_figure(fig, outputs, "scorecard")
