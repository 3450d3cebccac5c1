"""The paper config's protocol choices (optimiser, crop geometry) and the check that its segment jobs can run
before any job starts (issue #12 items 7, 8, 11)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import yaml
from test_pipeline import load
from test_workflow import ROOT, configs, snakemake

from splicer.pipeline.checks import check_config, segment_job_problems


def test_paper_optimiser_is_adam_with_a_standard_learning_rate() -> None:
    train = load("paper.yaml")["run_defaults"]["train"]
    assert train["optimizer"] in ("adam", "adamw")  # the paper cites Adam (Kingma & Ba), no LARS paper
    assert 1e-4 <= train["lr"] <= 3e-3
    text = (ROOT / "config" / "paper.yaml").read_text()
    block = text[text.index("  train:") : text.index("datasets:")]
    assert re.search(r"supplement.*not available", block, re.S), "say that the exact values are not available"


def test_both_configs_use_the_crop_aspect_chosen_for_mnist_cifar() -> None:
    from splicer.augment import AugmentConfig

    for name in ("paper.yaml", "config.yaml"):
        augment = load(name)["run_defaults"]["augment"]
        assert "crop_ratio_mode" in augment, name
        assert AugmentConfig.from_dict(augment).crop_ratio_mode == "relative", name


@pytest.fixture
def no_tiatoolbox(monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tiatoolbox" else real(name, *a))


def test_segment_jobs_that_cannot_run_are_named_with_what_to_do(no_tiatoolbox, tmp_path, monkeypatch) -> None:
    config = load("paper.yaml")
    monkeypatch.chdir(tmp_path)
    problems = segment_job_problems(config)
    assert set(problems) == {"nct_crc", "chestmnist"}
    assert "TIAToolbox" in problems["nct_crc"] and "pip install tiatoolbox" in problems["nct_crc"]
    assert "fallback: classical_nuclei" in problems["nct_crc"]
    assert str(tmp_path / "resources/weights/hybridgnet_bestMSE.pt") in problems["chestmnist"]
    assert "fallback: classical_lungs" in problems["chestmnist"]
    with pytest.warns(UserWarning, match=r"datasets\.nct_crc\.segment"):  # the dry run still lists the DAG
        check_config(config)
    # a fallback, the weights file in place, or TIAToolbox importable: nothing to report
    config["datasets"]["nct_crc"]["segment"]["fallback"] = "classical_nuclei"
    (tmp_path / "resources/weights").mkdir(parents=True)
    (tmp_path / "resources/weights/hybridgnet_bestMSE.pt").write_bytes(b"x")
    (tmp_path / "resources/HybridGNet/models").mkdir(parents=True)
    (tmp_path / "resources/HybridGNet/models/HybridGNet_2_IGSC.py").write_text("")
    assert segment_job_problems(config) == {}
    del config["datasets"]["nct_crc"]["segment"]["fallback"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tiatoolbox" else None)
    assert segment_job_problems(config) == {}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_run_stops_before_any_job_when_its_segment_jobs_cannot_run(tmp_path: Path) -> None:
    """Demo data with HoVer-Net requested and neither TIAToolbox nor weights nor fallback: the dry run lists the
    DAG (with a warning); the real run stops before the first job, naming the entry and what to do."""
    if importlib.util.find_spec("tiatoolbox") is not None:
        pytest.skip("TIAToolbox is importable here: HoVer-Net could run")
    override = tmp_path / "hovernet.yaml"
    override.write_text(yaml.safe_dump({"datasets": {"histology": {"segment": {"segmenter": "hovernet"}}}}))
    target = "results/test/segmented/histology/manifest.json"
    args = ("-d", str(tmp_path), *configs("config.yaml", "test.yaml"), str(override))
    dry = snakemake(target, "-n", *args, cwd=ROOT, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "segment" in dry.stdout and "datasets.histology.segment" in dry.stdout + dry.stderr
    run = snakemake(target, "--cores", "1", *args, cwd=ROOT, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "datasets.histology.segment" in out and "fallback: classical_nuclei" in out
    assert not (tmp_path / "results").exists() or not any(os.scandir(tmp_path / "results"))  # no job ran


def test_hybridgnet_state_dict_needs_its_source_checkout(tmp_path, monkeypatch) -> None:
    config = load("paper.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resources/weights").mkdir(parents=True)
    (tmp_path / "resources/weights/hybridgnet_bestMSE.pt").write_bytes(b"x")
    del config["datasets"]["chestmnist"]["segment"]["options"]
    problem = segment_job_problems(config, ["chestmnist"])["chestmnist"]
    assert "is a state dict" in problem and "segment.options.source" in problem
    config["datasets"]["chestmnist"]["segment"]["options"] = {"source": "resources/HybridGNet"}
    assert str(tmp_path / "resources/HybridGNet") in segment_job_problems(config, ["chestmnist"])["chestmnist"]
    (tmp_path / "resources/HybridGNet/models").mkdir(parents=True)
    (tmp_path / "resources/HybridGNet/models/HybridGNet_2_IGSC.py").write_text("")
    assert segment_job_problems(config, ["chestmnist"]) == {}
