"""The warm-start server (splicer/warm.py): a job run through it is the job a fresh process runs, bit for bit,
with the same streams, exit statuses and signal handling; without a server, jobs run in their own process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from splicer import warm
from splicer.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_PREEMPTED
from splicer.data.format import save_dataset
from splicer.run import RunLocked, run_lock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), **dict.fromkeys(warm.THREAD_VARIABLES, "1")}  # as Snakemake's jobs
ENV.pop(warm.ENV, None)
RUN = {
    "method": {"name": "splicer", "inputs": ["top", "bottom"], "loss": "vicreg", "options": {"include_view": True}},
    "components": {"top": {"type": "region", "rows": [0, 8]}, "bottom": {"type": "region", "rows": [8, 16]}},
    "model": {"encoder": {"arch": "resnet", "base_width": 4, "blocks": [1]}, "projector_hidden": [16], "embed_dim": 24},
    "augment": {"p_noise": 0.5},
    "train": {"epochs": 2, "batch_size": 16, "progress": False, "device": "cpu", "warmup_epochs": 0},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    rng = np.random.default_rng(0)
    n = 64
    images = rng.integers(0, 256, (n, 3, 16, 8), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.int64)
    images[labels == 1, :, 8:] //= 4
    meta = {"name": "tiny", "channel_names": ["r", "g", "b"], "class_names": ["a", "b"]}
    meta |= {"split_names": ["train", "val", "test"], "mask_names": []}
    save_dataset(root / "data", images, labels, (np.arange(n) % 3).astype(np.uint8), meta)
    (root / "run.yaml").write_text(yaml.safe_dump(RUN))
    return root


@pytest.fixture(scope="module")
def server(data):
    """A server started as the Snakefile starts it (its parent: this test process)."""
    started = warm.start(data / "warm.log", threads=1)
    deadline = time.monotonic() + 180
    while "serving on" not in (data / "warm.log").read_text():  # listening (the socket exists before that)
        assert started.process.poll() is None, (data / "warm.log").read_text()
        assert time.monotonic() < deadline, "the warm server did not start listening"
        time.sleep(0.1)
    yield started
    warm.stop(started)


def _splicer(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "splicer.cli", *args], env=env, cwd=kw.pop("cwd", ROOT), **kw)


def _pretrain_args(data, out, *extra):
    return ["pretrain", "--config", str(data / "run.yaml"), "--data", str(data / "data"), "--out", str(out), *extra]


def _served(data) -> int:
    return len(re.findall(r"^job ", (data / "warm.log").read_text(), flags=re.M))


def _signal_state(pid: int) -> str:
    """A process's name, state and signal masks from /proc (what a lost signal would show)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return f"{pid}: gone"
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    keys = ("Name", "State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
    return f"{pid}: " + " ".join(f"{k}={fields.get(k, '').strip()}" for k in keys)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _finish(proc: subprocess.Popen, data: Path, timeout: float = 120) -> str:
    """The client's stderr once it exits; if it does not within ``timeout``, fail with the signal state of the
    client, the job's supervisor and its worker and the server log's tail (then kill the client, which stops
    them), so that a hang says where the signal stopped."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        log = (data / "warm.log").read_text()
        report = [f"client {_signal_state(proc.pid)}"]
        if found := re.findall(r"\(supervisor (\d+)\)", log):
            supervisor = int(found[-1])
            report.append(f"supervisor {_signal_state(supervisor)}")
            report += [f"worker {_signal_state(child)}" for child in _children(supervisor)]
        proc.kill()
        _, err = proc.communicate()
        pytest.fail("the client did not exit:\n" + "\n".join(report) + f"\nstderr: {err}\nlog tail: {log[-1500:]}")


def test_a_job_through_the_server_equals_a_fresh_process_bit_for_bit(data, server, tmp_path):
    warm_env = {**ENV, warm.ENV: server.path}
    before = _served(data)
    results = {}
    for name, env in (("fresh", ENV), ("warm", warm_env)):
        out = tmp_path / name
        evaluate = ["--evaluate-out", str(out / "evaluation.json"), "--eval", f"tiny={data / 'data'}"]
        proc = _splicer(
            [*_pretrain_args(data, out), *evaluate],
            env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        results[name] = (out, stdout)
    assert _served(data) == before + 1  # the warm run did go through the server
    (fresh, fresh_out), (warm_dir, warm_out) = results["fresh"], results["warm"]
    a = torch.load(fresh / "encoder.pt", weights_only=True)["encoder_state"]
    b = torch.load(warm_dir / "encoder.pt", weights_only=True)["encoder_state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((fresh / "evaluation.json").read_text()) == json.loads((warm_dir / "evaluation.json").read_text())
    assert (fresh / "metrics.csv").read_text() == (warm_dir / "metrics.csv").read_text()
    assert json.loads(warm_out)["probes"]["tiny"] == json.loads(fresh_out)["probes"]["tiny"]  # stdout reached us


def test_streams_cwd_environment_and_exit_status_are_the_clients(data, server, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**RUN, "train": {**RUN["train"], "epoch": 3}}))
    log = tmp_path / "job.log"
    env = {**ENV, warm.ENV: server.path}
    before = _served(data)
    with open(log, "w") as fh:  # as a rule's `> {log} 2>&1`
        proc = _splicer(
            ["pretrain", "--config", "bad.yaml", "--data", str(data / "data"), "--out", "run"],
            env,
            cwd=tmp_path,  # relative paths resolve in the client's directory
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        assert proc.wait(timeout=120) == EXIT_BAD_INPUT
    assert "epoch" in log.read_text() and not (tmp_path / "run").exists()
    assert _served(data) == before + 1


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_and_sigterm_reach_the_trainer_through_the_client(data, server, tmp_path, inherited):
    """Also when the client starts with SIGINT and SIGQUIT ignored, as a background job of a script (``cmd &``
    without job control) does: a fresh process's trainer installs its own SIGINT handler, so the job still stops
    with a checkpoint and 130 (found in a CI rehearsal run as ``(bash .ci/run &)``)."""
    ignore = None
    if inherited == "ignored":

        def ignore():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGQUIT, signal.SIG_IGN)

    cfg = {**RUN, "train": {**RUN["train"], "epochs": 10_000, "checkpoint_every": 0, "log_every": 1}}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(cfg))
    env = {**ENV, warm.ENV: server.path}
    before = _served(data)
    for sig, expected in ((signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_PREEMPTED)):
        out = tmp_path / sig.name
        args = ["pretrain", "--config", str(tmp_path / "long.yaml"), "--data", str(data / "data"), "--out", str(out)]
        proc = _splicer(args, env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
        deadline = time.monotonic() + 120
        while not ((out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(sig)
        err = _finish(proc, data)
        assert proc.returncode == expected, err
        assert "Traceback" not in err and f"stopped by {sig.name}; checkpoint written at step" in err
        assert (out / "checkpoint.pt").exists()
    assert _served(data) == before + 2


def test_a_killed_client_stops_its_job(data, server, tmp_path):
    cfg = {**RUN, "train": {**RUN["train"], "epochs": 10_000, "checkpoint_every": 0, "log_every": 1}}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(tmp_path / "long.yaml"), "--data", str(data / "data"), "--out", str(out)]
    proc = _splicer(args, {**ENV, warm.ENV: server.path}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    # the worker got SIGTERM: it writes a checkpoint
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert time.monotonic() < deadline, "the orphaned worker was not stopped"
        time.sleep(0.1)
    deadline = time.monotonic() + 120
    while True:  # and its process is gone: the run directory's lock is free
        try:
            with run_lock(out, "test"):
                break
        except RunLocked:
            assert time.monotonic() < deadline, "the orphaned worker still holds the run directory"
            time.sleep(0.1)


def test_without_a_server_the_command_runs_in_its_own_process(data, tmp_path):
    missing = str(tmp_path / "no-such-socket")
    assert warm.forward(missing, ["--help"]) is None
    proc = _splicer(
        [*_pretrain_args(data, tmp_path / "run"), "-s", "train.epochs=1"],
        {**ENV, warm.ENV: missing},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert (tmp_path / "run" / "encoder.pt").exists()


def test_the_server_stops_when_its_parent_does(tmp_path):
    """The Snakemake process that started it is killed without running its hooks: the server follows."""
    log = tmp_path / "warm.log"
    code = (
        "import sys, time; from splicer import warm; "
        f"s = warm.start({str(log)!r}, threads=1); print(s.process.pid, s.path, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    pid, path = parent.stdout.readline().split()
    deadline = time.monotonic() + 180
    while not Path(path).exists():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
        assert time.monotonic() < deadline, "the server outlived its parent"
        time.sleep(0.1)
    assert not Path(path).exists()
    assert "stopped after 0 job(s)" in log.read_text()


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "zombie"


def test_a_job_from_another_interpreter_is_refused_and_runs_here(data, server, monkeypatch):
    """Under --sdm conda a rule's python is another environment's: the server must not run it in its own."""
    monkeypatch.setattr(warm, "_interpreter", lambda: ["/opt/conda/envs/other", "3.11.0"])
    before = (data / "warm.log").read_text().count("refused a job: another interpreter")
    assert warm.forward(server.path, ["--help"]) is None
    assert (data / "warm.log").read_text().count("refused a job: another interpreter") == before + 1


def _long_job(data, tmp_path, env, **kw):
    cfg = {**RUN, "train": {**RUN["train"], "epochs": 10_000, "checkpoint_every": 0, "log_every": 1}}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(tmp_path / "long.yaml"), "--data", str(data / "data"), "--out", str(out)]
    proc = _splicer(args, env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)
    deadline = time.monotonic() + 120
    while not ((out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc, out


def test_a_signal_that_kills_the_worker_gives_128_plus_its_number(data, server, tmp_path):
    proc, _ = _long_job(data, tmp_path, {**ENV, warm.ENV: server.path})
    proc.send_signal(signal.SIGUSR2)  # not handled by the trainer: it kills the worker, as a fresh process
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR2


def test_a_signal_the_job_inherited_as_ignored_stays_ignored(data, server, tmp_path):
    """`nohup snakemake ...`: a dropped SSH session (SIGHUP) must not stop the jobs."""
    ignore_hup = lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)  # noqa: E731
    proc, out = _long_job(data, tmp_path, {**ENV, warm.ENV: server.path}, preexec_fn=ignore_hup)
    rows = len((out / "metrics.csv").read_text().splitlines())
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while len((out / "metrics.csv").read_text().splitlines()) < rows + 3:  # still training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err


def test_jobs_with_other_thread_counts_are_refused_and_run_here(data, server, monkeypatch):
    """The server's BLAS and OpenMP pools were sized by its own OMP_NUM_THREADS when it imported them."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert warm.forward(server.path, ["--help"]) is None
    assert "refused a job: OMP_NUM_THREADS='2' (the server's: '1')" in (data / "warm.log").read_text()


def test_a_server_that_closes_before_starting_the_job_means_run_here(tmp_path):
    path = str(tmp_path / "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def accept_and_drop():
        conn, _ = listener.accept()
        conn.recv(1 << 16)  # the request, then gone without a word
        conn.close()

    thread = threading.Thread(target=accept_and_drop)
    thread.start()
    assert warm.forward(path, ["--help"]) is None
    thread.join()
    listener.close()


def test_never_inside_a_slurm_job_nor_for_remote_jobs(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert warm.wanted(True, True) and not warm.wanted(False, True) and not warm.wanted(True, False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not warm.wanted(True, True)
