"""The pipeline config turns into the right runs, run configs, paths and tidy tables; bad configs name their fault."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from configs import load

from splicer import cluster
from splicer.config import validate_run_config
from splicer.pipeline import archives as A
from splicer.pipeline import grid as G
from splicer.pipeline import paths as P
from splicer.pipeline import tables as T
from splicer.pipeline.checks import check_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo() -> dict:
    return load("config.yaml")


def test_demo_config_passes_the_cross_checks(demo):
    check_config(demo)


def test_runs_are_the_product_of_runs_losses_and_seeds(demo):
    runs = G.experiment_runs(demo, "mnist_cifar")
    exp = demo["experiments"]["mnist_cifar"]
    assert len(runs) == len(exp["runs"]) * len(exp["losses"]) * len(demo["seeds"])
    assert len(set(runs)) == len(runs)
    assert {r.seed for r in runs} == set(demo["seeds"])
    assert {r.loss for r in runs} == set(exp["losses"]) != set(demo["losses"])  # experiment-level losses win
    # an experiment-level seeds list overrides the global one
    other = {**demo, "experiments": {**demo["experiments"], "orion": {**demo["experiments"]["orion"], "seeds": [7]}}}
    assert {r.seed for r in G.experiment_runs(other, "orion")} == {7} != set(demo["seeds"])


def test_demo_has_three_seeds_everywhere_and_simclr_where_the_paper_claims_it(demo):
    """The issue's floor for the 10-minute demo: >= 3 seeds in every experiment, VICReg everywhere, SimCLR too on
    MNIST-CIFAR and multiplex."""
    for name in demo["experiments"]:
        runs = G.experiment_runs(demo, name)
        assert len({r.seed for r in runs}) >= 3, name
        assert "vicreg" in {r.loss for r in runs}, name
    for name in ("mnist_cifar", "orion"):
        assert {r.loss for r in G.experiment_runs(demo, name)} == {"vicreg", "simclr"}


def test_five_seeds_overlay_only_adds_runs(demo):
    """config/five_seeds.yaml adds seeds 3 and 4 everywhere and Σ-JE on MNIST-CIFAR; every run (and supervised
    ceiling) of the 10-minute demo keeps its run config under it, so Snakemake reuses those runs."""
    five = load("config.yaml", "five_seeds.yaml")
    check_config(five)
    assert five["name"] == demo["name"]  # same results folder
    for name in demo["experiments"]:
        small, big = G.experiment_runs(demo, name), G.experiment_runs(five, name)
        assert set(small) < set(big) and {r.seed for r in big} == {0, 1, 2, 3, 4}, name
        for run in small:
            assert G.run_config(five, run) == G.run_config(demo, run), run
        assert G.run_config(five, big[0]) == G.run_config(demo, small[0]), name  # the supervised ceiling's
    added = {(r.method, r.pairing) for r in set(G.experiment_runs(five, "mnist_cifar"))}
    assert added - {(r.method, r.pairing) for r in G.experiment_runs(demo, "mnist_cifar")} == {("sigma_je", "cifar")}
    # and nothing else differs: no other setting (probe, evaluations, data) can make the demo's jobs rerun
    strip = copy.deepcopy(five)
    strip["seeds"] = demo["seeds"]
    strip["experiments"]["mnist_cifar"]["runs"] = demo["experiments"]["mnist_cifar"]["runs"]
    assert strip == demo


def test_run_config_merges_defaults_experiment_and_run(demo):
    run = G.Run("mnist_cifar", "splicer", "cifar", "vicreg", 2)
    cfg = validate_run_config(G.run_config(demo, run))
    assert cfg["method"] == {
        "name": "splicer",
        "inputs": ["cifar"],
        "loss": "vicreg",
        "options": {"include_view": True},
    }
    assert cfg["train"]["seed"] == 2 and cfg["train"]["device"] == "cpu"
    assert cfg["components"]["cifar"] == {"type": "region", "rows": [16, 32]}
    assert cfg["model"]["embed_dim"] == demo["run_defaults"]["model"]["embed_dim"]
    multiplex = G.run_config(demo, G.Run("orion", "splicer", "channels", "vicreg", 0))
    assert multiplex["model"]["embed_dim"] == 240 != demo["run_defaults"]["model"]["embed_dim"]  # experiment override
    assert multiplex["model"]["encoder"] == demo["run_defaults"]["model"]["encoder"]  # deep-merged, not replaced


def test_paths(demo):
    run = G.Run("nct", "baseline", "none", "vicreg", 0)
    assert P.run_dir(demo, run) == "results/demo/runs/nct/baseline/none/vicreg/seed0"
    assert P.manifest(demo, "histology") == "results/demo/segmented/histology/manifest.json"
    assert P.manifest(demo, "mnist_cifar") == "results/demo/data/mnist_cifar/manifest.json"
    assert P.split_flag(demo, "eurosat_rgb") == "--split train"
    assert P.split_flag(demo, "mnist_cifar") == ""
    args = P.evaluate_args(demo, "mnist_cifar")
    assert "--eval rMNIST=results/demo/data/mnist_cifar/rMNIST" in args and "--spectrum rNONE" in args
    inputs = P.table_inputs(demo, "mnist_cifar")
    assert len(inputs["ssl_ceiling"]) == len(G.experiment_runs(demo, "mnist_cifar_cifar_only"))
    assert inputs["supervised"] == [
        f"results/demo/supervised/mnist_cifar/cifar_only/seed{s}/result.json" for s in demo["seeds"]
    ]
    assert cluster.gpus(demo) == 0 and cluster.gpus({**demo, "device": "auto"}) == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["experiments"]["mnist_cifar"].update(data="mnist"),
            "experiments.mnist_cifar.data: unknown dataset 'mnist'",
        ),
        (
            lambda c: c["experiments"]["mnist_cifar"]["pairings"].update(cifar=["texture"]),
            "pairings.cifar: 'texture' is neither",
        ),
        (
            lambda c: c["experiments"]["mnist_cifar"]["runs"].append({"method": "splicer", "pairing": "all"}),
            "runs\\[4\\].pairing: unknown pairing 'all'",
        ),
        (
            lambda c: c["experiments"]["mnist_cifar"]["runs"].append({"method": "baseline", "pairing": "none"}),
            "listed twice",
        ),
        (
            lambda c: c["experiments"]["mnist_cifar"].update(spectrum=["rALL"]),
            "spectrum: 'rALL' is not one of the evaluations",
        ),
        (
            lambda c: c["experiments"]["mnist_cifar"]["runs"].append({"method": "baseline", "pairing": "cifar"}),
            "baseline pairs only",
        ),
        (
            lambda c: c["experiments"]["orion"]["run_overrides"]["model"].update(embed_dim=101),
            "does not split into 4 equal chunks",
        ),
        (lambda c: c["run_defaults"]["train"].update(epochz=3), "section 'train'.*epochz"),
        (lambda c: c["run_defaults"]["model"].update(depth=3), "unknown key.*depth.*section 'model'"),
    ],
)
def test_bad_configs_name_the_key(demo, edit, message):
    config = copy.deepcopy(demo)
    edit(config)
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_collect_tables_makes_tidy_rows(demo, tmp_path):
    runs = G.experiment_runs(demo, "mnist_cifar")[:2]
    paths = []
    for i in range(len(runs)):
        path = tmp_path / f"eval{i}.json"
        path.write_text(
            json.dumps(
                {
                    "probes": {"rMNIST": {"head": "linear", "accuracy": 0.5 + i / 10, "auc": 0.6, "val_accuracy": 0.7}},
                    "spectra": {"rNONE": [1.0, 0.5, 0.25]},
                    "correlations": {},
                }
            )
        )
        paths.append(path)
    sup = tmp_path / "sup.json"
    sup.write_text(json.dumps({"accuracy": 0.8}))
    tables = T.collect_tables(demo, "mnist_cifar", zip(runs, paths, strict=True), [("cifar_only", 0, sup)])
    probes = tables["probes"]
    assert tuple(probes.columns[:10]) == T.TIDY_COLUMNS
    acc = probes[(probes.metric == "accuracy")].sort_values("value")
    assert acc["value"].tolist() == [0.5, 0.6]
    assert set(acc["variant"]) == {"rMNIST"} and set(acc["task"]) == {"mnist_cifar"}
    assert set(acc["method"]) == {runs[0].method} and acc["seed"].tolist() == [runs[0].seed, runs[1].seed]
    spectra = tables["spectra"]
    assert spectra["rank"].tolist() == [1, 2, 3, 1, 2, 3] and set(spectra["metric"]) == {"singular_value"}
    ceilings = tables["ceilings"]
    assert ceilings.to_dict("records")[0]["kind"] == "supervised_complex_only"


def test_collect_tables_reports_an_unreadable_result(demo, tmp_path):
    bad = tmp_path / "evaluation.json"
    bad.write_text("{not json")
    run = G.experiment_runs(demo, "mnist_cifar")[0]
    with pytest.raises(ValueError, match=r"evaluation\.json"):
        T.collect_tables(demo, "mnist_cifar", [(run, bad)])


def test_summary_reports_mean_sd_and_ceilings(tmp_path):
    import pandas as pd

    rows = [
        {
            "experiment": "e",
            "dataset": "d",
            "method": "splicer",
            "loss": "vicreg",
            "pairing": "cifar",
            "seed": s,
            "task": "t",
            "variant": "rMNIST",
            "metric": "accuracy",
            "value": v,
        }
        for s, v in ((0, 0.6), (1, 0.7), (2, 0.8))
    ]
    probes = tmp_path / "probes.csv"
    pd.DataFrame(rows).to_csv(probes, index=False)
    ceilings = tmp_path / "ceilings.csv"
    pd.DataFrame(
        [
            {
                "experiment": "e",
                "kind": "supervised_complex_only",
                "task": "t",
                "method": "-",
                "loss": "-",
                "seed": 0,
                "metric": "accuracy",
                "value": 0.9,
            }
        ]
    ).to_csv(ceilings, index=False)
    text = T.summarise([probes], [ceilings], demo=True)
    assert "embedded demo" in text
    assert "| e | splicer | cifar | vicreg | t | rMNIST | 0.700 ± 0.100 (n=3) |" in text
    assert "- e, supervised_complex_only: 0.900 (n=1)" in text


def test_paper_config_passes_the_cross_checks_with_its_builder_params():
    check_config(load("paper.yaml"))


@pytest.mark.parametrize(
    ("entry", "patch", "message"),
    [
        ("orion_crc", {"params": {"crop_sise": 32}}, r"datasets\.orion_crc\.params: .*crop_sise"),
        ("orion_crc", {"source": {"slides": ["CRC99"]}}, r"datasets\.orion_crc\.source: .*CRC99"),
        ("nct_crc", {"params": {"size": "large"}}, r"datasets\.nct_crc\.params: .*params\.size"),
        ("eurosat", {"caps": {"bands13/train": 0}}, r"datasets\.eurosat\.caps: .*positive"),
        ("pneumoniamnist", {"source": {"size": 100}}, r"datasets\.pneumoniamnist\.source: .*100"),
        ("nct_crc", {"caps": {"pretain": 100}}, r"datasets\.nct_crc\.caps: caps key 'pretain'.*\['pretrain', 'eval'\]"),
        ("nct_crc", {"caps": {"eval/tset": 100}}, r"datasets\.nct_crc\.caps: .*split must be"),
    ],
)
def test_bad_real_dataset_entries_fail_naming_the_key(entry, patch, message):
    config = load("paper.yaml")
    config["datasets"][entry] = {**config["datasets"][entry], **patch}
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_archives_are_not_outputs_and_a_vanished_archive_is_reported(tmp_path):
    config = load("paper.yaml")
    records = A.archive_targets(config, "mnist_cifar")
    assert all("/.verified/" in r and r.endswith(".json") for r in records)
    assert A.archive_of(records[0]) == Path("resources/mnist_cifar") / Path(records[0]).name[: -len(".json")]
    record = tmp_path / "resources/k/.verified/a.gz.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    (tmp_path / "resources/k/b.gz").write_bytes(b"x")
    other = tmp_path / "resources/k/.verified/b.gz.json"
    other.write_text("{}")
    assert A.archives_present([other]) == [tmp_path / "resources/k/b.gz"]
    with pytest.raises(FileNotFoundError, match=r"a\.gz.*run again"):
        A.archives_present([record, other])
    assert not record.exists() and other.exists()  # the stale record is dropped, so the next run re-fetches


def test_entries_sharing_an_archive_must_agree_on_its_mirror_and_checksum():
    config = load("paper.yaml")
    config["datasets"]["eurosat_quick"] = {"kind": "eurosat", "caps": {"*": 100}, "source": {}}
    pinned = {"kind": "eurosat", "source": {"mirror": "https://mirror.example/eurosat/"}}
    config["datasets"]["eurosat"] = pinned
    with pytest.raises(ValueError, match=r"'eurosat_quick' and 'eurosat'|'eurosat' and 'eurosat_quick'"):
        check_config(config)
    config["datasets"]["eurosat_quick"]["source"] = dict(pinned["source"])
    check_config(config)
    assert A.archive_options(config, "eurosat", "EuroSATallBands.zip")["mirror"].startswith("https://mirror")


def test_summary_shows_the_claims_and_for_real_data_the_absolute_numbers(tmp_path):
    import pandas as pd

    from splicer.claims import judge

    rows = [
        {
            "experiment": "orion",
            "dataset": "d",
            "method": m,
            "loss": "vicreg",
            "pairing": p,
            "seed": s,
            "task": "t_cells",
            "variant": "-",
            "metric": "accuracy",
            "value": v + 0.01 * s,
            "head": "linear",
        }
        for m, p, v in (("baseline", "none", 0.5), ("splicer", "channels", 0.8))
        for s in (0, 1, 2)
    ]
    probes = tmp_path / "probes.csv"
    pd.DataFrame(rows).to_csv(probes, index=False)
    card = tmp_path / "scorecard.csv"
    pd.DataFrame(judge({"probes": pd.DataFrame(rows)})).to_csv(card, index=False)
    text = T.summarise([probes], [], demo=True, scorecard=card)
    assert "## The paper's claims, judged as effects" in text
    line = next(x for x in text.splitlines() if "T-cell subtypes" in x)
    assert "| +24.0 | +30.0 [+30.0, +30.0] | 3 | **reproduced** |" in line
    assert "Absolute numbers" not in text
    real = T.summarise([probes], [], demo=False, scorecard=card)
    assert "## Absolute numbers: the paper's beside ours" in real
    assert "| 3b | orion | baseline | vicreg | none | t_cells | - | 0.57 | 0.510 ± 0.010 | 3 |" in real
