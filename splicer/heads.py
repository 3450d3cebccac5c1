"""Projection heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Projector(nn.Module):
    """MLP projector: (Linear-BatchNorm1d-ReLU) per hidden dim, then a final Linear (``last``).

    As in VICReg / solo-learn; the Linear layers keep their bias. ``hidden_dims=()`` gives a single Linear.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int) -> None:
        super().__init__()
        dims = {"in_dim": in_dim, "out_dim": out_dim, **{f"hidden_dims[{i}]": d for i, d in enumerate(hidden_dims)}}
        for name, d in dims.items():
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ValueError(f"Projector {name} must be a positive int, got {d!r}")
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(prev, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            prev = h
        self.hidden = nn.Sequential(*layers)
        self.last = nn.Linear(prev, out_dim)
        self.in_dim = in_dim
        self.hidden_dims = tuple(hidden_dims)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_dim)`` -> ``(N, out_dim)``."""
        return self.last(self.hidden(x))
