"""One optimiser step of :func:`splicer.train.train`: eager, or replayed from a CUDA graph.

:class:`EagerStep` is the plain step: augmentation + forward + loss under autocast, the loss checked (and, with
several processes, agreed on: :meth:`splicer.distributed.Group.agree`), backward, optimiser. It is the CPU path
and the multi-process path (through ``DistributedDataParallel``).

:class:`GraphStep` captures the *whole* step (the augmentation's random draws included, backward and optimiser
step too) into one CUDA graph and replays it every step: at small images a ResNet step is thousands of short
kernels, and launching them, not computing them, is what costs (the 32 px step ran at ~5 % of the GPU's peak).
Everything that changes from step to step enters the graph through memory it reads on replay:

* the batch (images, masks, labels) is copied into static input tensors;
* the augmentation generator is one ``torch.Generator`` registered with the graph and re-seeded with the step's
  seed (:func:`splicer.train.step_seed`) before each replay, so replay draws what an eager step draws;
* the learning rate is a 0-d tensor shared by the param groups and filled before each replay (AdamW runs with
  ``capturable=True``, SGD fused, LARS takes tensor learning rates), never a Python float baked into the graph.

The first ``warmup`` steps run eagerly (on a side stream, as graph capture requires; they also create the
optimiser state), then the step is captured once. Anything in the step that cannot be captured raises during
capture: the error is logged and the run continues eagerly, so the graph is an optimisation, never a
behaviour. The loss is read back after the replay: a non-finite loss is reported, as in eager mode, before any
file is written (the weights in memory have taken the step; the last checkpoint on disk has not).

The capture runs through a small backend (``capture(fn) -> replay``), so its logic (static buffers, the
generator and learning-rate plumbing, warm-up, fallback) is tested on the CPU with a backend that "replays" by
calling the captured function again (tests/test_step.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from splicer.distributed import Group

log = logging.getLogger(__name__)

__all__ = ["MODES", "EagerStep", "GraphStep", "StepResult", "make_step", "resolve_mode"]

MODES = ("auto", "on", "off")


@dataclass
class StepResult:
    """What the trainer needs from one step."""

    loss: float  # the global batch's loss (mean over ranks)
    metrics: dict[str, Tensor]  # detached, reduced over ranks
    stop: bool  # a pre-emption signal reached some rank before this step's reduction (all ranks agree)
    applied: bool  # False: the loss was not finite and no update was made (eager step)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """Set ``lr`` on every param group, in place when a group holds it as a tensor (a captured graph reads it)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _autocast(device: torch.device, amp: bool, cache: bool = True) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=cache)


class EagerStep:
    """Forward under autocast, agree on the loss, backward, optimiser step (see the module docstring)."""

    def __init__(
        self, model: nn.Module, optimizer: Optimizer, device: torch.device, amp: bool, group: Group | None = None
    ) -> None:
        self.model, self.optimizer, self.device, self.amp = model, optimizer, device, amp
        self.group = group or Group()
        self.forward = self.group.wrap(model, device)

    def __call__(
        self,
        x: Tensor,
        masks: Tensor | None,
        extra: Mapping[str, Tensor],
        seed: int,
        lr: float,
        signalled: bool = False,
    ) -> StepResult:
        set_lr(self.optimizer, lr)
        gen = self.group.generator(self.device, seed, x.shape[0])
        with _autocast(self.device, self.amp):
            loss, metrics = self.forward(x, masks, gen, **extra)
        value, metrics, stop = self.group.agree(loss, metrics, signalled)
        if not math.isfinite(value):  # before backward: no update for this step
            return StepResult(value, metrics, stop, applied=False)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepResult(value, metrics, stop, applied=True)


# ------------------------------------------------------------------------------------------------ CUDA graphs


class CudaGraphs:
    """The capture backend on CUDA: ``torch.cuda.CUDAGraph`` with the step's generator registered."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.side = torch.cuda.Stream(device)

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        """Eager steps before capture run on a side stream (lazy CUDA / cuDNN / autograd state is created there)."""
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(self.side)

    def capture(self, fn: Callable[[], None], generator: torch.Generator) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            fn()
        return graph.replay


class _CallAgain:
    """A capture backend that "replays" by calling the function again: the graph logic without a GPU (tests)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        yield

    def capture(self, fn: Callable[[], None], generator: torch.Generator) -> Callable[[], None]:
        return fn


def capturable_optimizer(optimizer: Optimizer, device: torch.device) -> Tensor:
    """Prepare ``optimizer`` for capture: one 0-d learning-rate tensor shared by every param group (returned),
    AdamW ``capturable`` (its step counters on the device), SGD ``fused`` (its tensor-lr path does not read the
    value back to the host); LARS (:class:`splicer.optim.LARS`) takes a tensor learning rate as it is."""
    from splicer.optim import LARS

    lr = torch.tensor(float(optimizer.param_groups[0]["lr"]), device=device)
    on_cuda = device.type == "cuda"
    for group in optimizer.param_groups:
        group["lr"] = lr
        if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
            group["capturable"] = on_cuda
            group["foreach"] = on_cuda  # CPU: the single-tensor path (tensor lr without capturable)
        elif isinstance(optimizer, torch.optim.SGD):
            group["fused"], group["foreach"] = True, False
        elif not isinstance(optimizer, LARS):
            raise TypeError(f"no capturable form of {type(optimizer).__name__}")
    if on_cuda:
        for state in optimizer.state.values():
            if isinstance(state.get("step"), Tensor):
                state["step"] = state["step"].to(device=device, dtype=torch.float32)
    return lr


def eager_state_dict(optimizer: Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` as an eager optimiser writes it (float learning rates, no capture flags), so a
    checkpoint of a graph-mode run resumes anywhere (CPU, several processes)."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), Tensor):
            group["lr"] = float(group["lr"])
        if "capturable" in group:
            group["capturable"] = False
        if "fused" in group:
            group["fused"] = None
        if "foreach" in group:
            group["foreach"] = None
    return state


class GraphStep:
    """The whole step as one captured graph, replayed per step (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        device: torch.device,
        amp: bool,
        warmup: int = 3,
        backend: Any = None,
    ) -> None:
        self.model, self.optimizer, self.device, self.amp = model, optimizer, device, amp
        self.warmup_steps = max(int(warmup), 1)
        self.backend = backend if backend is not None else CudaGraphs(device)
        self.lr = capturable_optimizer(optimizer, device)
        self.eager = EagerStep(model, optimizer, device, amp)
        self.generator = torch.Generator(device=device)
        self.replay: Callable[[], None] | None = None
        self.failed: str | None = None
        self.calls = 0
        self._static: dict[str, Any] = {}

    @property
    def captured(self) -> bool:
        return self.replay is not None

    def __call__(
        self,
        x: Tensor,
        masks: Tensor | None,
        extra: Mapping[str, Tensor],
        seed: int,
        lr: float,
        signalled: bool = False,
    ) -> StepResult:
        self.calls += 1
        if self.failed is not None:
            return self.eager(x, masks, extra, seed, lr, signalled)
        if self.calls <= self.warmup_steps:
            with self.backend.warmup():
                return self.eager(x, masks, extra, seed, lr, signalled)
        if self.replay is None:
            try:
                self._capture(x, masks, extra)
            except Exception as err:  # anything not capturable: keep training eagerly
                self.failed = f"{type(err).__name__}: {err}"
                self._static = {}
                self.optimizer.zero_grad(set_to_none=True)
                log.warning("CUDA graph capture failed, training continues without graphs: %s", self.failed)
                return self.eager(x, masks, extra, seed, lr, signalled)
        s = self._static
        s["x"].copy_(x)
        if masks is not None:
            s["masks"].copy_(masks)
        for key, value in extra.items():
            s["extra"][key].copy_(value)
        set_lr(self.optimizer, lr)
        self.generator.manual_seed(seed)
        assert self.replay is not None
        self.replay()
        loss = float(s["loss"])
        return StepResult(loss, s["metrics"], signalled, applied=True)

    def _capture(self, x: Tensor, masks: Tensor | None, extra: Mapping[str, Tensor]) -> None:
        static = {
            "x": torch.empty_like(x),
            "masks": None if masks is None else torch.empty_like(masks),
            "extra": {k: torch.empty_like(v) for k, v in extra.items()},
        }

        def step() -> None:
            # no-op in the capture (grads are None: the captured backward writes them afresh on every replay);
            # a backend that replays by calling again gets the same semantics
            self.optimizer.zero_grad(set_to_none=False)
            with _autocast(self.device, self.amp, cache=False):
                loss, metrics = self.model.training_loss(
                    static["x"], static["masks"], self.generator, **static["extra"]
                )
            loss.backward()
            self.optimizer.step()
            static["loss"] = loss.detach()
            static["metrics"] = {k: v.detach() for k, v in metrics.items()}

        self.optimizer.zero_grad(set_to_none=True)  # grads are allocated by (and live in) the captured backward
        self.replay = self.backend.capture(step, self.generator)
        self._static = static
        log.info("training step captured as a CUDA graph after %d eager steps", self.warmup_steps)


# ----------------------------------------------------------------------------------------------------- choose


def resolve_mode(mode: str | bool, device: torch.device, group: Group) -> str:
    """``"graph"`` or ``"eager"`` for a ``train.cuda_graph`` setting (``auto``: graphs for one CUDA process)."""
    setting = {True: "on", False: "off"}.get(mode, mode) if isinstance(mode, bool) else str(mode).lower()
    if setting not in MODES:
        raise ValueError(f"cuda_graph must be one of {', '.join(MODES)} (or true/false), got {mode!r}")
    if setting == "off":
        return "eager"
    if setting == "on":
        if device.type != "cuda":
            raise ValueError(f"cuda_graph: on needs a CUDA device, but this run trains on {device}")
        if group.distributed:
            raise ValueError("cuda_graph: on is for one process; a multi-process run steps eagerly (DDP)")
        return "graph"
    return "graph" if device.type == "cuda" and not group.distributed else "eager"


def make_step(
    model: nn.Module, optimizer: Optimizer, device: torch.device, amp: bool, group: Group, mode: str | bool = "auto"
) -> EagerStep | GraphStep:
    """The step :func:`splicer.train.train` runs, per :func:`resolve_mode`."""
    if resolve_mode(mode, device, group) == "graph":
        return GraphStep(model, optimizer, device, amp)
    return EagerStep(model, optimizer, device, amp, group)
