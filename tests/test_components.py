"""Component specs cut the right pixels/channels from whole batches and report errors by name."""

from __future__ import annotations

import pytest
import torch

from splicer.components import build_component, build_components

CHANNELS = ["Hoechst", "CD4", "CD8a", "FOXP3"]


def batch(n=3, c=4, h=8, w=6):
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)


def test_channels_by_name_and_index_keep_order():
    x = batch()
    comp = build_component({"type": "channels", "channels": ["FOXP3", 1]}, CHANNELS)
    out = comp(x)
    assert torch.equal(out, x[:, [3, 1]])
    assert comp.out_shape((4, 8, 6)) == (2, 8, 6)


def test_single_channel_keeps_channel_axis():
    x = batch()
    out = build_component({"type": "channels", "channels": ["CD8a"]}, CHANNELS)(x)
    assert out.shape == (3, 1, 8, 6) and torch.equal(out[:, 0], x[:, 2])


def test_region_crop_and_zero_modes():
    x = batch()
    top = build_component({"type": "region", "rows": [0, 4]}, CHANNELS)
    assert torch.equal(top(x), x[:, :, :4])
    assert top.out_shape((4, 8, 6)) == (4, 4, 6)
    zero = build_component({"type": "region", "rows": [4, 8], "cols": [1, 3], "mode": "zero", "fill": -1}, CHANNELS)
    out = zero(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, :, 4:8, 1:3], x[:, :, 4:8, 1:3])
    assert (out[:, :, :4] == -1).all() and (out[:, :, :, 3:] == -1).all()


def test_region_outside_image_is_an_error():
    comp = build_component({"type": "region", "rows": [4, 12]}, CHANNELS)
    with pytest.raises(ValueError, match="outside"):
        comp(batch())


def test_mask_and_complement_partition_the_image():
    x = batch() + 1
    masks = (torch.rand(3, 2, 8, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    inside = build_component({"type": "mask", "mask": "nuclei"}, CHANNELS, ["lungs", "nuclei"])(x, masks)
    outside = build_component({"type": "mask", "mask": 1, "invert": True}, CHANNELS, ["lungs", "nuclei"])(x, masks)
    assert torch.equal(inside + outside, x)
    assert torch.equal(inside != 0, (masks[:, 1:2] > 0.5).expand_as(x))


def test_mask_component_needs_masks_of_matching_size():
    comp = build_component({"type": "mask", "mask": 0}, CHANNELS, ["nuclei"])
    with pytest.raises(ValueError, match="carries none"):
        comp(batch(), None)
    with pytest.raises(ValueError, match="differs"):
        comp(batch(), torch.ones(3, 1, 4, 4))


def test_chain_composes():
    x = batch()
    comp = build_component(
        {"type": "chain", "steps": [{"type": "channels", "channels": ["CD4"]}, {"type": "region", "rows": [2, 5]}]},
        CHANNELS,
    )
    assert torch.equal(comp(x), x[:, 1:2, 2:5])
    assert comp.out_shape((4, 8, 6)) == (1, 3, 6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "channels", "channels": ["CD3"]}, "components.bad: unknown channel 'CD3'"),
        ({"type": "channels", "channels": [7]}, "index 7 out of range"),
        ({"type": "channels", "channels": []}, "empty channel"),
        ({"type": "mask", "mask": "lungs"}, "unknown mask 'lungs'"),
        ({"type": "region", "rows": [0, 4], "colz": [0, 1]}, "unknown key.*colz"),
        ({"type": "region", "rows": [0, 4], "mode": "blur"}, "mode crop|zero"),
        ({"type": "stripes"}, "unknown component type 'stripes'"),
        ({"channels": [0]}, "needs a 'type'"),
    ],
)
def test_bad_specs_name_the_fault(spec, message):
    with pytest.raises(ValueError, match=message):
        build_components({"bad": spec}, CHANNELS, ["nuclei"])


# ------------------------------------------------------------------------------------------------------ panels
PANEL = ["DNA_1", "AF488", "CD45", "CD3e", "CD4", "CD8a", "Pan-CK", "CD45.1", "DNA_2"]


def test_panel_expands_to_one_component_per_channel_in_channel_order():
    from splicer.components import expand_panels

    specs = {"markers": {"type": "panel", "exclude": ["DNA_*", "AF*"]}, "dna": {"type": "channels", "channels": [0]}}
    out, inputs = expand_panels(specs, ["view", "markers", "dna"], PANEL)
    names = ["markers:CD45", "markers:CD3e", "markers:CD4", "markers:CD8a", "markers:Pan-CK", "markers:CD45_1"]
    assert list(out) == [*names, "dna"] and inputs == ["view", *names, "dna"]
    assert out["markers:CD45_1"] == {"type": "channels", "channels": ["CD45.1"]}  # '.' would break module names
    chosen, _ = expand_panels({"m": {"type": "panel", "channels": ["CD8a", "CD4"]}}, [], PANEL)
    assert list(chosen) == ["m:CD4", "m:CD8a"]  # channel order, not pattern order
    comps = build_components(specs, PANEL)
    x = torch.arange(2 * 9 * 4 * 4, dtype=torch.float32).reshape(2, 9, 4, 4)
    assert torch.equal(comps["markers:CD8a"](x), x[:, 5:6]) and len(comps) == 7


def test_panel_groups_follow_the_given_order_and_accept_patterns():
    from splicer.components import expand_panels

    groups = {"lineage": ["CD45*", "Pan-CK"], "t_cells": ["CD3e", "CD4", "CD8a"], "dna": ["DNA_*"]}
    out, inputs = expand_panels({"g": {"type": "panel", "groups": groups, "exclude": ["CD45.1"]}}, ["g"], PANEL)
    assert inputs == ["g:lineage", "g:t_cells", "g:dna"]
    assert out["g:lineage"]["channels"] == ["CD45", "Pan-CK"] and out["g:dna"]["channels"] == ["DNA_1", "DNA_2"]
    comp = build_components(out, PANEL)["g:t_cells"]
    assert comp.out_shape((9, 8, 8)) == (3, 8, 8)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "panel", "channels": ["CD99*"]}, r"components\.p\.channels: 'CD99\*' matches no channel"),
        ({"type": "panel", "exclude": ["*"]}, "keeps no channel"),
        ({"type": "panel", "groups": {"a": ["CD4"]}, "channels": ["CD4"]}, "not both"),
        ({"type": "panel", "groups": {"a": ["DNA_1"]}, "exclude": ["DNA*"]}, r"group\(s\) \['a'\] keep no channel"),
        ({"type": "panel", "groups": []}, "groups: expected"),
        ({"type": "panel", "marker": ["CD4"]}, r"unknown key\(s\) \['marker'\]"),
    ],
)
def test_bad_panels_name_the_key(spec, message):
    from splicer.components import expand_panels

    with pytest.raises(ValueError, match=message):
        expand_panels({"p": spec}, ["p"], PANEL)


def test_panels_wait_for_channel_names_and_build_a_model_when_the_run_starts(monkeypatch):
    from splicer.components import expand_panels
    from splicer.config import validate_run_config
    from splicer.pipeline import grid as G
    from splicer.run import build_model

    specs = {"markers": {"type": "panel", "exclude": ["DNA_*"]}}
    assert expand_panels(specs, ["markers"], None) == (specs, ["markers"])  # unknown channels: unchanged
    config = {
        "datasets": {"mine": {"kind": "multiplex", "params": {"path": "/nowhere"}}},
        "experiments": {
            "e": {
                "data": "mine",
                "pretrain": "pretrain",
                "components": specs,
                "pairings": {"all": ["markers"]},
                "runs": [{"method": "splicer", "pairing": "all", "options": {"include_view": True}}],
            }
        },
        "losses": ["vicreg"],
        "seeds": [0],
        "device": "cpu",
    }
    run = G.Run("e", "splicer", "all", "vicreg", 0)
    assert G.run_config(config, run)["method"]["inputs"] == ["markers"]  # channels not declared: at run time
    monkeypatch.setattr(G, "known_channels", lambda config, experiment: PANEL)
    declared = G.run_config(config, run)
    assert declared["method"]["inputs"] == [f"markers:{c.replace('.', '_')}" for c in PANEL if not c.startswith("DNA")]
    model_section = {
        "encoder": {"arch": "resnet", "base_width": 4, "blocks": [1]},
        "projector_hidden": [16],
        "embed_dim": 56,  # 8 chunks of 7: the view and seven markers
        "fuse": False,
    }
    cfg = validate_run_config({**declared, "model": model_section})
    monkeypatch.setattr(G, "known_channels", lambda config, experiment: None)
    cfg_runtime = validate_run_config({**G.run_config(config, run), "model": cfg["model"]})
    assert cfg_runtime["method"]["inputs"] == ["markers"]
    for c in (cfg, cfg_runtime):  # expanded at config time or when the model is built: the same model
        model = build_model(c, PANEL, [], (9, 16, 16))
        assert [b.name for b in model.pairing.branches] == ["view", *declared["method"]["inputs"]]
        loss, _ = model.training_loss(torch.rand(4, 9, 16, 16), None, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)
