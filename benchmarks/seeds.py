"""How many seeds the claims need: every claim judged again on only the first k seeds of each experiment.

Reads the tidy tables of a finished results folder (``<results>/tables/<experiment>/{probes,correlations,
spectra,ceilings}.csv``), keeps the rows of the first k seeds (sorted) of every experiment, for each k from 2 to
the most seeds any experiment ran, and judges them with the scorecard's own code (:func:`splicer.claims.judge`).
Prints, per claim and loss, the verdict and the effect with its 95 % interval at each k, then the rows whose
verdict depends on k. It answers "would 3 seeds do?" from runs already made. A figure, not a test::

    python benchmarks/seeds.py [results/demo] [--csv seeds.csv]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splicer.claims import judge  # noqa: E402
from splicer.plots.scorecard import read_claim_tables  # noqa: E402

TABLES = ("probes", "correlations", "spectra", "ceilings")


def read_tables(results: Path) -> dict[str, pd.DataFrame]:
    """Table name -> every experiment's rows of that table, read as the scorecard reads them."""
    paths = {name: sorted((results / "tables").glob(f"*/{name}.csv")) for name in TABLES}
    if not paths["probes"]:
        raise FileNotFoundError(f"{results / 'tables'}: no */probes.csv; is {results} a finished results folder?")
    return read_claim_tables(paths, "seeds")


def first_seeds(tables: Mapping[str, pd.DataFrame], k: int) -> dict[str, pd.DataFrame]:
    """The rows of the first ``k`` seeds (sorted) of each experiment, in every table."""
    out = {}
    for name, df in tables.items():
        seeds = df["seed"].astype(int)  # the tables are read as strings
        keep = seeds.groupby(df["experiment"]).transform(lambda s: s.isin(sorted(s.unique())[:k]))
        out[name] = df[keep.astype(bool)]
    return out


def by_seed_count(tables: Mapping[str, pd.DataFrame], counts: Sequence[int]) -> pd.DataFrame:
    """One row per claim and loss; for each k the verdict, effect, interval and n (columns suffixed ``_k``)."""
    merged = None
    for k in counts:
        judged = pd.DataFrame(judge(first_seeds(tables, k)))[
            ["claim", "loss", "verdict", "effect", "ci_low", "ci_high", "n"]
        ]
        judged = judged.rename(columns={c: f"{c}_{k}" for c in ("verdict", "effect", "ci_low", "ci_high", "n")})
        merged = judged if merged is None else merged.merge(judged, on=["claim", "loss"], how="left")  # claims' order
    return merged


def _cell(row: pd.Series, k: int) -> str:
    if pd.isna(row[f"effect_{k}"]):
        return row[f"verdict_{k}"]
    return (
        f"{row[f'verdict_{k}']} {100 * row[f'effect_{k}']:+.1f} "
        f"[{100 * row[f'ci_low_{k}']:+.1f}, {100 * row[f'ci_high_{k}']:+.1f}] n={int(row[f'n_{k}'])}"
    )


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="results/demo", type=Path, help="a finished results folder")
    ap.add_argument("--csv", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    tables = read_tables(args.results)
    most = max(int(df.groupby("experiment")["seed"].nunique().max()) for df in tables.values() if len(df))
    if most < 2:
        raise ValueError(f"{args.results / 'tables'}: no experiment has 2 seeds or more; there is nothing to compare")
    counts = list(range(2, most + 1))
    table = by_seed_count(tables, counts)
    if args.csv:
        table.to_csv(args.csv, index=False)
    for _, row in table.iterrows():
        print(f"{row['claim']} ({row['loss']})")
        for k in counts:
            print(f"    {k} seeds: {_cell(row, k)}")
    changed = table[table[[f"verdict_{k}" for k in counts]].nunique(axis=1) > 1]
    print(f"\n{len(table)} claim x loss rows; verdict depends on the seed count for {len(changed)}:")
    for _, row in changed.iterrows():
        print(f"  {row['claim']} ({row['loss']}): " + ", ".join(f"{k}: {row[f'verdict_{k}']}" for k in counts))
    return table


if __name__ == "__main__":
    main()
