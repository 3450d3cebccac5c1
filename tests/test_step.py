"""The training step (splicer.step): eager, and the CUDA-graph step's logic on the CPU.

No GPU here: :class:`GraphStep` runs with a capture backend that "replays" by calling the captured step again
(``_CallAgain``). What that checks is everything but the capture itself: the whole step reads its per-step
inputs from static tensors (batch copied in, the generator re-seeded, the learning rate filled into the shared
tensor), the optimiser runs in its capturable form (tensor learning rate; AdamW single-tensor on the CPU, SGD
fused, LARS), warm-up, the fallback to eager steps when capture fails, and checkpoints that resume eagerly.
benchmarks/cuda_check.sh compares the real captured step with eager on a GPU.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import signal

import numpy as np
import pytest
import torch

from splicer.augment import AugmentConfig, BatchAugment
from splicer.components import ChannelComponent, MaskComponent
from splicer.distributed import Group
from splicer.methods import SSLModel, build_pairing
from splicer.optim import build_optimizer
from splicer.step import (
    EagerStep,
    GraphStep,
    _CallAgain,
    capturable_optimizer,
    eager_state_dict,
    make_step,
    resolve_mode,
)
from splicer.train import Preempted, TrainConfig, step_seed, train

CPU = torch.device("cpu")


def _model(loss: str = "vicreg") -> SSLModel:
    torch.manual_seed(0)
    pairing = build_pairing("splicer", ["view", "a", "b"], loss, 12)
    components = {"a": ChannelComponent((0, 2)), "b": MaskComponent(0, invert=True)}
    augment = BatchAugment(AugmentConfig(p_noise=0.5, p_vflip=0.5, p_rot90=0.5))
    encoder = {"arch": "resnet", "base_width": 4, "blocks": [1]}
    return SSLModel(pairing, components, (3, 8, 8), encoder, [16], augment=augment, fuse=False).train()


def _batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.rand(8, 3, 8, 8, generator=gen), (torch.rand(8, 1, 8, 8, generator=gen) > 0.5).float())
        for _ in range(steps)
    ]


class _FailingCapture(_CallAgain):
    def capture(self, fn, generator):
        raise RuntimeError("operation not permitted when stream is capturing")


def _run_both(optimizer: str, loss: str, same_form: bool) -> tuple[list, list, SSLModel, SSLModel]:
    """Six steps of an eager step and a graph step (2 warm-up steps, then captured) on the same batches."""
    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer != "adamw" else 1e-3, device="cpu")
    eager_model, graph_model = _model(loss), _model(loss)
    eager_opt, graph_opt = build_optimizer(eager_model, cfg), build_optimizer(graph_model, cfg)
    if same_form:
        capturable_optimizer(eager_opt, CPU)
    eager = EagerStep(eager_model, eager_opt, CPU, amp=False)
    graph = GraphStep(graph_model, graph_opt, CPU, amp=False, warmup=2, backend=_CallAgain(CPU))
    lrs = [cfg.lr * f for f in (0.2, 0.6, 1.0, 0.9, 0.5, 0.1)]
    eager_out, graph_out = [], []
    for step, ((x, m), lr) in enumerate(zip(_batches(6), lrs, strict=True)):
        eager_out.append(eager(x, m, {}, step_seed(0, step), lr))
        graph_out.append(graph(x, m, {}, step_seed(0, step), lr))
        assert graph.captured == (step >= 2)
        # every per-step value reaches the captured step through memory it reads: one lr tensor, filled in place
        assert all(g["lr"] is graph.lr for g in graph_opt.param_groups) and float(graph.lr) == pytest.approx(lr)
    return eager_out, graph_out, eager_model, graph_model


@pytest.mark.parametrize(("optimizer", "loss"), [("adamw", "vicreg"), ("lars", "simclr"), ("sgd", "vicreg")])
def test_graph_step_replays_exactly_what_eager_steps_compute(optimizer, loss):
    """Against eager steps with the same (capturable) optimiser: every loss, metric and weight, bit for bit."""
    eager, graph, eager_model, graph_model = _run_both(optimizer, loss, same_form=True)
    for a, b in zip(eager, graph, strict=True):
        assert a.applied and b.applied and b.loss == a.loss
        assert {k: float(v) for k, v in b.metrics.items()} == {k: float(v) for k, v in a.metrics.items()}
    for (key, p), q in zip(eager_model.state_dict().items(), graph_model.state_dict().values(), strict=True):
        assert torch.equal(q, p), key


@pytest.mark.parametrize(("optimizer", "loss"), [("lars", "vicreg"), ("sgd", "simclr")])
def test_graph_step_gives_the_losses_of_the_default_eager_step(optimizer, loss):
    """Against the default eager optimiser (float lr; SGD unfused): equal to float rounding. (AdamW is left out: its
    early sign-like updates turn rounding-level gradients into lr-sized steps whatever the arithmetic.)"""
    eager, graph, eager_model, graph_model = _run_both(optimizer, loss, same_form=False)
    for step, (a, b) in enumerate(zip(eager, graph, strict=True)):
        assert b.loss == pytest.approx(a.loss, rel=1e-5), step
    # A bias feeding a BatchNorm has no true gradient (the norm removes it): its value is accumulated rounding noise,
    # different for any change of arithmetic order (seen: 2.6e-05 apart; the next norm's running mean follows it),
    # and changes nothing the model computes.
    inert = _biases_feeding_batch_norm(eager_model)
    assert inert  # the projectors' hidden layers
    for (key, p), q in zip(eager_model.state_dict().items(), graph_model.state_dict().values(), strict=True):
        if key not in inert:
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=key)


def _biases_feeding_batch_norm(model: torch.nn.Module) -> set[str]:
    """State-dict keys of Linear/Conv biases directly followed by a BatchNorm inside an ``nn.Sequential``, and that
    norm's running mean (which tracks the bias)."""
    out = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (a, first), (b, second) in itertools.pairwise(children):
                if (
                    isinstance(second, torch.nn.modules.batchnorm._BatchNorm)
                    and getattr(first, "bias", None) is not None
                ):
                    prefix = f"{name}." if name else ""
                    out |= {f"{prefix}{a}.bias", f"{prefix}{b}.running_mean"}
    return out


def test_failed_capture_continues_eagerly(caplog):
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, device="cpu")
    eager_model, graph_model = _model(), _model()
    eager = EagerStep(eager_model, build_optimizer(eager_model, cfg), CPU, amp=False)
    graph = GraphStep(
        graph_model, build_optimizer(graph_model, cfg), CPU, amp=False, warmup=1, backend=_FailingCapture(CPU)
    )
    with caplog.at_level(logging.WARNING, logger="splicer.step"):
        for step, (x, m) in enumerate(_batches(4)):
            a, b = eager(x, m, {}, step, 1e-3), graph(x, m, {}, step, 1e-3)
            assert b.loss == pytest.approx(a.loss, rel=1e-5)
    assert not graph.captured and "stream is capturing" in graph.failed
    assert "CUDA graph capture failed, training continues without graphs" in caplog.text


def test_eager_state_dict_resumes_in_an_eager_optimiser():
    model = _model()
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, device="cpu"))
    graph = GraphStep(model, opt, CPU, amp=False, warmup=1, backend=_CallAgain(CPU))
    for step, (x, m) in enumerate(_batches(3)):
        graph(x, m, {}, step, 1e-3)
    state = eager_state_dict(opt)
    assert all(isinstance(g["lr"], float) and not g.get("capturable") for g in state["param_groups"])
    fresh = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, device="cpu"))
    fresh.load_state_dict(state)
    assert fresh.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_trainer_with_the_graph_step_matches_eager_and_resumes_eagerly(tmp_path, monkeypatch):
    """train() driving GraphStep (fake capture) end to end, pre-empted after step 5; its checkpoint (float lr, no
    capture flags) resumes in an eager run, which ends where an uninterrupted eager run does (LARS: float
    rounding only)."""
    images = np.random.default_rng(0).integers(0, 256, (32, 3, 8, 8), dtype=np.uint8)
    masks = (np.random.default_rng(1).random((32, 1, 8, 8)) > 0.5).astype(np.uint8)
    cfg = TrainConfig(epochs=3, batch_size=8, optimizer="lars", lr=0.05, warmup_epochs=1, device="cpu", progress=False)
    eager = train(_model(), images, cfg, tmp_path / "eager", masks=masks)

    def graph_step(model, optimizer, device, amp, group, mode):
        return GraphStep(model, optimizer, device, amp, warmup=2, backend=_CallAgain(device))

    def preempt(step, loss):
        if step == 5:
            os.kill(os.getpid(), signal.SIGUSR1)

    with monkeypatch.context() as m, pytest.raises(Preempted):
        m.setattr("splicer.train.make_step", graph_step)
        train(_model(), images, cfg, tmp_path / "graph", masks=masks, hooks=preempt)
    resumed = train(_model(), images, cfg, tmp_path / "graph", masks=masks)
    assert resumed["resumed_from_step"] == 5 and resumed["steps"] == eager["steps"] == 12
    assert resumed["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)


def test_resolve_mode():
    one, two = Group(), Group(0, 2)
    assert resolve_mode("auto", CPU, one) == "eager"
    assert resolve_mode("auto", torch.device("cuda", 0), one) == "graph"
    assert resolve_mode("auto", torch.device("cuda", 0), two) == "eager"
    assert resolve_mode(False, torch.device("cuda", 0), one) == "eager"
    assert resolve_mode(True, torch.device("cuda", 0), one) == "graph"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_mode("on", CPU, one)
    with pytest.raises(ValueError, match="one process"):
        resolve_mode("on", torch.device("cuda", 0), two)
    with pytest.raises(ValueError, match="cuda_graph must be"):
        resolve_mode("sometimes", CPU, one)
    with pytest.raises(ValueError, match="cuda_graph must be"):
        TrainConfig(cuda_graph="sometimes")
    model = _model()
    step = make_step(model, build_optimizer(model, TrainConfig(device="cpu")), CPU, False, one, "auto")
    assert isinstance(step, EagerStep)


def test_eager_step_reports_a_non_finite_loss_before_updating():
    model = _model()
    opt = build_optimizer(model, TrainConfig(device="cpu"))
    before = copy.deepcopy(dict(model.named_parameters()))
    x, m = _batches(1)[0]
    result = EagerStep(model, opt, CPU, amp=False)(x * float("nan"), m, {}, 0, 1e-3)
    assert not result.applied and result.loss != result.loss
    assert all(torch.equal(before[k], p) for k, p in model.named_parameters())  # no update (BN stats: forward's)
    assert not opt.state
