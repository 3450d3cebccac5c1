"""Pairing presets build the paper's branch structures; SpliCER's chunks are decoupled (paper Eq. 5)."""

from __future__ import annotations

import pytest
import torch

from splicer.components import build_components
from splicer.encoders import FusedEncoders
from splicer.methods import PRIMARY, VIEW, Pair, PairingSpec, SSLModel, build_pairing

TINY = {"arch": "resnet", "base_width": 4, "blocks": [1, 1]}
HALVES = {"mnist": {"type": "region", "rows": [0, 8]}, "cifar": {"type": "region", "rows": [8, 16]}}


def pair_set(spec: PairingSpec) -> set[tuple]:
    return {(p.left, p.left_chunk, p.right, p.right_chunk) for p in spec.pairs}


def test_baseline_is_two_views_of_one_network():
    spec = build_pairing("baseline", [], "vicreg", 32)
    assert [(b.name, b.shared) for b in spec.branches] == [(VIEW, True)]
    assert pair_set(spec) == {(PRIMARY, None, VIEW, None)}
    assert spec.chunk_sizes is None


def test_sigma_je_registers_each_component_to_the_whole_embedding():
    spec = build_pairing("sigma_je", ["mnist", "cifar"], "simclr", 32)
    assert [(b.name, b.shared) for b in spec.branches] == [("mnist", False), ("cifar", False)]
    assert pair_set(spec) == {(PRIMARY, None, "mnist", None), (PRIMARY, None, "cifar", None)}
    assert spec.branch_dims() == {"mnist": 32, "cifar": 32}


def test_trident_adds_a_shared_view_and_all_pairs():
    spec = build_pairing("trident", ["cifar"], "vicreg", 16)
    assert [(b.name, b.shared) for b in spec.branches] == [(VIEW, True), ("cifar", False)]
    assert pair_set(spec) == {(PRIMARY, None, VIEW, None), (PRIMARY, None, "cifar", None), (VIEW, None, "cifar", None)}


def test_splicer_registers_branch_i_to_chunk_i():
    spec = build_pairing("splicer", [VIEW, "mnist", "cifar"], "vicreg", 12)
    assert spec.chunk_sizes == (4, 4, 4)
    assert pair_set(spec) == {(PRIMARY, 0, VIEW, 0), (PRIMARY, 1, "mnist", None), (PRIMARY, 2, "cifar", None)}
    assert spec.branch_dims() == {"mnist": 4, "cifar": 4}
    assert [spec.chunk_slice(i) for i in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]


def test_splicer_include_view_prepends_a_view_chunk():
    spec = build_pairing("splicer", ["cifar"], "vicreg", 12, include_view=True)
    assert [b.name for b in spec.branches] == [VIEW, "cifar"]
    assert pair_set(spec) == {(PRIMARY, 0, VIEW, 0), (PRIMARY, 1, "cifar", None)}


def test_splicer_uneven_chunks_and_losses_per_chunk():
    spec = build_pairing(
        "splicer", ["mnist", "cifar"], "vicreg", 12, chunk_sizes=[2, 10], chunk_losses=["simclr", "vicreg"]
    )
    assert spec.branch_dims() == {"mnist": 2, "cifar": 10}
    assert [p.loss for p in spec.pairs] == ["simclr", "vicreg"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_sizes": [4, 4]}, "must be positive and sum to the embedding size 12 \\(they sum to 8\\)"),
        ({"chunk_sizes": [12, 0]}, "must be positive"),
        ({"chunk_sizes": [4, 4, 4]}, "chunk_sizes has 3 entries but there are 2 paired inputs"),
        ({"chunk_losses": ["vicreg"]}, "chunk_losses has 1 entries"),
        ({"chunk_size": [6, 6]}, "unknown option.*chunk_size"),
    ],
)
def test_bad_chunking_is_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_pairing("splicer", ["mnist", "cifar"], "vicreg", 12, **kwargs)


def test_uneven_default_split_and_unknown_method_are_errors():
    with pytest.raises(ValueError, match="does not split into 3 equal chunks"):
        build_pairing("splicer", ["a", "b", "c"], "vicreg", 10)
    with pytest.raises(ValueError, match="unknown method 'byol'"):
        build_pairing("byol", ["a"], "vicreg", 10)
    with pytest.raises(ValueError, match="baseline pairs only"):
        build_pairing("baseline", ["cifar"], "vicreg", 10)


def test_pair_naming_an_unknown_branch_is_rejected():
    with pytest.raises(ValueError, match="unknown branch 'ghost'"):
        PairingSpec("custom", 8, (), (Pair(PRIMARY, "ghost"),))


def make_model(method, inputs, loss="vicreg", embed=8, **options) -> SSLModel:
    torch.manual_seed(0)
    spec = build_pairing(method, inputs, loss, embed, **options)
    comps = build_components(HALVES, ["r", "g", "b"])
    return SSLModel(spec, comps, (3, 16, 8), TINY, projector_hidden=[16])


def test_model_shares_encoders_as_the_preset_says():
    model = make_model("trident", ["mnist", "cifar"])
    emb = model.embeddings(torch.rand(6, 3, 16, 8))
    assert set(emb) == {PRIMARY, VIEW, "mnist", "cifar"}
    assert all(e.shape == (6, 8) for e in emb.values())
    # the two half-image components have one shape, so their own encoders run fused; the view uses the primary's
    (group,) = model.groups
    assert group.branches == ["mnist", "cifar"]
    assert isinstance(model.branch_encoders[group.key], FusedEncoders)
    assert VIEW not in model.branch_projectors


def test_splicer_model_embeds_components_at_chunk_size():
    model = make_model("splicer", [VIEW, "mnist", "cifar"], embed=12)
    emb = model.embeddings(torch.rand(5, 3, 16, 8))
    assert emb[PRIMARY].shape == (5, 12) and emb[VIEW].shape == (5, 12)
    assert emb["mnist"].shape == (5, 4) and emb["cifar"].shape == (5, 4)
    loss, metrics = model.training_loss(torch.rand(5, 3, 16, 8), None, None)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"loss/primary[0]-view", "loss/primary[1]-mnist", "loss/primary[2]-cifar"} <= set(metrics)


def _block_diagonalise(projector, n_chunks):
    """Zero the last layer's off-diagonal blocks: hidden block k feeds only output chunk k."""
    w = projector.last.weight
    out_block, in_block = w.shape[0] // n_chunks, w.shape[1] // n_chunks
    mask = torch.zeros_like(w)
    for k in range(n_chunks):
        mask[k * out_block : (k + 1) * out_block, k * in_block : (k + 1) * in_block] = 1
    with torch.no_grad():
        w.mul_(mask)


def _chunk_params_grads(model, k, n_chunks):
    """Gradients of the primary-projector parameters that produce chunk k only (block-diagonal projector)."""
    proj = model.primary_projector
    lin, bn = proj.hidden[0], proj.hidden[1]
    h = lin.weight.shape[0] // n_chunks
    o = proj.last.weight.shape[0] // n_chunks
    rows_h, rows_o = slice(k * h, (k + 1) * h), slice(k * o, (k + 1) * o)
    return [
        lin.weight.grad[rows_h],
        lin.bias.grad[rows_h],
        bn.weight.grad[rows_h],
        bn.bias.grad[rows_h],
        proj.last.weight.grad[rows_o],
        proj.last.bias.grad[rows_o],
    ]


@pytest.mark.parametrize("loss", ["vicreg", "simclr"])
def test_splicer_chunk_gradients_are_decoupled_eq5(loss):
    """Chunk j's loss gives exactly zero gradient on the parameters producing chunk k != j."""
    model = make_model("splicer", ["mnist", "cifar"], loss=loss, embed=8)
    _block_diagonalise(model.primary_projector, 2)
    x = torch.rand(8, 3, 16, 8, generator=torch.Generator().manual_seed(1))
    for j, k in ((0, 1), (1, 0)):
        model.zero_grad(set_to_none=False)
        emb = model.embeddings(x)
        pair = model.pairing.pairs[j]
        a = emb[PRIMARY][:, model.pairing.chunk_slice(pair.left_chunk)]
        value, _ = model.losses[pair.loss](a, emb[pair.right])
        value.backward()
        grads_k = _chunk_params_grads(model, k, 2)
        grads_j = _chunk_params_grads(model, j, 2)
        assert all(torch.count_nonzero(g) == 0 for g in grads_k), f"chunk {j} loss leaks into chunk {k}"
        assert any(torch.count_nonzero(g) > 0 for g in grads_j), f"chunk {j} loss moves nothing of its own"


@pytest.mark.parametrize("loss", ["vicreg", "simclr"])
def test_sigma_je_gradients_are_coupled(loss):
    """With Σ-JE one component's loss reaches the parameters of every 'chunk' of the embedding."""
    model = make_model("sigma_je", ["mnist", "cifar"], loss=loss, embed=8)
    _block_diagonalise(model.primary_projector, 2)
    x = torch.rand(8, 3, 16, 8, generator=torch.Generator().manual_seed(1))
    model.zero_grad(set_to_none=False)
    emb = model.embeddings(x)
    value, _ = model.losses[loss](emb[PRIMARY], emb["mnist"])
    value.backward()
    assert all(torch.count_nonzero(g) > 0 for g in _chunk_params_grads(model, 1, 2)[-2:])


def test_full_primary_regulariser_couples_chunks_through_variance_and_covariance():
    chunked = make_model("splicer", ["mnist", "cifar"], embed=8)
    full = make_model("splicer", ["mnist", "cifar"], embed=8, primary_regulariser="full")
    x = torch.rand(8, 3, 16, 8, generator=torch.Generator().manual_seed(2))
    full.load_state_dict(chunked.state_dict())
    _, m_chunk = chunked.training_loss(x, None, None)
    _, m_full = full.training_loss(x, None, None)
    tag = "primary[0]-mnist"
    assert torch.allclose(m_chunk[f"invariance/{tag}"], m_full[f"invariance/{tag}"])
    assert not torch.allclose(m_chunk[f"covariance/{tag}"], m_full[f"covariance/{tag}"])


def test_unknown_component_in_pairing_is_reported():
    spec = build_pairing("sigma_je", ["nuclei"], "vicreg", 8)
    with pytest.raises(ValueError, match="'nuclei' is not a defined component"):
        SSLModel(spec, build_components(HALVES, ["r", "g", "b"]), (3, 16, 8), TINY, [16])
