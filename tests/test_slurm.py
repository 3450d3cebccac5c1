"""`snakemake --profile slurm` against a real SLURM: one node (slurmctld + slurmd + munged) with two fake GPUs.

The session fixture starts the daemons with .ci/slurm/setup.sh (config in /etc/slurm, state in a temp folder)
and stops exactly those daemons, by PID, with .ci/slurm/teardown.sh. The runs use the profile users get
(slurm/config.yaml, unchanged) plus command-line overrides: the tiny configs, a work directory, a short first
status check and, where a test says so, fewer retries.

Needs the SLURM and munge binaries (.ci/slurm/install.sh) and root. Without them the tests skip, saying why;
in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SLURM_CI = ROOT / ".ci" / "slurm"
CONFIGS = [str(ROOT / "config" / n) for n in ("config.yaml", "test.yaml", "slurm_test.yaml")]
RES = "results/slurm_test"
EXPERIMENT = "mnist_cifar_cifar_only"
RUN = f"{RES}/runs/{EXPERIMENT}/baseline/none/vicreg/seed0"
PRETRAIN_LOG = f"{RES}/logs/runs/{EXPERIMENT}/baseline/none/vicreg/seed0/pretrain.log"
DATA = f"{RES}/data/mnist_cifar"
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S*?/rule_(\w+?)/\S*?\.log)\)")
BINARIES = ("slurmctld", "slurmd", "munged", "munge", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")

pytestmark = pytest.mark.slow


def _unavailable() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"SLURM binaries missing ({', '.join(missing)}); install them with .ci/slurm/install.sh (root)"
    if os.geteuid() != 0:
        return "the SLURM tests start slurmd and munged and write /etc/slurm/slurm.conf: they need root"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI: the SLURM tests must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node cluster (partitions gpu* and cpu, gres gpu:2); torn down after the session."""
    reason = _unavailable()
    if reason:
        _skip_or_fail(reason)
    state = tmp_path_factory.mktemp("slurm-state")
    try:
        up = subprocess.run(
            ["bash", str(SLURM_CI / "setup.sh"), str(state)], capture_output=True, text=True, timeout=120, check=False
        )
        if up.returncode != 0:
            _skip_or_fail(f"cannot start the SLURM test cluster: {(up.stdout + up.stderr).strip()[-1500:]}")
        yield state
    finally:
        down = subprocess.run(
            ["bash", str(SLURM_CI / "teardown.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        print(down.stdout + down.stderr)


def snakemake_args(*args: str, workdir: Path, overlays: tuple[str, ...] = ()) -> list[str]:
    """The profile run: targets and overrides first, ``--configfile`` (which takes several files) last."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "slurm",
        *args,
        "-d",
        str(workdir),
        "--slurm-init-seconds-before-status-checks",
        "3",
        "--configfile",
        *CONFIGS,
        *overlays,
    ]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    return {**clean, "PYTHONUNBUFFERED": "1"}


def run_profile(*args: str, workdir: Path, overlays: tuple[str, ...] = (), timeout: int = 400):
    return subprocess.run(
        snakemake_args(*args, workdir=workdir, overlays=overlays),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def submissions(output: str) -> list[tuple[str, str, str]]:
    """(SLURM job id, rule, SLURM log) of every sbatch submission Snakemake reported."""
    return [(m.group(1), m.group(3), m.group(2)) for m in SUBMITTED.finditer(output)]


def show_job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (finished jobs stay visible for MinJobAge, 900 s on the test cluster)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    return dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)


def copy_built_data(source: Path, workdir: Path) -> None:
    """Reuse the dataset of the tiny run (timestamps kept, so Snakemake treats it as up to date)."""
    shutil.copytree(source / DATA, workdir / DATA)


@pytest.fixture(scope="module")
def tiny_run(slurm_cluster, tmp_path_factory):
    """One experiment's probes table of the tiny config, through sbatch: build_data on the cpu partition,
    pretrain and evaluate on the gpu partition with a GPU each, tables on this host."""
    workdir = tmp_path_factory.mktemp("slurm-tiny")
    t0 = time.monotonic()
    run = run_profile(f"{RES}/tables/{EXPERIMENT}/probes.csv", workdir=workdir)
    return workdir, run, time.monotonic() - t0


@pytest.mark.timeout(480)
def test_profile_runs_tiny_target_through_sbatch_with_gpu_requests(tiny_run):
    workdir, run, seconds = tiny_run
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    jobs = submissions(output)
    assert sorted(rule for _, rule, _ in jobs) == ["build_data", "evaluate", "pretrain"], jobs
    for job_id, rule, _ in jobs:
        info = show_job(job_id)
        assert info["JobState"] == "COMPLETED", info
        if rule == "build_data":
            assert info["Partition"] == "cpu" and "gpu" not in info.get("TresPerJob", ""), info
        else:  # the rule's gpu resource -> the plugin's --gpus=1 -> a GPU allocated by slurmctld
            assert info["Partition"] == "gpu", info
            assert info.get("TresPerJob") == "gres:gpu:1", info
            assert "cpu=4" in info["TRES"], info  # cpus_per_task of a GPU job (splicer.cluster)
    assert "localrule tables:" in output  # local rules never reach sbatch
    assert not (workdir / RES / "logs" / "warm_server.log").exists()  # warm_start (demo config): local runs only
    # the profile's pre-emption warning is part of the pretrain job's resources (appended to its sbatch call)
    pretrain_block = output.split("rule pretrain:")[1].split("Job ")[0]
    assert "slurm_extra=--signal=USR1@300" in pretrain_block, pretrain_block
    probes = pd.read_csv(workdir / RES / "tables" / EXPERIMENT / "probes.csv")
    acc = probes[probes.metric == "accuracy"]
    assert len(acc) > 0 and acc.value.between(0, 1).all()
    print(f"tiny target through SLURM: {seconds:.0f} s")


PREEMPT = """# long enough (600 steps) to be signalled mid-way; checkpoints every 20 steps
run_defaults:
  train: {epochs: 300, checkpoint_every: 20, log_every: 10}
"""


def _wait_for(predicate, timeout: float, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


@pytest.mark.timeout(420)
def test_preempted_training_resumes_in_the_resubmitted_job_with_identical_weights(tiny_run, tmp_path):
    workdir = tmp_path / "work"
    copy_built_data(tiny_run[0], workdir)
    overlay = tmp_path / "preempt.yaml"
    overlay.write_text(PREEMPT)
    log = tmp_path / "snakemake.log"
    run_dir = workdir / RUN
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            snakemake_args(f"{RUN}/encoder.pt", workdir=workdir, overlays=(str(overlay),)),
            cwd=ROOT,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # the first periodic checkpoint: the trainer is running, with its signal handler installed
        _wait_for(lambda: (run_dir / "checkpoint.pt").exists(), 240, proc, "the first checkpoint", log)
        queue = subprocess.run(["squeue", "-h", "-o", "%i %k %T"], capture_output=True, text=True, check=True)
        first = [line.split()[0] for line in queue.stdout.splitlines() if "rule_pretrain" in line]
        assert len(first) == 1, queue.stdout
        # what SLURM does at --signal=USR1@300: SIGUSR1 to every process of the job's steps (not the batch shell)
        subprocess.run(["scancel", "--signal", "USR1", first[0]], check=True)
        pretrain_log = workdir / PRETRAIN_LOG
        _wait_for(lambda: "pre-empted" in pretrain_log.read_text(), 60, proc, "the trainer's pre-emption", log)
        first_attempt = pretrain_log.read_text()  # the retry overwrites it
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Snakemake cancels its SLURM jobs
            proc.wait(timeout=60)
    output = log.read_text()
    assert rc == 0, output[-6000:]
    seconds = time.monotonic() - t0

    step = int(
        re.search(rf"signal {int(signal.SIGUSR1)} received: checkpoint written at step (\d+)", first_attempt).group(1)
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < step < 600 and metrics["resumed_from_step"] == step and metrics["steps"] == 600, (step, metrics)
    assert f"resuming from {RUN}/checkpoint.pt at step {step} of 600" in (workdir / PRETRAIN_LOG).read_text()
    jobs = [(job_id, slurm_log) for job_id, rule, slurm_log in submissions(output) if rule == "pretrain"]
    assert [j for j, _ in jobs][:1] == first and len(jobs) == 2, jobs
    assert "Trying to restart job" in output
    assert show_job(jobs[0][0])["JobState"] == "FAILED" and show_job(jobs[1][0])["JobState"] == "COMPLETED"
    # the job step's Snakemake outlived the signal (it ignores SIGUSR1) and reported the trainer's exit
    failed_log = Path(jobs[0][1]).read_text()
    assert "User defined signal" not in failed_log and "task 0: Exited with exit code 1" in failed_log, failed_log

    # the same run, uninterrupted, on this host: bit-identical weights
    reference = tmp_path / "reference"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "splicer.cli",
            "pretrain",
            "--config",
            str(run_dir / "run_config.json"),  # written by the job: the run config it trained with
            "--data",
            str(workdir / DATA / "pretrain_cifar_only"),
            "--out",
            str(reference),
        ],
        env={**env(), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    resumed = torch.load(run_dir / "encoder.pt", weights_only=True)["encoder_state"]
    straight = torch.load(reference / "encoder.pt", weights_only=True)["encoder_state"]
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
    assert json.loads((reference / "metrics.json").read_text())["final_loss"] == metrics["final_loss"]
    print(f"pre-empted at step {step}, resumed in SLURM job {jobs[1][0]}: {seconds:.0f} s")


TWO_TASKS = """# one pretraining run on 2 processes: one job of 2 tasks, one per (fake) GPU; LARS, so that the
# comparison with one process is not blurred by Adam's sign-like first steps on rounding-level gradients
experiments:
  mnist_cifar_cifar_only:
    run_overrides: {train: {devices: 2, epochs: 2, optimizer: lars, lr: 0.05}}
"""


@pytest.mark.timeout(420)
def test_two_task_training_job_through_the_profile(tiny_run, tmp_path):
    """train.devices: 2 -> one sbatch job with 2 tasks and 2 GPUs; in it `splicer pretrain` starts an srun step of
    2 ranks (rendezvous from SLURM's environment; gloo, as the cluster's GPUs are fake) whose run ends with the
    weights one process reaches on the same run config."""
    workdir = tmp_path / "work"
    copy_built_data(tiny_run[0], workdir)
    overlay = tmp_path / "two_tasks.yaml"
    overlay.write_text(TWO_TASKS)
    t0 = time.monotonic()
    run = run_profile(f"{RUN}/encoder.pt", workdir=workdir, overlays=(str(overlay),), timeout=360)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    seconds = time.monotonic() - t0
    ((job_id, rule, _),) = submissions(output)
    info = show_job(job_id)
    assert rule == "pretrain" and info["JobState"] == "COMPLETED", info
    assert info["NumTasks"] == "2" and info.get("TresPerJob") == "gres:gpu:2", info
    assert "cpu=8" in info["TRES"], info  # cpus_per_task (4) for each task
    log = (workdir / PRETRAIN_LOG).read_text()
    assert "srun --ntasks=2 --nodes=1 --ntasks-per-node=2 --kill-on-bad-exit=1 --cpus-per-task=4" in log, log
    run_dir = workdir / RUN
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 4, metrics
    assert log.count('"processes": 2') == 1  # one summary, from rank 0

    reference = tmp_path / "reference"  # one process, this host, same run config
    data = str(workdir / DATA / "pretrain_cifar_only")
    cli = [
        sys.executable,
        "-m",
        "splicer.cli",
        "pretrain",
        "--config",
        str(run_dir / "run_config.json"),
        "--data",
        data,
    ]
    subprocess.run(
        [*cli, "--out", str(reference), "-s", "train.devices=1"],
        env={**env(), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    single = json.loads((reference / "metrics.json").read_text())
    assert single["processes"] == 1 and single["final_loss"] == pytest.approx(metrics["final_loss"], rel=1e-5)
    ours = torch.load(run_dir / "encoder.pt", weights_only=True)["encoder_state"]
    ref = torch.load(reference / "encoder.pt", weights_only=True)["encoder_state"]
    assert ours.keys() == ref.keys()
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-5, msg=key)
    print(f"2-task training job through SLURM: {seconds:.0f} s")


@pytest.mark.timeout(300)
def test_failing_job_exits_nonzero_naming_its_log(tiny_run, tmp_path):
    workdir = tmp_path / "work"
    copy_built_data(tiny_run[0], workdir)
    images = workdir / DATA / "pretrain_cifar_only" / "images.npy"
    images.write_bytes(images.read_bytes()[:-100])  # the dataset is damaged after its build: the job must fail
    t0 = time.monotonic()
    run = run_profile(f"{RUN}/encoder.pt", "--retries", "0", workdir=workdir, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    ((job_id, rule, slurm_log),) = submissions(output)
    assert rule == "pretrain" and show_job(job_id)["JobState"] == "FAILED"
    assert "Error in rule pretrain" in output
    assert PRETRAIN_LOG in output and slurm_log in output  # the rule's log and the SLURM job's log, named
    assert "the dataset changed after the build" in (workdir / PRETRAIN_LOG).read_text()
    assert not (workdir / RUN / "encoder.pt").exists() and not (workdir / RUN / "metrics.json").exists()
    print(f"failing job: {time.monotonic() - t0:.0f} s")
