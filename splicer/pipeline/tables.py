"""Tidy tables (one row per run x evaluation x metric) from the runs' ``evaluation.json``, and the summary.

Column schemas of every table live here (:data:`TIDY_COLUMNS` and friends); :mod:`splicer.plots` reads tables
with them. Imports pandas only inside the functions that build tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from splicer.pipeline.grid import Run

__all__ = [
    "CEILING_COLUMNS",
    "CEILING_KINDS",
    "CORRELATION_COLUMNS",
    "PROBE_COLUMNS",
    "SPECTRA_COLUMNS",
    "TIDY_COLUMNS",
    "absolute_section",
    "claims_section",
    "collect_tables",
    "dataset_counts",
    "experiment_tables",
    "summarise",
]

TIDY_COLUMNS = ("experiment", "dataset", "method", "loss", "pairing", "seed", "task", "variant", "metric", "value")
"""Columns of every per-run table (``probes`` adds ``head``, ``spectra`` adds ``rank``)."""
PROBE_COLUMNS = (*TIDY_COLUMNS, "head")
SPECTRA_COLUMNS = (*TIDY_COLUMNS, "rank")
CORRELATION_COLUMNS = TIDY_COLUMNS
CEILING_COLUMNS = ("experiment", "kind", "task", "method", "loss", "seed", "metric", "value")
CEILING_KINDS = ("ssl_complex_only", "supervised_complex_only")
"""Ceilings on the complex component alone: self-supervised (an experiment's ``ceiling_of``) and supervised."""


def _read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read result {path}: {err}") from None


def _run_fields(config: Mapping, run: Run) -> dict[str, Any]:
    exp = config["experiments"][run.experiment]
    return {
        "experiment": run.experiment,
        "dataset": exp.get("dataset_label") or exp["pretrain"],
        "method": run.method,
        "loss": run.loss,
        "pairing": run.pairing,
        "seed": run.seed,
    }


def _eval_fields(config: Mapping, experiment: str, name: str) -> dict[str, str]:
    spec = config["experiments"][experiment]["evaluate"][name]
    return {"task": spec.get("task", name), "variant": spec.get("variant", "-")}


def _rows(config: Mapping, run: Run, evaluation: Mapping) -> dict[str, list[dict]]:
    exp = run.experiment
    out: dict[str, list[dict]] = {"probes": [], "spectra": [], "correlations": []}
    for name, result in evaluation.get("probes", {}).items():
        base = {**_run_fields(config, run), **_eval_fields(config, exp, name), "head": result.get("head")}
        for metric in ("accuracy", "balanced_accuracy", "auc", "val_accuracy"):
            value = result.get(metric)
            if value is not None:
                out["probes"].append({**base, "metric": metric, "value": float(value)})
    for name, values in evaluation.get("spectra", {}).items():
        base = {**_run_fields(config, run), **_eval_fields(config, exp, name), "metric": "singular_value"}
        out["spectra"] += [{**base, "rank": i + 1, "value": float(v)} for i, v in enumerate(values)]
    for name, result in evaluation.get("correlations", {}).items():
        base = {**_run_fields(config, run), **_eval_fields(config, exp, name)}
        out["correlations"].append({**base, "metric": "mean_abs_correlation", "value": result["mean_abs_correlation"]})
        out["correlations"] += [
            {**base, "metric": f"channel:{c}", "value": v} for c, v in result["per_channel"].items()
        ]
    return out


def collect_tables(
    config: Mapping,
    experiment: str,
    evaluations: Iterable[tuple[Run, str | Path]],
    supervised: Iterable[tuple[str, int, str | Path]] = (),
    ssl_ceiling: Iterable[tuple[Run, str | Path]] = (),
) -> dict:
    """Tidy tables of one experiment from its runs' ``evaluation.json`` files (and ceiling results).

    Returns DataFrames ``probes`` (+ ``head``), ``spectra`` (+ ``rank``), ``correlations`` and ``ceilings``
    (``experiment, kind, task, seed, metric, value``; kinds ``ssl_complex_only``, ``supervised_complex_only``).
    """
    import pandas as pd

    rows: dict[str, list[dict]] = {"probes": [], "spectra": [], "correlations": []}
    for run, path in evaluations:
        for key, items in _rows(config, run, _read_json(path)).items():
            rows[key] += items
    ceilings = []
    for run, path in ssl_ceiling:
        for name, result in _read_json(path).get("probes", {}).items():
            ceilings.append(
                {
                    "experiment": experiment,
                    "kind": CEILING_KINDS[0],
                    "task": name,
                    "method": run.method,
                    "loss": run.loss,
                    "seed": run.seed,
                    "metric": "accuracy",
                    "value": result["accuracy"],
                }
            )
    for name, seed, path in supervised:
        ceilings.append(
            {
                "experiment": experiment,
                "kind": CEILING_KINDS[1],
                "task": name,
                "method": "-",
                "loss": "-",
                "seed": seed,
                "metric": "accuracy",
                "value": _read_json(path)["accuracy"],
            }
        )
    columns = {"probes": PROBE_COLUMNS, "spectra": SPECTRA_COLUMNS, "correlations": CORRELATION_COLUMNS}
    tables = {key: pd.DataFrame(rows[key], columns=list(cols)) for key, cols in columns.items()}
    tables["ceilings"] = pd.DataFrame(ceilings, columns=list(CEILING_COLUMNS))
    return tables


def experiment_tables(config: Mapping, experiment: str) -> dict:
    """:func:`collect_tables` of one experiment, reading the result files :func:`~splicer.pipeline.paths.table_inputs`
    lists (its runs' evaluations, its SSL-ceiling experiments' evaluations, its supervised ceilings)."""
    from splicer.pipeline.grid import experiment_runs
    from splicer.pipeline.paths import ceiling_sources, evaluation_path, supervised_path

    exp = config["experiments"][experiment]
    seeds = exp.get("seeds") or config["seeds"]
    runs = experiment_runs(config, experiment)
    ceiling_runs = [r for other in ceiling_sources(config, experiment) for r in experiment_runs(config, other)]
    return collect_tables(
        config,
        experiment,
        [(run, evaluation_path(config, run)) for run in runs],
        [
            (name, seed, supervised_path(config, experiment, name, seed))
            for name in exp.get("supervised", [])
            for seed in seeds
        ],
        [(run, evaluation_path(config, run)) for run in ceiling_runs],
    )


def _points(value: Any) -> str:
    import math

    return "—" if value is None or value == "" or math.isnan(float(value)) else f"{100 * float(value):+.1f}"


def claims_section(scorecard: str | Path) -> list[str]:
    """Markdown lines: the scorecard's verdict on every claim and loss (``figures/scorecard.csv``)."""
    import pandas as pd

    card = pd.read_csv(scorecard, keep_default_na=False, na_values={c: [""] for c in ("effect", "ci_low", "ci_high")})
    counts = card["verdict"].value_counts()
    tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("reproduced", "not reproduced", "inconclusive"))
    lines = [
        "## The paper's claims, judged as effects",
        "",
        f"{len(card)} claim x loss rows: {tally}. Effects x 100 (accuracy points; % of the control for relative "
        "claims), treatment minus control, mean over paired seeds with the 95 % t-interval over seeds "
        "(splicer/claims.py has the rules; `figures/scorecard.csv` the details).",
        "",
        "| fig. | claim | loss | paper | ours [95 % interval] | n | verdict | why |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in card.itertuples(index=False):
        paper = "direction only" if r.paper_effect in ("", None) or pd.isna(r.paper_effect) else _points(r.paper_effect)
        ours = _points(r.effect)
        if ours != "—" and not pd.isna(r.ci_low):
            ours += f" [{_points(r.ci_low)}, {_points(r.ci_high)}]"
        lines.append(
            f"| {r.figure} | {r.statement} | {r.loss} | {paper} | {ours} | {r.n} | **{r.verdict}** | {r.why} |"
        )
    return [*lines, ""]


def absolute_section(probe_tables: Iterable[str | Path], ceiling_tables: Iterable[str | Path]) -> list[str]:
    """Markdown lines: the paper's absolute numbers beside ours (real data only; the demo's data differ)."""
    import pandas as pd

    from splicer.paper_numbers import absolute_table

    def read(paths: Iterable[str | Path]) -> Any:
        frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths]
        df = pd.concat(frames, ignore_index=True) if frames else None
        if df is not None:
            df["value"] = pd.to_numeric(df["value"], errors="coerce")
        return df

    table = absolute_table(read(probe_tables), read(ceiling_tables))
    lines = [
        "## Absolute numbers: the paper's beside ours",
        "",
        "| fig. | experiment | method | loss | pairing | task | variant | paper | ours (mean ± sd) | n |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples(index=False):
        ours = (
            "—"
            if pd.isna(r.ours_mean)
            else f"{r.ours_mean:.3f}" + ("" if pd.isna(r.ours_sd) else f" ± {r.ours_sd:.3f}")
        )
        lines.append(
            f"| {r.figure} | {r.experiment} | {r.method} | {r.loss} | {r.pairing} | {r.task} | {r.variant} "
            f"| {r.paper_value:.4g} | {ours} | {r.n_seeds} |"
        )
    return [*lines, ""]


def dataset_counts(path: str | Path) -> tuple[dict[str, dict[str, int]], dict]:
    """Cells per class (and ``unlabelled``) in each split of a dataset directory, read from its labels and splits
    (memory-mapped), and its ``meta.json`` info."""
    import numpy as np

    root = Path(path)
    meta = _read_json(root / "meta.json")
    labels = np.load(root / "labels.npy", mmap_mode="r")
    split = np.load(root / "split.npy", mmap_mode="r")
    classes = list(meta.get("class_names", []))
    counts = {}
    for code, name in enumerate(meta.get("split_names", [])):
        mine = np.asarray(labels[np.asarray(split) == code])
        counts[name] = {c: int(np.sum(mine == i)) for i, c in enumerate(classes)}
        if (mine < 0).any():
            counts[name]["unlabelled"] = int(np.sum(mine < 0))
    return counts, dict(meta.get("info", {}))


def _dataset_lines(datasets: Mapping[str, str | Path]) -> list[str]:
    """One table per evaluation dataset: cells per class and split, and what per_class was asked and accepted."""
    lines = ["", "## Evaluation sets", "", "Images (cells, for multiplex data) per class in each split.", ""]
    for label, path in datasets.items():
        counts, info = dataset_counts(path)
        classes = list(dict.fromkeys(c for split in counts.values() for c in split))
        note = ""
        asked, got = info.get("per_class_asked"), info.get("per_class")
        if asked and got is not None and got < asked:
            low = info.get("min_per_class")
            note = f" -- **{got} per class, not the {asked} asked** (accepted by min_per_class {low})"
        lines += [
            f"- {label}{note}",
            "",
            "  | split | " + " | ".join(classes) + " |",
            "  | --- |" + " --- |" * len(classes),
        ]
        for split, row in counts.items():
            lines.append(f"  | {split} | " + " | ".join(str(row.get(c, 0)) for c in classes) + " |")
        lines.append("")
    return lines


def summarise(
    probe_tables: Iterable[str | Path],
    ceiling_tables: Iterable[str | Path],
    demo: bool,
    scorecard: str | Path | None = None,
    datasets: Mapping[str, str | Path] | None = None,
) -> str:
    """Markdown summary: the claims' verdicts (from the scorecard's CSV, when given), probe accuracy mean ± sd over
    seeds per run and evaluation, the ceilings, (real data only) the paper's absolute numbers beside ours, and
    (``datasets``: label -> dataset directory) the evaluation sets' cells per class and split."""
    import pandas as pd

    probe_tables, ceiling_tables = list(probe_tables), list(ceiling_tables)
    frames = [pd.read_csv(p) for p in probe_tables]
    probes = pd.concat(frames) if frames else pd.DataFrame(columns=list(TIDY_COLUMNS))
    acc = probes[probes.metric == "accuracy"]
    keys = ["experiment", "method", "pairing", "loss", "task", "variant"]
    rows = acc.groupby(keys, sort=False).value.agg(["mean", "std", "count"]).reset_index()
    lines = [f"# Results summary ({'embedded demo: synthetic analogues' if demo else 'real data'})", ""]
    if scorecard is not None:
        lines += claims_section(scorecard)
    lines += [
        "## Probe accuracy",
        "",
        "Linear-probe test accuracy, mean ± sd over seeds (n).",
        "",
        "| experiment | method | pairing | loss | task | variant | accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows.itertuples():
        sd = "" if pd.isna(r.std) else f" ± {r.std:.3f}"
        lines.append(
            f"| {r.experiment} | {r.method} | {r.pairing} | {r.loss} | {r.task} | {r.variant} | "
            f"{r.mean:.3f}{sd} (n={r.count}) |"
        )
    ceil_frames = [pd.read_csv(p) for p in ceiling_tables]
    ceilings = pd.concat(ceil_frames) if ceil_frames else pd.DataFrame()
    if len(ceilings):
        lines += ["", "Ceilings on the complex component alone (mean ± sd over seeds):", ""]
        for (exp, kind, loss), g in ceilings.groupby(["experiment", "kind", "loss"], sort=False):
            sd = "" if len(g) < 2 else f" ± {g.value.std():.3f}"
            what = kind if loss == "-" else f"{kind} ({loss})"
            lines.append(f"- {exp}, {what}: {g.value.mean():.3f}{sd} (n={len(g)})")
    if not demo:
        lines += ["", *absolute_section(probe_tables, ceiling_tables)]
    if datasets:
        lines += _dataset_lines(datasets)
    return "\n".join(lines).rstrip("\n") + "\n"
