"""Optimisers and learning-rate schedule used by :mod:`splicer.train`.

* ``adamw`` (default): the paper cites Adam (Kingma & Ba); AdamW decouples weight decay from the update.
* ``lars``: LARS as in solo-learn's CIFAR/ImageNet VICReg and SimCLR recipes (eta=0.02, clip_lr=True,
  biases and 1-d (norm) parameters excluded from weight decay and from the LARS trust-ratio adaptation).
* ``sgd``: SGD with momentum.

For every optimiser, biases and normalisation parameters (all parameters with ``ndim <= 1``) get no weight
decay. The learning rate follows :func:`warmup_cosine`, set per step on every param group by the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

OPTIMIZERS = ("adamw", "lars", "sgd")


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al., 2017), following solo-learn's implementation.

    For each parameter tensor ``p`` not excluded, the update direction ``g + wd * p`` is scaled by the trust
    ratio ``eta * ||p|| / (||g|| + wd * ||p|| + eps)``; with ``clip_lr`` the ratio is divided by the group lr
    and clipped at 1 (so the effective lr never exceeds the scheduled lr). Then SGD with momentum is applied.
    Excluded tensors (``exclude_bias_n_norm`` and ``ndim == 1``, or a group with ``lars_exclude=True``) get
    plain SGD with momentum and neither weight decay nor adaptation, as in solo-learn.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        eps: float = 1e-8,
        clip_lr: bool = True,
        exclude_bias_n_norm: bool = True,
        nesterov: bool = False,
        dampening: float = 0.0,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate lr={lr}")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum={momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay={weight_decay}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "eps": eps,
            "clip_lr": clip_lr,
            "exclude_bias_n_norm": exclude_bias_n_norm,
            "nesterov": nesterov,
            "dampening": dampening,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """Perform one optimisation step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, momentum, lr = group["weight_decay"], group["momentum"], group["lr"]
            tensor_lr = isinstance(lr, torch.Tensor)  # a CUDA-graph step reads the lr from a tensor (splicer.step)
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                excluded = group["lars_exclude"] or (group["exclude_bias_n_norm"] and p.ndim <= 1)
                if not excluded:
                    p_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(d_p)
                    trust = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                    if group["clip_lr"]:
                        # lr == 0 (never produced by warmup_cosine) gives inf -> clipped to 1.
                        # a tensor lr is never read back to the host (lr == 0 gives inf there too)
                        ratio = trust / lr if tensor_lr or lr > 0 else torch.full_like(trust, math.inf)
                        trust = torch.clamp(ratio, max=1.0)
                    scaled = d_p.add(p, alpha=wd).mul_(trust)
                    # solo-learn leaves the gradient untouched (no decay, no scaling) when either norm is 0.
                    d_p = torch.where((p_norm > 0) & (g_norm > 0), scaled, d_p)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        buf.mul_(momentum).add_(d_p, alpha=1 - group["dampening"])
                    d_p = d_p.add(buf, alpha=momentum) if group["nesterov"] else buf
                if tensor_lr:
                    p.sub_(d_p * lr)
                else:
                    p.add_(d_p, alpha=-lr)
        return loss


def param_groups(params: nn.Module | Iterable[torch.Tensor], weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into a decayed group (``ndim > 1``) and a no-decay group (biases, norm weights)."""
    tensors = params.parameters() if isinstance(params, nn.Module) else params
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    seen: set[int] = set()
    for p in tensors:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"build_optimizer expects an nn.Module or tensors, got an item of type {type(p)}")
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def build_optimizer(params: nn.Module | Iterable[torch.Tensor], cfg: Any) -> Optimizer:
    """Build the optimiser named by ``cfg.optimizer`` ("adamw" | "lars" | "sgd").

    ``cfg`` needs attributes ``optimizer``, ``lr``, ``weight_decay`` and (sgd/lars) ``momentum`` — a
    :class:`splicer.train.TrainConfig` or any namespace. Biases and 1-d parameters get no weight decay.
    """
    name = str(getattr(cfg, "optimizer", "adamw")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    lr = float(cfg.lr)
    wd = float(getattr(cfg, "weight_decay", 0.0))
    momentum = float(getattr(cfg, "momentum", 0.9))
    groups = param_groups(params, wd)
    if name == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    if name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=wd)
    return LARS(groups, lr=lr, momentum=momentum, weight_decay=wd)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate at (0-based) ``step``: linear warm-up, then cosine decay to ``min_lr``.

    Warm-up: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (starts at
    ``base_lr / warmup_steps``, never exactly 0, and peaks at ``base_lr`` on the last warm-up step).
    Then half a cosine from ``base_lr`` at ``step == warmup_steps`` to ``min_lr`` at ``step == total_steps``
    (as in solo-learn / Lightning-Bolts' LinearWarmupCosineAnnealingLR; the last trained step,
    ``total_steps - 1``, is just above ``min_lr``).
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """Set ``lr`` on every param group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
