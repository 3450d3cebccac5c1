"""Joint-embedding losses as small pure functions plus thin modules.

VICReg (Bardes et al., 2022) follows the official implementation (facebookresearch/vicreg), which lightly
also follows: the variance term of each view is the mean hinge on the per-dimension standard deviation and the
two views' terms are *halved* when summed (``(v(a) + v(b)) / 2``); the covariance term of each view is the sum
of squared off-diagonal covariances divided by the dimension, and the two views' terms are *summed*.
solo-learn instead sums the two variance terms, i.e. it weighs variance twice as much; we do not.

SimCLR's NT-Xent (Chen et al., 2020) uses both views as anchors and includes the within-view negatives: each
of the 2N embeddings is contrasted against the other 2N - 1, the positive being its partner in the other view.

Data-parallel training (:mod:`splicer.distributed`): the modules :class:`VICRegLoss` and :class:`NTXentLoss`
have ``gather_distributed`` (off; the trainer turns it on when several processes train one run). Then VICReg is
computed on the embeddings of the global batch (every rank gets the same value; variance and covariance are
those of the global batch) and NT-Xent contrasts each rank's anchors with the global batch's 2N - 1 others (the
rank's share of the mean over the 2N anchors), both through a gradient-correct ``all_gather``. A pair of
SpliCER chunks gathers only its chunks, so the chunks' gradients stay exactly decoupled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splicer.distributed import gather_many

__all__ = [
    "NTXentLoss",
    "VICRegLoss",
    "build_loss",
    "covariance_loss",
    "invariance_loss",
    "nt_xent_loss",
    "variance_loss",
    "vicreg_loss",
]


def invariance_loss(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Mean squared error between paired embeddings (VICReg's invariance term)."""
    return F.mse_loss(z_a, z_b)


def variance_loss(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Mean hinge ``relu(gamma - std)`` over embedding dimensions, std over the batch (unbiased)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal entries of the batch covariance matrix, divided by the dimension."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off_diagonal = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off_diagonal / d


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    gamma: float = 1.0,
    reg_a: Tensor | None = None,
    reg_b: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg loss of two (N, D) embeddings; returns the total and its three (unweighted) terms.

    ``sim * mse(a, b) + var * (v(a) + v(b)) / 2 + cov * (c(a) + c(b))``, as in the official code.
    ``reg_a`` / ``reg_b`` optionally replace ``a`` / ``b`` in the variance and covariance terms (TriDeNT's split
    mode regularises a branch's whole output while the invariance term sees only a chunk of it).
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"VICReg needs embeddings of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if z_a.shape[0] < 2:
        raise ValueError(f"VICReg needs a batch of at least 2 samples, got {z_a.shape[0]}")
    z_a, z_b = z_a.float(), z_b.float()
    r_a = z_a if reg_a is None else reg_a.float()
    r_b = z_b if reg_b is None else reg_b.float()
    inv = invariance_loss(z_a, z_b)
    var = (variance_loss(r_a, gamma) + variance_loss(r_b, gamma)) / 2
    cov = covariance_loss(r_a) + covariance_loss(r_b)
    total = sim_weight * inv + var_weight * var + cov_weight * cov
    return total, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


def nt_xent_loss(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.2,
    candidates: tuple[Tensor, Tensor] | None = None,
    offset: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """NT-Xent of two (N, D) embeddings with both views as anchors and within-view negatives.

    Cosine similarities divided by ``temperature``; for anchor i the positive is its partner in the other
    view and the 2N - 2 remaining embeddings (both views) are negatives; cross-entropy averaged over 2N anchors.
    ``candidates``: the two views of a larger (global) batch whose rows ``offset .. offset + N`` are ``z_a`` /
    ``z_b``; the anchors are then contrasted with all of its embeddings (the mean over this slice's anchors).
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"NT-Xent needs embeddings of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    if candidates is None:
        keys, total = z, n
    else:
        keys, total = F.normalize(torch.cat(candidates).float(), dim=1), candidates[0].shape[0]
        if not 0 <= offset <= total - n:
            raise ValueError(f"rows {offset}..{offset + n} do not lie in a candidate batch of {total}")
    logits = z @ keys.T / temperature
    local = torch.arange(n, device=z.device) + offset
    own = torch.cat([local, local + total])  # each anchor's own column
    self_mask = torch.zeros(2 * n, 2 * total, dtype=torch.bool, device=z.device)
    self_mask[torch.arange(2 * n, device=z.device), own] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([local + total, local])
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return loss, {"positive_accuracy": accuracy}


class VICRegLoss(nn.Module):
    """Module wrapper of :func:`vicreg_loss` (defaults 25 / 25 / 1, as in the VICReg paper); with
    ``gather_distributed`` the loss of the global batch (see the module docstring)."""

    def __init__(
        self, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0, gamma: float = 1.0
    ) -> None:
        super().__init__()
        self.sim_weight, self.var_weight, self.cov_weight, self.gamma = sim_weight, var_weight, cov_weight, gamma
        self.gather_distributed = False

    def forward(
        self, z_a: Tensor, z_b: Tensor, reg_a: Tensor | None = None, reg_b: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.gather_distributed:
            z_a, z_b, reg_a, reg_b = gather_many(z_a, z_b, reg_a, reg_b)  # type: ignore[assignment]
        return vicreg_loss(z_a, z_b, self.sim_weight, self.var_weight, self.cov_weight, self.gamma, reg_a, reg_b)


class NTXentLoss(nn.Module):
    """Module wrapper of :func:`nt_xent_loss` (temperature 0.2, the solo-learn CIFAR SimCLR setting); with
    ``gather_distributed`` this rank's anchors against the global batch (see the module docstring)."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature
        self.gather_distributed = False

    def forward(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.gather_distributed:
            all_a, all_b = gather_many(z_a, z_b)
            if all_a is not None and all_b is not None and all_a.shape[0] != z_a.shape[0]:
                offset = torch.distributed.get_rank() * z_a.shape[0]
                return nt_xent_loss(z_a, z_b, self.temperature, (all_a, all_b), offset)
        return nt_xent_loss(z_a, z_b, self.temperature)


def build_loss(name: str, **kwargs: float) -> nn.Module:
    """Build a loss module by its name in :data:`splicer.registry.LOSSES`; unknown names or options raise
    ``ValueError``."""
    from splicer.registry import LOSSES, resolve

    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    try:
        return resolve(LOSSES[name].module)(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad options {sorted(kwargs)} for loss {name!r}: {err}") from None
