"""Worker functions of tests/test_distributed.py, importable by the spawned processes (gloo, CPU).

Each worker joins a real process group through :func:`splicer.distributed.initialized` (from the ``env://``
variables torchrun would set) and writes what rank 0 (or every rank) saw to ``out``; the test compares it with a
single process on the same global batch.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import torch
from torch import nn

from splicer.augment import AugmentConfig, BatchAugment
from splicer.components import ChannelComponent
from splicer.distributed import Group, initialized
from splicer.encoders import build_encoder
from splicer.methods import SSLModel, SupervisedModel, build_pairing
from splicer.train import Preempted, TrainConfig, train

C, S, N = 3, 8, 16  # channels, image size, images
GLOBAL_BATCH = 8
ENCODER = {"arch": "resnet", "base_width": 4, "blocks": [1]}
# name -> (method, paired inputs, loss, method options)
CONFIGS = {
    "baseline-vicreg": ("baseline", ["view"], "vicreg", {}),
    "splicer-vicreg": ("splicer", ["a", "b"], "vicreg", {}),
    "splicer-vicreg-full": ("splicer", ["view", "a", "b"], "vicreg", {"primary_regulariser": "full"}),
    "trident-simclr": ("trident", ["a"], "simclr", {}),
    "supervised": None,
}


def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(N, C, S, S), dtype=np.uint8)


def labels() -> np.ndarray:
    return np.arange(N) % 3


def build(name: str) -> nn.Module:
    """The model of one configuration, initialised identically in every process."""
    torch.manual_seed(0)
    augment = BatchAugment(AugmentConfig(p_noise=0.5, p_vflip=0.5))
    if CONFIGS[name] is None:
        return SupervisedModel(build_encoder(in_channels=C, image_size=S, **ENCODER), 3, augment)
    method, inputs, loss, options = CONFIGS[name]
    pairing = build_pairing(method, inputs, loss, 12, **options)
    components = {"a": ChannelComponent((0,)), "b": ChannelComponent((1, 2))}
    return SSLModel(pairing, components, (C, S, S), ENCODER, [16], augment=augment, fuse=False)


def loss_and_grads(name: str, group: Group, seed: int = 123, dtype: torch.dtype = torch.float64) -> dict:
    """One forward/backward of the global batch (this rank's slice of it): loss, metrics, gradients, BN stats.
    In float64 by default, so that rounding (sums in another order) stays far below the tolerance of the
    comparison and any real difference (a missing gather, per-rank batch statistics) stands out."""
    model = build(name).to(dtype).train()
    cpu = torch.device("cpu")
    group.prepare(model, cpu)
    forward = group.wrap(model, cpu)
    x = torch.from_numpy(images()[:GLOBAL_BATCH]).to(dtype).div(255)
    idx = group.shard(torch.arange(GLOBAL_BATCH))
    extra = {"labels": torch.as_tensor(labels()[:GLOBAL_BATCH])[idx]} if CONFIGS[name] is None else {}
    loss, metrics = forward(x[idx], None, group.generator(cpu, seed, len(idx)), **extra)
    value, metrics, _ = group.agree(loss, metrics, False)
    loss.backward()
    return {
        "loss": value,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters()},
        "buffers": {k: b.detach().clone() for k, b in model.named_buffers()},
    }


def chunk_gradient(group: Group) -> dict[str, float]:
    """SpliCER's pair 0 alone (its VICReg through the gather): the largest gradient on the primary projector's
    output rows of chunk 0 and of every other chunk (exactly 0 when the chunks are decoupled)."""
    model = build("splicer-vicreg").double().train()
    cpu = torch.device("cpu")
    group.prepare(model, cpu)
    x = torch.from_numpy(images()[:GLOBAL_BATCH]).double().div(255)
    idx = group.shard(torch.arange(GLOBAL_BATCH))
    emb = model.embeddings(x[idx], None, group.generator(cpu, 123, len(idx)))
    spec, pair = model.pairing, model.pairing.pairs[0]
    inside = spec.chunk_slice(pair.left_chunk)
    loss, _ = model.losses[pair.loss](emb[pair.left][:, inside], emb[pair.right])
    loss.backward()
    grad = model.primary_projector.last.weight.grad
    outside = torch.cat([grad[: inside.start], grad[inside.stop :]])
    return {"inside": float(grad[inside].abs().max()), "outside": float(outside.abs().max())}


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)},
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def step_worker(rank: int, world: int, port: int, out: str) -> None:
    """Every configuration's loss and gradients on rank ``rank``, saved per rank."""
    _env(rank, world, port)
    with initialized("cpu") as group:
        assert group.world_size == world and group.rank == rank
        results = {name: loss_and_grads(name, group) for name in CONFIGS}
        results["float32"] = {name: loss_and_grads(name, group, dtype=torch.float32) for name in CONFIGS}
        results["chunks"] = chunk_gradient(group)
    torch.save(results, Path(out) / f"distributed{rank}.pt")


def train_config(**kw: object) -> TrainConfig:
    # LARS (the paper's CIFAR optimiser): AdamW would turn the rounding noise in the gradient of a bias that feeds
    # a batch norm (zero in exact arithmetic, ~1e-9 here) into full-size steps, so those biases (which do not
    # change the function) would differ between any two summation orders, one process or two.
    base = {
        "epochs": 10,
        "batch_size": GLOBAL_BATCH,
        "optimizer": "lars",
        "lr": 0.02,
        "warmup_epochs": 1,
        "checkpoint_every": 6,
        "log_every": 1,
        "device": "cpu",
        "progress": False,
    }
    return TrainConfig(**{**base, **kw})  # 16 images / 8 -> 2 steps per epoch, 20 steps


class SignalSelf:
    """Hook: SIGUSR1 to this process after ``at`` steps (on one rank only: the others must follow)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, step: int, loss: float) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)


def train_worker(rank: int, world: int, port: int, out: str, name: str, signal_rank: int, signal_at: int) -> None:
    """``train`` on this rank; ``signal_rank`` gets SIGUSR1 after step ``signal_at`` (-1: never). Writes
    ``rank<r>.json`` with the step a pre-emption stopped at (or the summary)."""
    _env(rank, world, port)
    hooks = [SignalSelf(signal_at)] if rank == signal_rank else []
    with initialized("cpu") as group:
        model = build(name)
        extra = {"labels": labels()} if CONFIGS[name] is None else {}
        try:
            summary = train(model, images(), train_config(), out, hooks=hooks, **extra)
            result = {"finished": True, **summary}
        except Preempted as err:
            result = {"finished": False, "preempted_at": err.step}
        result["world_size"] = group.world_size
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
