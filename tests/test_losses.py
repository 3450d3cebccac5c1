"""Losses equal independent reference implementations and decrease under optimisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from splicer.losses import NTXentLoss, VICRegLoss, build_loss, covariance_loss, nt_xent_loss, vicreg_loss


def reference_vicreg(x: torch.Tensor, y: torch.Tensor, sim=25.0, std=25.0, cov=1.0) -> torch.Tensor:
    """The official facebookresearch/vicreg forward pass (single process), transcribed."""
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)

    def off_diagonal(m):
        n = m.shape[0]
        return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(num_features) + off_diagonal(cov_y).pow_(2).sum().div(num_features)
    return sim * repr_loss + std * std_loss + cov * cov_loss


def reference_nt_xent(a: np.ndarray, b: np.ndarray, t: float) -> float:
    """NT-Xent with an explicit loop over the 2N anchors, in float64 numpy."""
    z = np.concatenate([a, b]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        sims = [z[i] @ z[k] / t for k in range(n2) if k != i]
        log_denominator = math.log(sum(math.exp(s) for s in sims))
        total += -(z[i] @ z[pos] / t) + log_denominator
    return total / n2


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 32), d=st.integers(2, 24), seed=st.integers(0, 10_000), scale=st.floats(0.01, 10))
def test_vicreg_matches_official_reference(n, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    b = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    ours, terms = vicreg_loss(a.double(), b.double())
    ref = reference_vicreg(a.float(), b.float())
    assert torch.allclose(ours, ref.to(ours.dtype), rtol=1e-4, atol=1e-4)
    assert set(terms) == {"invariance", "variance", "covariance"}


def test_vicreg_custom_weights_and_module():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    ours, _ = VICRegLoss(sim_weight=3.0, var_weight=5.0, cov_weight=7.0)(a, b)
    assert torch.allclose(ours, reference_vicreg(a, b, 3.0, 5.0, 7.0), rtol=1e-5)


def test_vicreg_regulariser_inputs_replace_var_cov_only():
    g = torch.Generator().manual_seed(2)
    full = torch.randn(32, 12, generator=g)
    chunk, other = full[:, :4], torch.randn(32, 4, generator=g)
    value, terms = vicreg_loss(chunk, other, reg_a=full)
    plain, plain_terms = vicreg_loss(chunk, other)
    assert torch.allclose(terms["invariance"], plain_terms["invariance"])
    assert not torch.allclose(value, plain)
    assert torch.allclose(terms["covariance"], covariance_loss(full) + covariance_loss(other))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(2, 10), seed=st.integers(0, 10_000), t=st.sampled_from([0.07, 0.2, 0.5, 1]))
def test_nt_xent_matches_loop_reference(n, d, seed, t):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    ours, _ = nt_xent_loss(torch.from_numpy(a), torch.from_numpy(b), temperature=t)
    assert ours.item() == pytest.approx(reference_nt_xent(a, b, t), rel=1e-4, abs=1e-5)


def test_nt_xent_includes_within_view_negatives():
    # Identical views with distinct samples: without within-view negatives the loss of a perfect alignment
    # would be log(N) against the other view only; with them each anchor also sees its own view's others.
    a = torch.eye(4)
    value, _ = nt_xent_loss(a, a.clone(), temperature=1.0)
    e = math.e
    expected = -1 + math.log(e + 6 * 1.0)  # positive sim 1; six negatives of sim 0 among 2N - 1 = 7
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_is_invariant_to_embedding_scale():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    assert torch.allclose(NTXentLoss(0.2)(a, b)[0], NTXentLoss(0.2)(a * 10, b * 3)[0], atol=1e-5)


@pytest.mark.parametrize("name", ["vicreg", "simclr"])
def test_loss_decreases_on_toy_batch(name):
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    loss_fn = build_loss(name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    values = []
    for _ in range(30):
        noise = torch.randn_like(x) * 0.1
        loss, _ = loss_fn(net(x + noise), net(x - noise))
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.8 * values[0], values


def test_build_loss_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="byol"):
        build_loss("byol")
    with pytest.raises(ValueError, match="temprature"):
        build_loss("simclr", temprature=0.1)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="equal shape"):
        vicreg_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent_loss(torch.zeros(4, 3), torch.zeros(3, 3))
