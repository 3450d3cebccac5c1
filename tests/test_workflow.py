"""Real Snakemake runs: the tiny config end to end, the paper config's DAG, lint, and config errors."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
import yaml

from splicer.claims import CLAIMS, VERDICTS

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
FIGURES = ["fig2a", "fig2b", "fig2c", "fig3a", "fig3b", "fig3c", "fig3d", "fig3e", "fig4a", "fig4b", "figS1a"]
FIGURES += ["tableS2", "scorecard"]
TIDY = ["experiment", "dataset", "method", "loss", "pairing", "seed", "task", "variant", "metric", "value"]


def snakemake(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def configs(*names: str) -> list[str]:
    """``--configfile`` takes several files: keep it last on the command line (targets go before it)."""
    return ["--configfile", *[str(ROOT / "config" / n) for n in names]]


def jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+(\d+)\s*$", table, re.M)}


@pytest.mark.slow
def test_tiny_config_runs_end_to_end(tmp_path):
    run = snakemake("all", "--cores", "2", "-d", str(tmp_path), *configs("config.yaml", "test.yaml"), cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    res = tmp_path / "results" / "test"
    for name in FIGURES:
        png, pdf = res / "figures" / f"{name}.png", res / "figures" / f"{name}.pdf"
        image = mpimg.imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100, name
        assert pdf.read_bytes()[:5] == b"%PDF-", name
    probes = pd.read_csv(res / "tables" / "mnist_cifar" / "probes.csv")
    assert list(probes.columns[: len(TIDY)]) == TIDY
    acc = probes[probes.metric == "accuracy"]
    assert set(acc.variant) == {"rNONE", "rMNIST", "rCIFAR"}
    assert set(acc.method) == {"baseline", "sigma_je", "trident", "splicer"}
    assert set(acc.seed) == {0, 1}
    assert acc.value.between(0, 1).all()
    spectra = pd.read_csv(res / "tables" / "mnist_cifar" / "spectra.csv")
    assert spectra.groupby(["method", "pairing", "seed"]).value.max().tolist() == pytest.approx([1.0] * 8)
    ceilings = pd.read_csv(res / "tables" / "mnist_cifar" / "ceilings.csv")
    assert set(ceilings.kind) == {"ssl_complex_only", "supervised_complex_only"}
    corr = pd.read_csv(res / "tables" / "orion" / "correlations.csv")
    assert "mean_abs_correlation" in set(corr.metric)
    scorecard = pd.read_csv(res / "figures" / "scorecard.csv")
    assert scorecard["data"].str.contains("demo").all() and set(scorecard.verdict) <= set(VERDICTS)
    assert set(scorecard.claim) == {c.id for c in CLAIMS}  # every claim judged (or inconclusive), none dropped
    # every run folder holds its encoder, metrics and evaluation; logs exist for every job that trained
    for metrics in (res / "runs").glob("*/*/*/*/seed*/metrics.json"):
        run_dir = metrics.parent
        assert (run_dir / "encoder.pt").stat().st_size > 0 and (run_dir / "evaluation.json").exists()
        assert json.loads(metrics.read_text())["steps"] > 0
    # warm_start (the demo's, inherited by the tiny config): the server ran the training jobs and stopped with
    # the run, its socket gone (the training jobs that start before it listens run in their own process)
    served = (res / "logs" / "warm_server.log").read_text()
    trained = len(list((res / "runs").glob("*/*/*/*/seed*/metrics.json")))
    assert 0 < len(re.findall(r"^job \d+: splicer pretrain ", served, re.M)) <= trained
    assert re.search(r"^splicer warm: stopped after \d+ job", served, re.M)
    serving = re.search(r"serving on (\S+) ", served)
    assert serving, served
    socket = serving.group(1)
    assert not Path(socket).exists() and not Path(socket).parent.exists()
    # a second invocation has nothing to do
    again = snakemake("-n", "--cores", "2", "-d", str(tmp_path), *configs("config.yaml", "test.yaml"), cwd=ROOT)
    assert "Nothing to be done" in again.stdout + again.stderr
    # the HTML report bundles every figure with its caption (a broken caption fails here)
    report = tmp_path / "report.html"
    made = snakemake("--report", str(report), "-d", str(tmp_path), *configs("config.yaml", "test.yaml"), cwd=ROOT)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    assert report.stat().st_size > 100_000


def test_paper_dry_run_lists_every_stage_for_every_dataset(tmp_path):
    run = snakemake("all", "-n", "-d", str(tmp_path), *configs("paper.yaml"), cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = jobs(run.stdout)
    for rule in (
        "download",
        "build_data",
        "segment",
        "pretrain",
        "evaluate",
        "supervised",
        "tables",
        *FIGURES,
        "all",
    ):
        assert counts.get(rule, 0) > 0, f"{rule} missing from the paper DAG: {counts}"
    assert counts["build_data"] == 8  # MNIST-CIFAR, Orion-CRC, EuroSAT, MMEarth, NCT-CRC, Camelyon17, Chest/Pneumonia
    assert counts["pretrain"] == counts["evaluate"] and counts["pretrain"] >= 150
    for kind in (
        "mnist_cifar",
        "eurosat",
        "mmearth",
        "nct_crc",
        "camelyon17",
        "chestmnist",
        "pneumoniamnist",
        "orion_crc",
    ):
        assert f"resources/{kind}/" in run.stdout, kind


def test_one_figure_runs_only_what_it_needs(tmp_path):
    run = snakemake("fig2c", "-n", "-d", str(tmp_path), *configs("config.yaml", "test.yaml"), cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = jobs(run.stdout)
    assert counts["build_data"] == 1 and "segment" not in counts and "fig3b" not in counts
    assert "results/test/runs/orion" not in run.stdout
    assert counts["pretrain"] == 4 * 2 + 1  # mnist_cifar runs x seeds + the texture-only ceiling run (one seed)


def test_the_rank_research_overlay_plans_only_its_runs(tmp_path):
    """config/research/rank_wider.yaml (README, Fig. 2b) on top of the demo config: its header's command plans
    Baseline and TriDeNT(digit) x 2 losses x 2 seeds, plus the one texture-only ceiling run, and nothing else."""
    target = "results/rank_wider/tables/mnist_cifar/spectra.csv"
    run = snakemake(target, "-n", "-d", str(tmp_path), *configs("config.yaml", "research/rank_wider.yaml"), cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert jobs(run.stdout)["pretrain"] == 2 * 2 * 2 + 1
    assert "splicer/cifar" not in run.stdout and "sigma_je" not in run.stdout
    assert target in (ROOT / "config" / "research" / "rank_wider.yaml").read_text()


def header_command(path: Path) -> list[str]:
    """The ``snakemake ...`` arguments a research config's header gives (``\\`` continuations joined)."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("snakemake "))
    command = []
    for line in lines[start:]:
        command.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(command))[1:]


def dry_run_header_command(name: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Plan config/research/<name>.yaml's header command in ``tmp_path``, shell commands printed; its config files
    must be the demo config and the overlay."""
    args = header_command(ROOT / "config" / "research" / f"{name}.yaml")
    at = args.index("--configfile")
    assert args[:2] == ["--cores", "2"] and args[at + 1 :] == ["config/config.yaml", f"config/research/{name}.yaml"]
    files = [str(ROOT / f) for f in args[at + 1 :]]
    return snakemake(*args[:at], "-n", "-p", "-d", str(tmp_path), "--configfile", *files, cwd=ROOT)


def planned_run_configs(dry_run_output: str) -> dict[str, list[dict]]:
    """Experiment -> the run configs (``--config-json``) of its planned pretrain and supervised jobs (``-p``)."""
    out: dict[str, list[dict]] = {}
    for cfg, path in re.findall(r"--config-json '(\{.*?\})' --data \S+ --out (\S+)", dry_run_output):
        experiment = path.split("/")[3]  # results/<name>/runs|supervised/<experiment>/...
        out.setdefault(experiment, []).append(json.loads(cfg))
    return out


@pytest.mark.parametrize("name", ["width8", "mnist_cifar_b128", "mnist_cifar_b96", "mnist_cifar_b64"])
def test_the_time_budget_overlays_plan_every_mnist_cifar_arm_a_claim_reads(tmp_path, name):
    """config/research/{width8,mnist_cifar_b*}.yaml (README, "Time budget"): the header's command plans
    Baseline, TriDeNT(texture), TriDeNT(digit) and SpliCER x 2 losses x 3 seeds, the texture-only SSL ceiling x 2
    losses x 3 seeds and the supervised ceiling x 3 seeds, and nothing else; every one of them (the ceilings too)
    trains with the encoder and budget the overlay pins."""
    overlay = yaml.safe_load((ROOT / "config" / "research" / f"{name}.yaml").read_text())["experiments"]
    run = dry_run_header_command(name, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = jobs(run.stdout)
    assert counts["pretrain"] == 4 * 2 * 3 + 2 * 3 and counts["supervised"] == 3
    assert set(counts) == {"build_data", "pretrain", "supervised", "tables"}
    assert "sigma_je" not in run.stdout and f"results/{name}/runs/mnist_cifar/splicer/cifar/simclr/seed2" in run.stdout
    planned = planned_run_configs(run.stdout)
    assert sorted(planned) == ["mnist_cifar", "mnist_cifar_cifar_only"]
    assert len(planned["mnist_cifar"]) == 4 * 2 * 3 + 3 and len(planned["mnist_cifar_cifar_only"]) == 2 * 3
    for experiment, configs in planned.items():
        pins = overlay[experiment]["run_overrides"]
        for cfg in configs:
            assert {k: cfg["train"][k] for k in pins["train"]} == pins["train"], experiment
            if "model" in pins:
                assert cfg["model"]["encoder"] == pins["model"]["encoder"], experiment


def test_the_rgb_view_overlay_plans_its_three_arms(tmp_path):
    """config/research/rgb_view.yaml (README, hyperspectral): the header's command plans Baseline, SpliCER (bands)
    and SpliCER (bands + view chunk) on the RGB-only data, VICReg, 5 seeds, and nothing else."""
    run = dry_run_header_command("rgb_view", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert jobs(run.stdout)["pretrain"] == 3 * 5
    assert "results/rgb_view/runs/eurosat_rgb/splicer/bands+view/vicreg/seed4" in run.stdout
    assert "mnist_cifar" not in run.stdout


def test_lint_is_clean():
    run = snakemake("--lint", cwd=ROOT, timeout=300)
    assert "Congratulations, your workflow is in a good condition!" in run.stdout + run.stderr, run.stdout[-3000:]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("experiments:\n  mnist_cifar:\n    pretrain_splt: train\n", "pretrain_splt"),
        ("run_defaults:\n  train: {epocs: 3}\n", "epocs"),
        ("experiments:\n  mnist_cifar:\n    runs: [{method: splicer, pairing: tex}]\n", "unknown pairing 'tex'"),
        ("losses: [byol]\n", "byol"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, override, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    run = snakemake(
        "--cores",
        "1",
        "-d",
        str(tmp_path),
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(bad),
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode != 0
    assert message in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()
