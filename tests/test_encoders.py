"""Tests for splicer.encoders and splicer.heads."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from splicer.encoders import FusedEncoders, build_encoder, load_encoder, save_encoder
from splicer.heads import Projector

ATOL, RTOL = 1e-5, 1e-4
SMALL = {"arch": "resnet", "base_width": 8, "blocks": (2, 1, 1)}


# ---------------------------------------------------------------------------------------------- build_encoder


@pytest.mark.parametrize("size", [16, 32, 64, 96])
@pytest.mark.parametrize("channels", [1, 3, 13, 19])
@pytest.mark.parametrize("arch", ["resnet18", "resnet"])
def test_output_shape(arch: str, channels: int, size: int) -> None:
    enc = build_encoder(arch, channels, size).eval()
    expected = 512
    assert enc.out_dim == expected
    with torch.no_grad():
        out = enc(torch.rand(2, channels, size, size))
    assert out.shape == (2, expected)
    assert torch.isfinite(out).all()


def test_resnet50_tiny() -> None:
    enc = build_encoder("resnet50", 13, 16)
    assert enc.out_dim == 2048
    assert enc.conv1.in_channels == 13
    assert isinstance(enc.fc, nn.Identity)
    assert enc(torch.rand(2, 13, 16, 16)).shape == (2, 2048)


@pytest.mark.parametrize("small_stem", [True, False])
def test_min_input_size(small_stem: bool) -> None:
    enc = build_encoder("resnet", 2, 8, base_width=4, small_stem=small_stem).eval()
    assert enc(torch.rand(1, 2, 8, 8)).shape == (1, enc.out_dim)


def test_narrow_resnet_width_and_depth() -> None:
    enc = build_encoder("resnet", 3, 32, base_width=8, blocks=(2, 3))
    assert enc.out_dim == 16
    assert [len(stage) for stage in enc.layers] == [2, 3]
    assert enc(torch.rand(2, 3, 32, 32)).shape == (2, 16)


@pytest.mark.parametrize("arch", ["resnet18", "resnet"])
@pytest.mark.parametrize(
    ("image_size", "small_stem", "expect_small"),
    [
        (32, None, True),
        (64, None, True),
        (65, None, False),
        (96, None, False),
        (96, True, True),
        (32, False, False),
    ],
)
def test_stem_selection(arch: str, image_size: int, small_stem: bool | None, expect_small: bool) -> None:
    enc = build_encoder(arch, 4, image_size, small_stem=small_stem)
    assert enc.spec["small_stem"] is expect_small
    if expect_small:
        assert (enc.conv1.kernel_size, enc.conv1.stride, enc.conv1.padding) == ((3, 3), (1, 1), (1, 1))
        assert isinstance(enc.maxpool, nn.Identity)
    else:
        assert (enc.conv1.kernel_size, enc.conv1.stride) == ((7, 7), (2, 2))
        assert isinstance(enc.maxpool, nn.MaxPool2d)
    assert enc.conv1.bias is None
    assert enc.conv1.in_channels == 4


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"arch": "vgg11", "in_channels": 3, "image_size": 32}, "vgg11"),
        ({"arch": "resnet", "in_channels": 0, "image_size": 32}, "in_channels"),
        ({"arch": "resnet18", "in_channels": -2, "image_size": 32}, "-2"),
        ({"arch": "resnet18", "in_channels": 3, "image_size": 32, "blocks": (1, 1)}, "blocks"),
        ({"arch": "resnet", "in_channels": 3, "image_size": 32, "blocks": ()}, "blocks"),
        ({"arch": "resnet", "in_channels": 3, "image_size": 32, "base_width": 0}, "base_width"),
    ],
)
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_encoder(**kwargs)


# ------------------------------------------------------------------------------------------------ save / load


def test_save_load_round_trip(tmp_path) -> None:
    enc = build_encoder("resnet", 5, 24, base_width=8, blocks=(1, 2))
    enc(torch.rand(4, 5, 24, 24))  # update BN running stats so they are not at their initial values
    enc.eval()
    path = tmp_path / "sub" / "encoder.pt"
    save_encoder(enc, path)
    assert [p.name for p in path.parent.iterdir()] == ["encoder.pt"]  # no temp file left behind
    assert torch.load(path, weights_only=True).keys() == {"encoder_spec", "encoder_state"}
    loaded = load_encoder(path).eval()
    assert loaded.spec == enc.spec
    assert build_encoder(**loaded.spec).out_dim == enc.out_dim
    x = torch.rand(3, 5, 24, 24)
    torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_encoder(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"encoder_spec": {"arch": "resnet", "in_channels": 1, "image_size": 8}}, bad)
    with pytest.raises(ValueError, match="encoder_state"):
        load_encoder(bad)


# ----------------------------------------------------------------------------------------------- fused encoders


def _distinct_encoders(k: int, spec: dict, seed: int = 0) -> list[nn.Module]:
    """K encoders with different conv weights AND different BN affine parameters / running statistics."""
    torch.manual_seed(seed)
    encoders = [build_encoder(**spec) for _ in range(k)]
    with torch.no_grad():
        for enc in encoders:
            for m in enc.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    return encoders


def _assert_same_state(fused: FusedEncoders, encoders: list[nn.Module], grads: bool = False) -> None:
    k = len(encoders)
    tensors = dict(fused.net.named_parameters()) | dict(fused.net.named_buffers())
    for name, t in tensors.items():
        if grads and not isinstance(t, nn.Parameter):
            continue
        value = t.grad if grads else t
        for i, enc in enumerate(encoders):
            ref = enc.get_parameter(name) if isinstance(t, nn.Parameter) else enc.get_buffer(name)
            ref = ref.grad if grads else ref
            got = value if value.ndim == 0 else value.chunk(k)[i]
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m, n=name, i=i: f"{n}[{i}]: {m}")


@pytest.mark.parametrize("k", [2, 4])
def test_fused_matches_loop(k: int) -> None:
    spec = {**SMALL, "in_channels": 3, "image_size": 16}
    encoders = _distinct_encoders(k, spec)
    fused = FusedEncoders(encoders)
    assert fused.out_dim == encoders[0].out_dim and fused.num_encoders == k
    conv = fused.net.conv1
    assert (conv.in_channels, conv.out_channels, conv.groups) == (3 * k, 8 * k, k)
    assert conv.weight.shape == (8 * k, 3, 3, 3)
    assert fused.net.bn1.num_features == 8 * k
    _assert_same_state(fused, encoders)

    fused_opt = torch.optim.SGD(fused.parameters(), lr=0.1)
    loop_opt = torch.optim.SGD([p for enc in encoders for p in enc.parameters()], lr=0.1)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.rand(4, 3, 16, 16, generator=gen) for _ in range(k)]
    targets = [torch.randn(4, fused.out_dim, generator=gen) for _ in range(k)]

    # train mode: outputs, BN running stats and gradients
    fused_out = fused(xs)
    loop_out = [enc(x) for enc, x in zip(encoders, xs, strict=True)]
    assert len(fused_out) == k
    for a, b in zip(fused_out, loop_out, strict=True):
        assert a.shape == (4, fused.out_dim)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    _assert_same_state(fused, encoders)  # running stats updated identically
    for outs, opt in ((fused_out, fused_opt), (loop_out, loop_opt)):
        opt.zero_grad()
        sum(((o - t) ** 2).mean() * (i + 1) for i, (o, t) in enumerate(zip(outs, targets, strict=True))).backward()
    _assert_same_state(fused, encoders, grads=True)

    # one SGD step on both, then unfuse and compare with the separately trained encoders
    fused_opt.step()
    loop_opt.step()
    unfused = fused.unfuse()
    assert len(unfused) == k
    for enc, ref in zip(unfused, encoders, strict=True):
        assert enc.spec == ref.spec and enc.training
        for (name, a), (_, b) in zip(enc.state_dict().items(), ref.state_dict().items(), strict=True):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m, n=name: f"{n}: {m}")

    # eval mode uses the (updated) running stats
    fused.eval()
    for enc in encoders:
        enc.eval()
    with torch.no_grad():
        for a, enc, x in zip(fused(xs), encoders, xs, strict=True):
            torch.testing.assert_close(a, enc(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_fused_torchvision_eval(arch: str) -> None:
    encoders = [enc.eval() for enc in _distinct_encoders(2, {"arch": arch, "in_channels": 2, "image_size": 8})]
    fused = FusedEncoders(encoders)
    assert not fused.training and not fused.net.layer1[0].bn1.training
    xs = [torch.rand(2, 2, 8, 8) for _ in range(2)]
    with torch.no_grad():
        for a, enc, x in zip(fused(xs), encoders, xs, strict=True):
            ref = enc(x)
            scale = ref.abs().max()  # resnet50 outputs reach ~10; float32 rounding grows with depth and scale
            torch.testing.assert_close(a / scale, ref / scale, atol=ATOL, rtol=RTOL)


def test_fused_round_trip_exact() -> None:
    encoders = _distinct_encoders(3, {**SMALL, "in_channels": 4, "image_size": 16})
    for enc, ref in zip(FusedEncoders(encoders).unfuse(), encoders, strict=True):
        for a, b in zip(enc.state_dict().values(), ref.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_fused_channels_last() -> None:
    encoders = _distinct_encoders(2, {**SMALL, "in_channels": 3, "image_size": 16})
    encoders = [enc.to(memory_format=torch.channels_last) for enc in encoders]
    fused = FusedEncoders(encoders)
    assert fused.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    xs = [torch.rand(4, 3, 16, 16).to(memory_format=torch.channels_last) for _ in range(2)]
    fused_out = fused(xs)
    for a, enc, x in zip(fused_out, encoders, xs, strict=True):
        torch.testing.assert_close(a, enc(x), atol=ATOL, rtol=RTOL)
    sum(o.square().mean() for o in fused_out).backward()
    unfused = fused.unfuse()
    assert unfused[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_fused_linear_layers() -> None:
    torch.manual_seed(0)

    def make() -> nn.Module:
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 6),
        )
        net.spec, net.out_dim = {"arch": "custom"}, 6
        return net

    encoders = [make() for _ in range(3)]
    fused = FusedEncoders(encoders)
    xs = [torch.rand(5, 2, 8, 8) for _ in range(3)]
    fused_out = fused(xs)
    loop_out = [enc(x) for enc, x in zip(encoders, xs, strict=True)]
    for a, b in zip(fused_out, loop_out, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    sum(o.sum() * (i + 1) for i, o in enumerate(fused_out)).backward()
    sum(o.sum() * (i + 1) for i, o in enumerate(loop_out)).backward()
    _assert_same_state(fused, encoders, grads=True)


def test_fused_rejects_bad_input() -> None:
    base = {**SMALL, "in_channels": 3, "image_size": 16}
    with pytest.raises(ValueError, match="base_width"):
        FusedEncoders([build_encoder(**base), build_encoder(**{**base, "base_width": 4})])
    with pytest.raises(ValueError, match="in_channels"):
        FusedEncoders([build_encoder(**base), build_encoder(**{**base, "in_channels": 4})])
    with pytest.raises(ValueError, match="spec"):
        FusedEncoders([build_encoder(**base), nn.Conv2d(3, 8, 3)])
    with pytest.raises(ValueError, match="at least one"):
        FusedEncoders([])
    gn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
    gn.spec, gn.out_dim = {"arch": "custom"}, 4
    with pytest.raises(TypeError, match="GroupNorm"):
        FusedEncoders([gn, gn])

    fused = FusedEncoders([build_encoder(**base) for _ in range(2)])
    with pytest.raises(ValueError, match="expects 2 inputs, got 3"):
        fused([torch.rand(2, 3, 16, 16)] * 3)
    with pytest.raises(ValueError, match="shape"):
        fused([torch.rand(2, 3, 16, 16), torch.rand(2, 3, 8, 8)])


# ---------------------------------------------------------------------------------------------------- Projector


def test_projector_structure() -> None:
    proj = Projector(32, (64, 48), 16)
    assert proj.out_dim == 16
    layers = list(proj.hidden)
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2
    assert [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)] == [(32, 64), (64, 48)]
    assert [m.num_features for m in layers if isinstance(m, nn.BatchNorm1d)] == [64, 48]
    assert isinstance(proj.last, nn.Linear) and (proj.last.in_features, proj.last.out_features) == (48, 16)
    assert proj(torch.randn(4, 32)).shape == (4, 16)


def test_projector_no_hidden_and_errors() -> None:
    proj = Projector(8, (), 3)
    assert len(proj.hidden) == 0
    assert proj(torch.randn(2, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"hidden_dims\[1\]"):
        Projector(8, (4, 0), 3)
    with pytest.raises(ValueError, match="out_dim"):
        Projector(8, (4,), -1)


def test_own_basic_block_equals_torchvision() -> None:
    """The BasicBlock written out in splicer.encoders computes exactly torchvision's."""
    from torchvision.models.resnet import BasicBlock as TorchvisionBlock

    from splicer.encoders import BasicBlock

    torch.manual_seed(0)
    down = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
    ours = BasicBlock(4, 8, 2, down)
    theirs = TorchvisionBlock(4, 8, 2, copy.deepcopy(down))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 10, 10)
    assert torch.equal(ours(x), theirs(x))
