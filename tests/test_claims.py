"""The claim table and its verdicts: intervals, thresholds, ambiguous readings, missing runs, both configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from splicer.claims import CLAIMS, RESULT_COLUMNS, Arm, Claim, effective_rank, interval, judge, verdict

ROOT = Path(__file__).resolve().parents[1]
BY_ID = {c.id: c for c in CLAIMS}


def test_claim_ids_are_unique_and_every_claim_quotes_the_paper():
    assert len(BY_ID) == len(CLAIMS)
    for claim in CLAIMS:
        assert claim.source and claim.statement, claim.id


def test_interval_is_a_student_t_interval_over_seeds():
    mean, lo, hi, n = interval([0.01, 0.02, 0.03])
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)  # sd of (1, 2, 3) points is 1 point
    assert (mean, n) == (pytest.approx(0.02), 3)
    assert (lo, hi) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert half == pytest.approx(0.024841, abs=1e-6)
    assert interval([0.05]) == (0.05, *(pytest.approx(math.nan, nan_ok=True),) * 2, 1)
    assert interval([math.nan, 0.1, 0.1])[:3] == (pytest.approx(0.1),) * 3  # NaNs dropped, zero spread
    assert interval([])[3] == 0


@pytest.mark.parametrize(
    ("kind", "deltas", "expected", "why"),
    [
        ("greater", [0.05, 0.06, 0.055], "reproduced", "above 0"),
        ("greater", [-0.02, -0.01, -0.015], "not reproduced", "reversed"),
        ("greater", [0.001, 0.0, -0.001], "not reproduced", "absent"),  # no gain of a point or more
        ("greater", [0.05, -0.04, 0.0], "not reproduced", "not shown"),
        ("greater", [0.3], "inconclusive", "at least 2"),  # one seed: no interval
        ("less", [-0.05, -0.06, -0.055], "reproduced", "below 0"),
        ("less", [0.05, 0.06, 0.055], "not reproduced", "reversed"),
        ("equal", [0.001, -0.002, 0.0], "reproduced", "equivalence"),
        ("equal", [0.10, 0.11, 0.12], "not reproduced", "a difference"),
        ("equal", [0.03, -0.03, 0.0], "not reproduced", "not shown"),
        ("greater_effect", [0.15, 0.2, 0.17], "reproduced", "above 0"),
    ],
)
def test_verdict_thresholds(kind, deltas, expected, why):
    word, reason, (_mean, _lo, _hi, n) = verdict(kind, deltas, margin=0.01 if kind != "equal" else 0.02)
    assert word == expected and why in reason, reason
    assert n == len(deltas)


def test_equivalence_uses_the_90_percent_interval():
    # 95 % interval pokes out of ±2 points, the 90 % one (two one-sided tests at 5 %) does not
    deltas = [0.012, 0.0, -0.004]
    _, _lo95, hi95, _ = interval(deltas, 0.95)
    _, lo90, hi90, _ = interval(deltas, 0.90)
    assert hi95 > 0.02 >= hi90 and lo90 >= -0.02
    assert verdict("equal", deltas, 0.02)[0] == "reproduced"


def test_effective_rank():
    assert effective_rank([1, 1, 1, 1]) == pytest.approx(4.0)
    assert effective_rank([1, 0, 0]) == pytest.approx(1.0)
    assert 1 < effective_rank([1.0, 0.5, 0.25]) < 3
    assert math.isnan(effective_rank([0, 0]))


def _probes(rows):
    cols = ["experiment", "dataset", "method", "loss", "pairing", "seed", "task", "variant", "metric", "value", "head"]
    return pd.DataFrame(
        [
            dict(zip(cols, (e, "d", m, loss, p, s, t, v, "accuracy", value, "linear"), strict=True))
            for e, m, p, loss, t, v, s, value in rows
        ]
    )


def _arms(experiment, method, pairing, seeds, values, task="t", variant="-", loss="vicreg"):
    return [(experiment, method, pairing, loss, task, variant, s, v) for s, v in zip(seeds, values, strict=True)]


def test_judge_pairs_seeds_and_reports_every_loss():
    claim = Claim(
        "x",
        "9",
        "S beats B",
        "greater",
        Arm("e", "splicer", "p"),
        Arm("e", "baseline", "none"),
        task="t",
        paper={"vicreg": 0.1, "simclr": None},
    )
    rows = _probes(
        _arms("e", "splicer", "p", (0, 1, 2, 3), (0.80, 0.82, 0.81, 0.9))
        + _arms("e", "baseline", "none", (0, 1, 2), (0.70, 0.71, 0.72))  # seed 3 has no partner
        + _arms("e", "splicer", "p", (0, 1), (0.5, 0.5), loss="simclr")
        + _arms("e", "baseline", "none", (0, 1), (0.5, 0.6), loss="simclr")
    )
    out = {r["loss"]: r for r in judge({"probes": rows}, [claim])}
    assert set(out) == {"vicreg", "simclr"}
    v = out["vicreg"]
    assert set(v) == set(RESULT_COLUMNS)
    assert v["n"] == 3 and v["effect"] == pytest.approx(0.1) and v["verdict"] == "reproduced"
    assert v["paper_effect"] == 0.1 and out["simclr"]["paper_effect"] is None
    assert out["simclr"]["n"] == 2 and out["simclr"]["effect"] == pytest.approx(-0.05)


def test_missing_runs_and_tables_are_inconclusive_never_an_error():
    rows = _probes(_arms("mnist_cifar", "baseline", "none", (0, 1, 2), (0.7, 0.7, 0.7), "mnist_cifar", "rMNIST"))
    out = judge({"probes": rows})
    assert {r["claim"] for r in out} == set(BY_ID)
    by = {r["claim"]: r for r in out}
    assert by["2c-rmnist-gain"]["verdict"] == "inconclusive"
    assert "no probes rows for mnist_cifar/splicer(cifar)/rMNIST (vicreg)" in by["2c-rmnist-gain"]["why"]
    assert "no spectra table" in by["2b-mnist-pairing-lowers-rank"]["why"]
    assert by["4b-nct-gain"]["verdict"] == "inconclusive" and by["4b-nct-gain"]["n"] == 0
    # an experiment with no runs at all is judged for the losses the paper names
    assert {r["loss"] for r in out if r["claim"] == "3b-t-cells-gain"} == {"vicreg", "simclr"}
    assert judge({}, [BY_ID["3b-t-cells-gain"]])[0]["verdict"] == "inconclusive"


def test_greater_effect_compares_two_gains_seed_by_seed():
    claim = BY_ID["3e-mmearth-gain-exceeds-eurosat"]
    rows = _probes(
        _arms("mmearth", "splicer", "bands", (0, 1, 2), (0.70, 0.71, 0.69), "land_use", "bands13")
        + _arms("mmearth", "baseline", "none", (0, 1, 2), (0.50, 0.50, 0.50), "land_use", "bands13")
        + _arms("eurosat", "splicer", "bands", (0, 1, 2), (0.89, 0.90, 0.89), "land_use", "bands13")
        + _arms("eurosat", "baseline", "none", (0, 1, 2), (0.85, 0.85, 0.86), "land_use", "bands13")
    )
    (row,) = judge({"probes": rows}, [claim])
    assert row["effect"] == pytest.approx(((0.2 - 0.04) + (0.21 - 0.05) + (0.19 - 0.03)) / 3)
    assert row["verdict"] == "reproduced" and row["paper_effect"] == pytest.approx(0.16)


def test_rank_claims_read_the_spectra_relative_to_the_control():
    claim = BY_ID["2b-mnist-pairing-lowers-rank"]
    rows = []
    for method, pairing, k in (("trident", "mnist", 4), ("baseline", "none", 8)):
        for seed in (0, 1, 2):
            for rank in range(1, 11):
                value = 1.0 if rank <= k + (seed == 2) else 0.0  # effective rank k (k + 1 for seed 2)
                rows.append(
                    dict(
                        experiment="mnist_cifar",
                        dataset="d",
                        method=method,
                        loss="vicreg",
                        pairing=pairing,
                        seed=seed,
                        task="mnist_cifar",
                        variant="rNONE",
                        metric="singular_value",
                        value=value,
                        rank=rank,
                    )
                )
    (row,) = judge({"spectra": pd.DataFrame(rows)}, [claim])
    expected = np.mean([(4 - 8) / 8, (4 - 8) / 8, (5 - 9) / 9])
    assert row["effect"] == pytest.approx(expected) and row["verdict"] == "reproduced"
    assert row["metric"] == "effective_rank (relative)"


def test_ceiling_arms_pair_with_any_loss_when_supervised():
    claim = BY_ID["2c-supervised-ceiling-above-baseline"]
    ceilings = pd.DataFrame(
        [
            dict(
                experiment="mnist_cifar",
                kind="supervised_complex_only",
                task="cifar_only",
                method="-",
                loss="-",
                seed=s,
                metric="accuracy",
                value=0.8,
            )
            for s in (0, 1, 2)
        ]
    )
    probes = _probes(
        _arms("mnist_cifar", "baseline", "none", (0, 1, 2), (0.70, 0.72, 0.71), "mnist_cifar", "rMNIST")
        + _arms("mnist_cifar", "baseline", "none", (0, 1, 2), (0.6, 0.6, 0.6), "mnist_cifar", "rMNIST", "simclr")
    )
    out = {r["loss"]: r for r in judge({"probes": probes, "ceilings": ceilings}, [claim])}
    assert out["vicreg"]["effect"] == pytest.approx(0.09) and out["simclr"]["effect"] == pytest.approx(0.2)


def test_ambiguous_wording_records_both_readings():
    ceiling = BY_ID["2c-ceiling-above-baseline"].reading
    assert "self-supervised" in ceiling and "supervised" in ceiling and "we read (a)" in ceiling
    assert "2c-supervised-ceiling-above-baseline" in BY_ID  # the other reading is judged too
    bands = BY_ID["3e-13-bands-gain"]
    assert "VICReg" in bands.reading and "SimCLR" in bands.reading
    assert bands.paper == {"vicreg": pytest.approx(0.04), "simclr": pytest.approx(0.05)}
    assert BY_ID["3b-t-cells-gain"].paper == {"vicreg": pytest.approx(0.24), "simclr": pytest.approx(0.30)}


def test_claim_validation():
    with pytest.raises(ValueError, match="kind"):
        Claim("x", "1", "s", "bigger", Arm("e", "a"), Arm("e", "b"), task="t")
    with pytest.raises(ValueError, match="reference"):
        Claim("x", "1", "s", "greater_effect", Arm("e", "a"), Arm("e", "b"), task="t")


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_both_configs_run_every_arm_the_claims_name(name):
    """One experiment vocabulary: every claim's arms are runs and evaluations of the demo and the paper config."""
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    experiments = config["experiments"]
    for claim in CLAIMS:
        for arm in (claim.treatment, claim.control, *(claim.reference or ())):
            where = f"{name}: claim {claim.id}, arm {arm.describe()}"
            if (arm.table or claim.table) == "ceilings":
                assert any(e.get("ceiling_of") == arm.experiment for e in experiments.values()) or (
                    arm.method == "supervised_complex_only" and experiments[arm.experiment].get("supervised")
                ), where
                continue
            assert arm.experiment in experiments, where
            exp = experiments[arm.experiment]
            assert {"method": arm.method, "pairing": arm.pairing} in [
                {k: r[k] for k in ("method", "pairing")} for r in exp["runs"]
            ], where
            task, variant = arm.task or claim.task, arm.variant if arm.variant is not None else claim.variant
            evals = [e for e in exp["evaluate"].values() if e.get("task") == task]
            assert evals, where
            if variant is not None:
                assert variant in {e.get("variant") for e in evals}, where
            if claim.table == "spectra":
                assert exp.get("spectrum"), where
            if claim.table == "correlations":
                assert exp.get("correlate"), where
