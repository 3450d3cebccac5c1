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
