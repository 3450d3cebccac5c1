"""Image encoders (ResNets for any channel count), their save/load format, and K-way fused encoders.

Every encoder built here has an int attribute ``out_dim`` and a dict attribute ``spec`` such that
``build_encoder(**encoder.spec)`` rebuilds the same architecture. Initialisation follows torchvision
(Kaiming-normal fan-out convs, BN weight 1 / bias 0); the last BN of each residual block is NOT zero-initialised
(torchvision's default ``zero_init_residual=False``), for all three architectures alike.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splicer.fileio import write_atomic

ARCHS = ("resnet18", "resnet50", "resnet")
_TORCHVISION_OUT_DIM = {"resnet18": 512, "resnet50": 2048}
_DEFAULT_BLOCKS = (1, 1, 1, 1)
_SMALL_STEM_MAX_SIZE = 64


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _stem_conv(in_channels: int, out_channels: int, small_stem: bool) -> nn.Conv2d:
    """3x3 stride-1 conv (small images) or the ImageNet 7x7 stride-2 conv."""
    if small_stem:
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    return nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (two 3x3 conv-BN, identity or projected shortcut), written out here so
    that the CPU encoder does not pay for importing torchvision (seconds per job on a laptop)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class NarrowResNet(nn.Module):
    """BasicBlock ResNet with ``base_width * 2**i`` channels in stage i and ``blocks[i]`` blocks per stage.

    Stage 1 has stride 1, later stages stride 2; global average pooling gives ``(N, out_dim)``.
    """

    def __init__(self, in_channels: int, base_width: int, blocks: Sequence[int], small_stem: bool) -> None:
        super().__init__()
        self.conv1 = _stem_conv(in_channels, base_width, small_stem)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        inplanes = base_width
        for i, n_blocks in enumerate(blocks):
            planes = base_width * 2**i
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            layers = [BasicBlock(inplanes, planes, stride, downsample)]
            layers += [BasicBlock(planes, planes) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = inplanes
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return torch.flatten(self.avgpool(self.layers(x)), 1)


def build_encoder(
    arch: str,
    in_channels: int,
    image_size: int,
    *,
    base_width: int = 64,
    blocks: Sequence[int] | None = None,
    small_stem: bool | None = None,
) -> nn.Module:
    """Build an encoder mapping ``(N, in_channels, H, W)`` float to ``(N, out_dim)``.

    ``arch``: "resnet18" / "resnet50" (torchvision, random init, ``base_width``/``blocks`` not applicable) or
    "resnet" (narrow BasicBlock ResNet, ``blocks`` per stage, default (1, 1, 1, 1)). ``small_stem=None`` picks
    the 3x3 stride-1 stem without max-pool when ``image_size <= 64``, else the ImageNet stem.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown encoder arch {arch!r}; expected one of {', '.join(ARCHS)}")
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("image_size", image_size)
    _check_positive_int("base_width", base_width)
    if small_stem is None:
        small_stem = image_size <= _SMALL_STEM_MAX_SIZE
    elif not isinstance(small_stem, bool):
        raise ValueError(f"small_stem must be a bool or None, got {small_stem!r}")

    if arch == "resnet":
        blocks = list(_DEFAULT_BLOCKS if blocks is None else blocks)
        if not blocks:
            raise ValueError("blocks must list at least one stage for arch 'resnet', got []")
        for n in blocks:
            _check_positive_int("blocks entry", n)
        encoder: nn.Module = NarrowResNet(in_channels, base_width, blocks, small_stem)
    else:
        if blocks is not None:
            raise ValueError(f"blocks={list(blocks)!r} only applies to arch 'resnet', not {arch!r}")
        if base_width != 64:
            raise ValueError(f"base_width={base_width!r} only applies to arch 'resnet', not {arch!r}")
        import torchvision  # only here: importing it costs seconds, and the narrow ResNet does not need it

        encoder = getattr(torchvision.models, arch)(weights=None)
        encoder.conv1 = _stem_conv(in_channels, 64, small_stem)
        _kaiming_init(encoder.conv1)
        if small_stem:
            encoder.maxpool = nn.Identity()
        encoder.fc = nn.Identity()
        encoder.out_dim = _TORCHVISION_OUT_DIM[arch]

    encoder.spec = {
        "arch": arch,
        "in_channels": in_channels,
        "image_size": image_size,
        "base_width": base_width,
        "blocks": blocks,
        "small_stem": small_stem,
    }
    return encoder


def save_encoder(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Write ``{"encoder_spec", "encoder_state"}`` to ``path`` atomically (:func:`splicer.fileio.write_atomic`)."""
    if isinstance(encoder, FusedEncoders):
        raise ValueError(f"cannot save FusedEncoders to {path}; save each of its .unfuse() encoders instead")
    spec = getattr(encoder, "spec", None)
    if not isinstance(spec, dict):
        raise ValueError(f"encoder {type(encoder).__name__} has no 'spec' dict; cannot save it to {path}")
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save({"encoder_spec": dict(spec), "encoder_state": state}, fh)

    write_atomic(path, save)


def load_encoder(path: str | os.PathLike) -> nn.Module:
    """Rebuild an encoder (on CPU) from a file written by :func:`save_encoder`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder file not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a dict with 'encoder_spec' and 'encoder_state'")
    for key in ("encoder_spec", "encoder_state"):
        if key not in payload:
            raise ValueError(f"{path}: missing key {key!r}")
    try:
        encoder = build_encoder(**payload["encoder_spec"])
        encoder.load_state_dict(payload["encoder_state"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot rebuild encoder from 'encoder_spec'/'encoder_state': {e}") from e
    return encoder


# ---------------------------------------------------------------------------------------------------------
# Fused encoders: K same-architecture encoders as one grouped network.
#
# Every fused parameter/buffer is the concatenation along dim 0 of the K originals (conv weight
# (K*cout, cin/g, kh, kw) with groups K*g; BN affine params and running stats; grouped-linear weight
# (K*out, in)), except 0-dim buffers (BN num_batches_tracked), which are shared. Unfusing is therefore
# chunking every tensor along dim 0. All other modules must be parameter-free and act per channel
# (ReLU, pooling, flatten, identity, containers), which holds for the ResNets above.
# ---------------------------------------------------------------------------------------------------------


class GroupedLinear(nn.Module):
    """K independent ``Linear(in_features, out_features)`` applied to the K chunks of a ``(N, K*in)`` input."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True, **factory: Any) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k * out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(k * out_features, **factory)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        w = self.weight.view(self.k, self.out_features, self.in_features)
        y = torch.einsum("nki,koi->nko", x.reshape(n, self.k, self.in_features), w).reshape(n, -1)
        return y if self.bias is None else y + self.bias


def _fused_shell(module: nn.Module, k: int, **factory: Any) -> nn.Module:
    """An uninitialised K-times-wider/grouped copy of one Conv2d, BatchNorm2d or Linear."""
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(
            k * module.in_channels,
            k * module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            groups=k * module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            **factory,
        )
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(
            k * module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            **factory,
        )
    return GroupedLinear(k, module.in_features, module.out_features, module.bias is not None, **factory)


def _is_channels_last(module: nn.Module) -> bool:
    return any(
        p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
        for p in module.parameters()
    )


class FusedEncoders(nn.Module):
    """K encoders of one spec run as a single network: grouped convolutions, stacked BN and linear weights.

    ``forward(xs)`` takes K tensors of identical shape ``(N, C, H, W)`` and returns K ``(N, out_dim)`` tensors,
    numerically equal (allclose) to ``[enc(x) for enc, x in zip(encoders, xs)]``, gradients and BN running
    statistics included. ``unfuse()`` gives K separate encoders with the current weights.
    """

    _FUSABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)

    def __init__(self, encoders: Sequence[nn.Module]) -> None:
        super().__init__()
        encoders = list(encoders)
        if not encoders:
            raise ValueError("FusedEncoders needs at least one encoder, got 0")
        specs = [getattr(enc, "spec", None) for enc in encoders]
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict):
                raise ValueError(f"encoder {i} ({type(encoders[i]).__name__}) has no 'spec' dict")
            if spec != specs[0]:
                diff = sorted(key for key in spec.keys() | specs[0].keys() if spec.get(key) != specs[0].get(key))
                raise ValueError(f"encoder {i} spec differs from encoder 0 in {diff}: {spec} vs {specs[0]}")
        self.num_encoders = k = len(encoders)
        self.encoder_spec = dict(specs[0])
        self.out_dim = int(encoders[0].out_dim)

        net = copy.deepcopy(encoders[0])
        for name, module in encoders[0].named_modules():
            if type(module) in self._FUSABLE:  # exact types: a subclass may change forward()
                originals = [enc.get_submodule(name) for enc in encoders]
                net.set_submodule(name, self._fuse(originals, k))
            elif list(module.parameters(recurse=False)) or list(module.buffers(recurse=False)):
                raise TypeError(
                    f"cannot fuse module {name!r} of type {type(module).__name__}: only Conv2d, "
                    "BatchNorm2d and Linear may hold parameters or buffers"
                )
        if _is_channels_last(encoders[0]):
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.train(encoders[0].training)

    @staticmethod
    def _fuse(originals: list[nn.Module], k: int) -> nn.Module:
        """The grouped version of one module; its tensors are assigned (not copied into) from the K originals."""
        shell = _fused_shell(originals[0], k, device="meta")  # meta device: no wasted random init
        states = [m.state_dict() for m in originals]
        fused_state = {
            key: t.clone() if t.ndim == 0 else torch.cat([s[key] for s in states]) for key, t in states[0].items()
        }
        shell.load_state_dict(fused_state, assign=True)
        for name, p in shell.named_parameters():
            p.requires_grad_(originals[0].get_parameter(name).requires_grad)
        shell.train(originals[0].training)
        return shell

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != self.num_encoders:
            raise ValueError(f"FusedEncoders expects {self.num_encoders} inputs, got {len(xs)}")
        shapes = [tuple(x.shape) for x in xs]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"FusedEncoders inputs must share one shape, got {shapes}")
        out = self.net(torch.cat(list(xs), dim=1))
        return list(out.split(self.out_dim, dim=1))

    def unfuse(self) -> list[nn.Module]:
        """K fresh encoders (same device, dtype, memory format and train/eval mode) with the current weights."""
        k = self.num_encoders
        fused_state = self.net.state_dict()
        encoders = []
        for i in range(k):
            with torch.device("meta"):  # skip random init: every tensor is assigned below
                enc = build_encoder(**self.encoder_spec)
            enc.load_state_dict(
                {key: t.clone() if t.ndim == 0 else t.chunk(k)[i].clone() for key, t in fused_state.items()},
                assign=True,
            )
            enc.train(self.training)
            encoders.append(enc)
        return encoders
