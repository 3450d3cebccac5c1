"""splicer.cluster (resources of the heavy rules, SIGUSR1 in SLURM jobs) and the SLURM profile's content.

The profile on a real SLURM is tests/test_slurm.py; these need no daemons.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from configs import load

from splicer import cluster as C
from splicer.registry import KINDS

ROOT = Path(__file__).resolve().parents[1]
RULES = ("pretrain", "supervised", "evaluate")


@pytest.fixture(scope="module")
def paper():
    return load("paper.yaml")


@pytest.mark.parametrize("files", [("paper.yaml",), ("config.yaml",), ("config.yaml", "test.yaml")])
def test_every_experiment_of_every_config_gets_bounded_resources(files):
    cfg = load(*files)
    for experiment in cfg["experiments"]:
        for rule in RULES:
            minutes = C.runtime(cfg, rule, experiment)
            assert C.MIN_RUNTIME <= minutes <= C.MAX_RUNTIME, (experiment, rule, minutes)
            mem = C.mem_mb(cfg, rule, experiment)
            assert mem % 1000 == 0 and mem >= (C.GPU_HOST_MB if C.gpus(cfg) else C.CPU_HOST_MB)


def test_gpu_configs_ask_for_one_gpu_and_cpus_beside_it(paper):
    assert C.gpus(paper) == 1 and C.cpus_per_task(paper) == max(paper["threads"], 4)
    demo = load("config.yaml")
    assert C.gpus(demo) == 0 and C.cpus_per_task(demo) == demo["threads"]
    assert C.cpus_per_task({**demo, "device": "auto", "threads": 1}) == 4


def test_runtime_scales_with_epochs_data_and_attempt(paper):
    base = C.runtime(paper, "pretrain", "mnist_cifar")
    longer = dict(
        paper, run_defaults={**paper["run_defaults"], "train": {**paper["run_defaults"]["train"], "epochs": 400}}
    )
    assert C.runtime(longer, "pretrain", "mnist_cifar") > base
    # NCT-CRC (100k tiles at 224 px) takes longer than MNIST-CIFAR (10k at 64x32), within one day
    assert base < C.runtime(paper, "pretrain", "nct") <= C.MAX_RUNTIME
    assert C.runtime(paper, "pretrain", "mnist_cifar", attempt=2) == min(2 * base, C.MAX_RUNTIME)
    assert C.runtime(paper, "pretrain", "nct", attempt=3) == C.MAX_RUNTIME
    with pytest.raises(ValueError, match="no runtime estimate for rule 'tables'"):
        C.runtime(paper, "tables", "mnist_cifar")


def test_memory_follows_the_data_a_job_maps(paper):
    assert C.mem_mb(paper, "pretrain", "nct") > C.mem_mb(paper, "pretrain", "mnist_cifar")
    hint = C.size_hint(paper, "nct_crc")
    expected = C.GPU_HOST_MB + 1.25 * hint.images * hint.image_bytes / 1e6
    assert expected <= C.mem_mb(paper, "pretrain", "nct") < expected + 1000
    with pytest.raises(ValueError, match="no memory estimate"):
        C.mem_mb(paper, "figure", "nct")


def test_size_hint_reads_params_source_and_caps(paper):
    demo = load("config.yaml", "test.yaml")
    hint = C.size_hint(demo, "multiplex")
    assert (hint.images, hint.channels, hint.eval_images) == (64, 19, 3 * (48 + 24 + 48))
    assert C.size_hint(demo, "histology").height == 16
    paper["datasets"]["chestmnist"] = {"kind": "chestmnist"}
    assert C.size_hint(paper, "chestmnist") == KINDS["chestmnist"].size
    paper["datasets"]["chestmnist"] = {
        "kind": "chestmnist",
        "source": {"size": 64},
        "caps": {"pretrain/train": 1000, "*": 5000},
    }
    capped = C.size_hint(paper, "chestmnist")
    assert (capped.height, capped.images, capped.eval_images) == (64, 1000, 15000)
    paper["datasets"]["orion_crc"] = {"kind": "orion_crc", "params": {"crop_size": 48, "n_pretrain": 7000}}
    orion = C.size_hint(paper, "orion_crc")
    assert (orion.height, orion.images, orion.channels) == (48, 7000, 19)
    paper["datasets"]["mine"] = {"kind": "folder"}
    assert C.size_hint(paper, "mine") == KINDS["folder"].size
    paper["datasets"]["mine"] = {"kind": "folder", "params": {"size": [48, 96]}}
    assert (C.size_hint(paper, "mine").height, C.size_hint(paper, "mine").width) == (48, 96)


def test_sigusr1_is_left_alone_outside_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    before = signal.getsignal(signal.SIGUSR1)
    assert C.ignore_preemption_signal_in_job() is False
    assert signal.getsignal(signal.SIGUSR1) == before


CHILD = textwrap.dedent("""
    import os, signal, subprocess, sys
    from splicer import cluster
    assert cluster.ignore_preemption_signal_in_job()
    # the rule's shell survives SIGUSR1 (inherited SIG_IGN); a trainer below it still gets its own handler
    trainer = ("import os, signal, sys\\n"
               "got = []\\n"
               "signal.signal(signal.SIGUSR1, lambda *a: got.append(1))\\n"
               "os.kill(os.getppid(), signal.SIGUSR1); os.kill(os.getpid(), signal.SIGUSR1)\\n"
               "sys.exit(143 if got else 0)")
    shell = subprocess.run(["bash", "-c", f"{sys.executable} -c '{trainer}'; echo shell-exit-$?"],
                           capture_output=True, text=True)
    os.kill(os.getpid(), signal.SIGUSR1)  # and so does this (Snakemake's) process
    print(shell.stdout.strip(), "snakemake-alive")
""")


def test_in_a_slurm_job_only_the_trainer_handles_sigusr1():
    env = {**os.environ, "SLURM_JOB_ID": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["shell-exit-143", "snakemake-alive"]


# ------------------------------------------------------------------------------------------------ the profile


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())


def test_profile_selects_the_slurm_plugin_the_paper_and_squeue_status(profile):
    assert profile["executor"] == "slurm"
    assert profile["configfile"] == "config/paper.yaml" and (ROOT / profile["configfile"]).exists()
    assert profile["slurm-status-command"] == "squeue"  # works without slurmdbd
    assert profile["retries"] >= 1  # pre-empted training resumes in the resubmitted job
    assert "software-deployment-method" not in profile  # jobs use the active environment unless --sdm conda


def test_profile_resources_are_valid_for_the_plugin_and_name_real_rules(profile):
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    rules = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        rules.update(
            line.split()[1].rstrip(":")
            for line in smk.read_text().splitlines()
            if line.startswith("rule ") and line.rstrip().endswith(":")
        )
    assert set(profile["set-resources"]) <= rules, set(profile["set-resources"]) - rules
    import re

    for rule, resources in profile["set-resources"].items():
        assert "gpu" not in resources and "gres" not in resources, f"{rule}: GPU requests belong to the rules"
        extra = str(resources.get("slurm_extra", ""))
        for pattern, name in get_forbidden_slurm_options().items():
            assert not re.search(pattern, extra), f"{rule}: slurm_extra sets the {name}, which the plugin manages"
    assert profile["set-resources"]["pretrain"]["slurm_extra"] == "'--signal=USR1@300'"
    assert "slurm_account" not in profile["default-resources"]  # set only where a site needs one


def test_segment_jobs_ask_for_a_gpu_only_for_pretrained_networks(paper):
    assert (C.segment_gpu(paper, "nct_crc"), C.segment_runtime(paper, "nct_crc")) == (1, 720)
    demo = load("config.yaml")
    assert (C.segment_gpu(demo, "histology"), C.segment_runtime(demo, "histology")) == (0, 240)


def test_pretrain_job_of_several_processes_asks_for_one_task_per_gpu(paper):
    """train.devices x train.nodes -> gpu, tasks, tasks_per_gpu, nodes and mpi (the executor plugin's multi-task
    job); a one-process run leaves all but gpu unset, so its job is submitted as before."""
    from splicer.config import deep_merge
    from splicer.pipeline.grid import experiment_runs

    run = experiment_runs(paper, "nct")[0]
    assert C.launch(paper, run) == {"gpu": 1, "tasks": None, "tasks_per_gpu": None, "nodes": None, "mpi": None}
    assert C.processes(paper, run) == (1, 1) and C.world(paper, run) == 1
    eight = deep_merge(paper, {"experiments": {"nct": {"run_overrides": {"train": {"devices": 4, "nodes": 2}}}}})
    assert C.launch(eight, run) == {"gpu": 8, "tasks": 8, "tasks_per_gpu": 1, "nodes": 2, "mpi": "srun"}
    assert C.world(eight, run) == 8
    on_cpu = C.launch({**deep_merge(paper, {"run_defaults": {"train": {"devices": 2}}}), "device": "cpu"}, run)
    assert on_cpu == {"gpu": 0, "tasks": 2, "tasks_per_gpu": None, "nodes": 1, "mpi": "srun"}
    # time shrinks with the processes (an assumed efficiency), memory per node grows with its processes
    one = C.runtime(paper, "pretrain", "nct", world=1)
    assert C.runtime(paper, "pretrain", "nct", world=8) < one
    assert C.mem_mb(paper, "pretrain", "nct", devices=4) == C.mem_mb(paper, "pretrain", "nct") + 3 * C.GPU_HOST_MB
    bad = deep_merge(paper, {"run_defaults": {"train": {"devices": 0}}})
    with pytest.raises(ValueError, match=r"train\.devices must be a positive int"):
        C.launch(bad, run)
