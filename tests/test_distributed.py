"""Data-parallel training on 2 CPU processes (gloo) against one process on the same global batch.

The workers (tests/distributed_workers.py) run under ``torch.multiprocessing`` and join their process group the
way a torchrun launch does (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import distributed_workers as W
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from splicer.distributed import (
    Group,
    LaunchEnv,
    ShardedGenerator,
    expand_hostlist,
    launch_command,
    launch_env,
)
from splicer.train import train

WORLD = 2


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args) -> None:
    mp.start_processes(fn, args=(WORLD, _port(), *args), nprocs=WORLD, join=True, start_method="spawn")


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


# ------------------------------------------------------------------------------------------------ one step


@pytest.fixture(scope="module")
def two_process_step(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist-step")
    _spawn(W.step_worker, str(out))
    return {rank: torch.load(out / f"distributed{rank}.pt", weights_only=True) for rank in range(WORLD)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(W.CONFIGS))
def test_loss_and_gradients_equal_one_process_on_the_global_batch(two_process_step, name):
    """VICReg's variance/covariance and NT-Xent's negatives through the gather, batch norm on the global batch,
    the augmentation of every rank's rows as one process draws it: loss and every gradient agree to 1e-6 (float64;
    in float32, where only the order of the sums differs, to float32 rounding)."""
    ours = two_process_step[0][name]
    single = W.loss_and_grads(name, Group())
    assert ours["loss"] == pytest.approx(single["loss"], rel=1e-6, abs=1e-6)
    assert ours["metrics"].keys() == single["metrics"].keys()
    for key, value in single["metrics"].items():
        assert ours["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert ours["grads"].keys() == single["grads"].keys()
    for key, grad in single["grads"].items():
        torch.testing.assert_close(ours["grads"][key], grad, rtol=1e-6, atol=1e-6, msg=key)
    for key, buf in single["buffers"].items():  # synchronised batch norm: the running statistics too
        torch.testing.assert_close(ours["buffers"][key].to(buf.dtype), buf, rtol=1e-6, atol=1e-6, msg=key)
    ours32, single32 = two_process_step[0]["float32"][name], W.loss_and_grads(name, Group(), dtype=torch.float32)
    assert ours32["loss"] == pytest.approx(single32["loss"], rel=1e-6)
    for key, grad in single32["grads"].items():  # relative to the layer's largest gradient
        assert float((ours32["grads"][key] - grad).abs().max()) <= 1e-4 * max(float(grad.abs().max()), 1.0), key


def test_splicer_chunks_stay_decoupled_through_the_gather(two_process_step):
    """Chunk 0's pair loss, computed on the gathered global batch, moves the primary projector's rows of chunk 0
    on every rank and not one entry of the other chunks' rows."""
    for rank in range(WORLD):
        chunks = two_process_step[rank]["chunks"]
        assert chunks["inside"] > 1e-6 and chunks["outside"] == 0.0, (rank, chunks)
    assert W.chunk_gradient(Group())["outside"] == 0.0


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """20 steps of SpliCER (VICReg) on 2 processes."""
    run = tmp_path_factory.mktemp("dist-train")
    _spawn(W.train_worker, str(run), "splicer-vicreg", -1, -1)
    return run


@pytest.mark.timeout(180)
def test_twenty_steps_end_with_the_weights_of_one_process(uninterrupted, tmp_path):
    ranks = [json.loads((uninterrupted / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert all(r["finished"] and r["world_size"] == WORLD and r["steps"] == 20 for r in ranks), ranks
    assert ranks[0]["final_loss"] == ranks[1]["final_loss"]
    single = train(W.build("splicer-vicreg"), W.images(), W.train_config(), tmp_path)
    assert single["processes"] == 1 and ranks[0]["processes"] == WORLD
    assert ranks[0]["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)  # float32: sums in another order
    ours, ref, init = _state(uninterrupted), _state(tmp_path), W.build("splicer-vicreg").state_dict()
    assert ours.keys() == ref.keys()
    for key in ref:  # every tensor to float32 rounding, amplified a little by 20 steps (norm-wise)
        gap = float((ours[key].double() - ref[key].double()).norm())
        assert gap <= 1e-4 * float(ref[key].double().norm()) + 1e-6, (key, gap)
    # and the 20 updates themselves (final - initial weights) agree to 1e-4 of their size: a wrong image, view or
    # gradient anywhere would differ at order 1
    floats = [k for k in ref if ref[k].is_floating_point()]
    diff = sum(float((ours[k].double() - ref[k].double()).pow(2).sum()) for k in floats) ** 0.5
    update = sum(float((ref[k].double() - init[k].double()).pow(2).sum()) for k in floats) ** 0.5
    assert update > 0.1 and diff < 1e-4 * update, (diff, update)
    # rank 0 wrote every file, once
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["processes"] == WORLD
    rows = (uninterrupted / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 21))


@pytest.mark.timeout(180)
def test_sigusr1_to_one_rank_stops_both_at_the_same_step_and_resume_is_identical(uninterrupted, tmp_path):
    """SIGUSR1 reaches rank 1 only, after step 7: both ranks checkpoint step 8 (agreed in step 8's all-reduce) and
    stop; a resumed 2-process run ends with the weights of the uninterrupted one, bit for bit."""
    _spawn(W.train_worker, str(tmp_path), "splicer-vicreg", 1, 7)
    stopped = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["finished"] for r in stopped] == [False, False], stopped
    assert [r["preempted_at"] for r in stopped] == [8, 8], stopped
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 8
    assert not (tmp_path / "encoder.pt").exists()

    _spawn(W.train_worker, str(tmp_path), "splicer-vicreg", -1, -1)
    resumed = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert all(r["finished"] and r["resumed_from_step"] == 8 and r["steps"] == 20 for r in resumed), resumed
    ours, ref = _state(tmp_path), _state(uninterrupted)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert json.loads((tmp_path / "metrics.json").read_text())["final_loss"] == pytest.approx(
        json.loads((uninterrupted / "metrics.json").read_text())["final_loss"], rel=0, abs=0
    )


# ---------------------------------------------------------------------------------------- launch, sharding


def test_launch_env_reads_torchrun_and_slurm():
    torchrun = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert launch_env(torchrun) == LaunchEnv(1, 4, 1, "h", 29500, "torchrun")
    assert launch_env({**torchrun, "WORLD_SIZE": "1"}) is None
    slurm = {
        "SLURM_JOB_ID": "1234",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
    }
    env = launch_env(slurm)
    assert env is not None and (env.rank, env.world_size, env.local_rank, env.master_addr) == (3, 4, 1, "gpu07")
    assert env.master_port == launch_env(slurm).master_port and 20000 <= env.master_port < 40000
    # a batch script (no job step) is one process, whatever the allocation's task count
    assert launch_env({"SLURM_JOB_ID": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) is None
    assert launch_env({}) is None
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        launch_env({"RANK": "0", "WORLD_SIZE": "2"})


def test_expand_hostlist():
    assert expand_hostlist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert expand_hostlist("a1,b[9-10]x") == ["a1", "b9x", "b10x"]
    assert expand_hostlist("node5") == ["node5"]


def test_launch_command_chooses_srun_in_slurm_and_torchrun_elsewhere():
    argv = ["pretrain", "--config", "c.yaml"]
    assert launch_command(argv, 1, environ={}) is None
    local = launch_command(argv, 2, environ={})
    assert local[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert local[-5:] == ["-m", "splicer.cli", *argv]
    slurm = launch_command(argv, 2, 3, cpus_per_task=4, environ={"SLURM_JOB_ID": "7"})
    assert Path(slurm[0]).name == "srun"
    assert slurm[1:6] == ["--ntasks=6", "--nodes=3", "--ntasks-per-node=2", "--kill-on-bad-exit=1", "--cpus-per-task=4"]
    # already one of a launch: never launch again
    assert launch_command(argv, 2, environ={"SPLICER_LAUNCHED": "1"}) is None
    assert (
        launch_command(argv, 2, environ={"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
        is None
    )
    with pytest.raises(ValueError, match="several nodes need SLURM"):
        launch_command(argv, 2, 2, environ={})
    with pytest.raises(ValueError, match=r"train\.devices"):
        launch_command(argv, 0, environ={})


def test_sharded_generator_draws_the_global_batch_rows():
    """Per-rank augmentation reproduces the single-process batch: rank r's rows of every block."""
    from splicer.augment import AugmentConfig, BatchAugment

    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    aug = BatchAugment(AugmentConfig(p_noise=1.0, p_vflip=0.5))
    views = x.repeat(2, 1, 1, 1)  # two views of 8 images, as SSLModel stacks them
    whole = aug(views, torch.Generator().manual_seed(5))
    for rank in range(2):
        gen = ShardedGenerator("cpu", 4, 8, 4 * rank)
        gen.manual_seed(5)
        part = aug(x[4 * rank : 4 * rank + 4].repeat(2, 1, 1, 1), gen)
        torch.testing.assert_close(
            part, torch.cat([whole[4 * rank : 4 * rank + 4], whole[8 + 4 * rank : 12 + 4 * rank]])
        )
    with pytest.raises(ValueError, match="global batch"):
        ShardedGenerator("cpu", 4, 8, 6)


def test_group_of_one_and_uneven_batches():
    group = Group()
    assert not group.distributed and group.writer
    idx = torch.arange(6)
    assert torch.equal(group.shard(idx), idx)
    with pytest.raises(ValueError, match="does not split evenly over 4 processes"):
        Group(1, 4).local_batch(6)
    assert torch.equal(Group(1, 2).shard(idx), torch.tensor([3, 4, 5]))
    assert np.array_equal(W.images(), W.images())


@pytest.mark.timeout(300)
def test_cli_pretrain_on_two_processes_launches_torchrun(tmp_path):
    """`splicer pretrain` with train.devices: 2 outside SLURM starts torchrun (2 gloo ranks) by itself: one summary,
    printed by rank 0, and the run one process makes of the same config."""
    import subprocess
    import sys

    import yaml

    from splicer.cli import main
    from splicer.data.format import save_dataset

    images = W.images().repeat(2, axis=0)  # 32 images, 3 x 8 x 8
    meta = {"name": "tiny", "channel_names": ["r", "g", "b"], "class_names": ["a", "b"]}
    meta |= {"split_names": ["train", "val", "test"], "mask_names": []}
    save_dataset(tmp_path / "data", images, np.arange(32) % 2, (np.arange(32) % 3).astype(np.uint8), meta)
    cfg = {
        "method": {"name": "splicer", "inputs": ["view", "a"], "loss": "simclr"},
        "components": {"a": {"type": "channels", "channels": ["r", "g"]}},
        "model": {"encoder": W.ENCODER, "projector_hidden": [16], "embed_dim": 12},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": "lars", "lr": 0.02, "progress": False, "device": "cpu"},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    args = ["pretrain", "--config", str(tmp_path / "run.yaml"), "--data", str(tmp_path / "data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "SPLICER_"))}
    two = subprocess.run(
        [sys.executable, "-m", "splicer.cli", *args, "--out", str(tmp_path / "two"), "-s", "train.devices=2"],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node=2" in two.stderr
    assert two.stdout.count('"processes": 2') == 1, two.stdout  # one summary, from rank 0
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    ran_two, ran_one = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("two", "one"))
    assert (ran_two["processes"], ran_one["processes"], ran_two["steps"]) == (2, 1, 8)
    assert ran_two["final_loss"] == pytest.approx(ran_one["final_loss"], rel=1e-5)
