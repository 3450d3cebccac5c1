"""benchmarks/seeds.py: the claims judged on the first k seeds, from tidy tables in the pipeline's layout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seeds.py"
COLUMNS = ["experiment", "dataset", "method", "loss", "pairing", "seed", "task", "variant", "metric", "value", "head"]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("splicer_benchmark_seeds", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _t_cell_probes(deltas: list[float]) -> pd.DataFrame:
    """Orion probes where SpliCER's T-cell accuracy is Baseline's plus ``deltas[seed]``; seeds written last first."""
    rows = []
    for seed in reversed(range(len(deltas))):
        base = 0.5 + 0.01 * seed
        for method, pairing, value in (("baseline", "none", base), ("splicer", "channels", base + deltas[seed])):
            rows.append(
                ["orion", "pretrain", method, "vicreg", pairing, seed, "t_cells", "-", "accuracy", value, "linear"]
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def test_verdict_depends_on_how_many_seeds_are_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds = _load()
    (tmp_path / "tables" / "orion").mkdir(parents=True)
    _t_cell_probes([0.30, 0.01, 0.25, 0.20, 0.22]).to_csv(tmp_path / "tables" / "orion" / "probes.csv", index=False)

    table = seeds.main([str(tmp_path), "--csv", str(tmp_path / "seeds.csv")])

    row = table[(table["claim"] == "3b-t-cells-gain") & (table["loss"] == "vicreg")].iloc[0]
    assert row["n_2"] == 2 and row["n_5"] == 5
    assert row["effect_2"] == pytest.approx((0.30 + 0.01) / 2)  # the first two seeds (0, 1), not the first rows
    assert row["verdict_2"] == "not reproduced"  # t with 1 df: [-1.7, +2.0]
    assert row["verdict_5"] == "reproduced"
    assert row["effect_5"] == pytest.approx(0.196)
    # claims whose arms the tables lack stay inconclusive at every k, never an error
    other = table[table["claim"] == "3e-13-bands-gain"]
    assert set(other[[f"verdict_{k}" for k in (2, 3, 4, 5)]].to_numpy().ravel()) == {"inconclusive"}
    out = capsys.readouterr().out
    assert "3b-t-cells-gain (vicreg): 2: not reproduced, 3:" in out
    assert pd.read_csv(tmp_path / "seeds.csv").shape[0] == len(table)


def test_first_seeds_are_taken_per_experiment_and_per_table() -> None:
    seeds = _load()
    orion = _t_cell_probes([0.1, 0.2, 0.3])  # seeds 0, 1, 2
    other = orion.assign(experiment="nct", seed=orion["seed"] + 10)  # seeds 10, 11, 12
    ceilings = pd.DataFrame(
        {"experiment": "nct", "kind": "ssl_complex_only", "seed": [12, 11, 10], "metric": "accuracy", "value": 0.9}
    )
    kept = seeds.first_seeds({"probes": pd.concat([orion, other]), "ceilings": ceilings}, 2)
    by = kept["probes"].groupby("experiment")["seed"].unique()
    assert sorted(by["orion"]) == [0, 1] and sorted(by["nct"]) == [10, 11]
    assert sorted(kept["ceilings"]["seed"]) == [10, 11]


def test_results_with_one_seed_each_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "tables" / "orion").mkdir(parents=True)
    _t_cell_probes([0.2]).to_csv(tmp_path / "tables" / "orion" / "probes.csv", index=False)
    with pytest.raises(ValueError, match="no experiment has 2 seeds"):
        _load().main([str(tmp_path)])


def test_a_folder_without_probe_tables_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tables")):
        _load().main([str(tmp_path)])
