"""Components: how a component image is cut from an image, on whole batches and on the training device.

A component is described in config by a small dict, e.g.::

    mnist:      {type: region, rows: [0, 16]}                   # top half of an MNIST-CIFAR image
    cd8:        {type: channels, channels: [CD8a]}               # one marker of a multiplex image
    rgb:        {type: channels, channels: [B04, B03, B02]}      # a band subset of a hyperspectral image
    nuclei:     {type: mask, mask: nuclei}                       # pixels inside a segmentation mask
    background: {type: mask, mask: nuclei, invert: true}         # ... and its complement
    dna_top:    {type: chain, steps: [{type: channels, channels: [Hoechst]}, {type: region, rows: [0, 8]}]}

Channels and masks may be named (resolved against the dataset's ``channel_names`` / ``mask_names``) or
given as integer indices. Every component maps ``(x: (N, C, H, W), masks: (N, M, H, W) | None)`` to a batch
of component images and reports its output shape, which decides the encoder built for it.
:func:`check_components` checks a ``components`` section against what a dataset will hold before it exists
(the pipeline's config checks).

**Panels** (a shorthand for many channel components: a 40-marker panel without 40 entries)::

    markers: {type: panel}                                          # one component per channel
    markers: {type: panel, channels: ["CD*", Pan-CK], exclude: ["DNA_*", "*background*"]}
    groups:  {type: panel, groups: {lineage: [CD45, CD3e, CD20, Pan-CK], functional: [Ki67, "PD-*"]}}

``channels``/``exclude``/``groups`` hold channel names or fnmatch patterns (each must match a channel). A panel
expands (:func:`expand_panels`) into channel components named ``<panel>:<channel>`` (one per channel, in the
dataset's channel order) or ``<panel>:<group>`` (one per group, in the order given), and a pairing that names the
panel pairs all of them, in that order: ``pairings: {per_marker: [markers]}`` or ``[groups, view]``. It works for
any dataset with named channels (multiplex markers, spectral bands). Panels expand where the channel names are
known: when the run is built from its dataset, and in the pipeline's config checks when the dataset kind declares
its channels beforehand.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PANEL_KEYS",
    "ChainComponent",
    "ChannelComponent",
    "Component",
    "MaskComponent",
    "RegionComponent",
    "build_component",
    "build_components",
    "check_components",
    "expand_panels",
]

Shape = tuple[int, int, int]
_INDICES: dict[tuple[tuple[int, ...], torch.device], Tensor] = {}


def _index(channels: tuple[int, ...], device: torch.device) -> Tensor:
    """The channel indices as a tensor on ``device``, made once: indexing with a Python list would copy it to the
    device on every call, which a CUDA graph capture of the training step (:mod:`splicer.step`) refuses."""
    key = (channels, device)
    if key not in _INDICES:
        _INDICES[key] = torch.tensor(channels, dtype=torch.long, device=device)
    return _INDICES[key]


class Component:
    """Base class: ``component(x, masks) -> Tensor`` and ``out_shape((C, H, W)) -> (C, H, W)``."""

    def __call__(self, x: Tensor, masks: Tensor | None = None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def out_shape(self, in_shape: Shape) -> Shape:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class ChannelComponent(Component):
    """A subset of channels (multiplex markers, spectral bands), in the given order."""

    channels: tuple[int, ...]

    def __call__(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        if len(self.channels) == x.shape[1] and self.channels == tuple(range(x.shape[1])):
            return x
        if len(self.channels) == 1:
            return x[:, self.channels[0] : self.channels[0] + 1]
        return x[:, _index(self.channels, x.device)]

    def out_shape(self, in_shape: Shape) -> Shape:
        return (len(self.channels), in_shape[1], in_shape[2])


@dataclass(frozen=True)
class RegionComponent(Component):
    """A rectangle ``rows x cols``; ``mode='crop'`` cuts it out, ``mode='zero'`` keeps the size, filling outside."""

    rows: tuple[int, int]
    cols: tuple[int, int] | None = None
    mode: str = "crop"
    fill: float = 0.0

    def _bounds(self, h: int, w: int) -> tuple[int, int, int, int]:
        r0, r1 = self.rows
        c0, c1 = self.cols if self.cols is not None else (0, w)
        if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
            raise ValueError(f"region rows={list(self.rows)} cols={[c0, c1]} lies outside an image of {h}x{w}")
        return r0, r1, c0, c1

    def __call__(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        r0, r1, c0, c1 = self._bounds(x.shape[-2], x.shape[-1])
        if self.mode == "crop":
            return x[:, :, r0:r1, c0:c1]
        out = torch.full_like(x, self.fill)
        out[:, :, r0:r1, c0:c1] = x[:, :, r0:r1, c0:c1]
        return out

    def out_shape(self, in_shape: Shape) -> Shape:
        r0, r1, c0, c1 = self._bounds(in_shape[1], in_shape[2])
        return (in_shape[0], r1 - r0, c1 - c0) if self.mode == "crop" else in_shape


@dataclass(frozen=True)
class MaskComponent(Component):
    """The pixels inside segmentation mask ``mask`` (or outside it, ``invert``), the rest set to ``fill``."""

    mask: int
    invert: bool = False
    fill: float = 0.0

    def __call__(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        if masks is None:
            raise ValueError("a mask component needs the dataset's masks, but the batch carries none")
        if masks.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"mask size {tuple(masks.shape[-2:])} differs from image size {tuple(x.shape[-2:])}")
        keep = masks[:, self.mask : self.mask + 1] > 0.5
        if self.invert:
            keep = ~keep
        return torch.where(keep, x, self.fill)

    def out_shape(self, in_shape: Shape) -> Shape:
        return in_shape


@dataclass(frozen=True)
class ChainComponent(Component):
    """Components applied one after the other (e.g. a channel subset, then a region)."""

    steps: tuple[Component, ...]

    def __call__(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        for step in self.steps:
            x = step(x, masks)
        return x

    def out_shape(self, in_shape: Shape) -> Shape:
        for step in self.steps:
            in_shape = step.out_shape(in_shape)
        return in_shape


def _suggest(item: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(item, list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve(items: Sequence[int | str], names: Sequence[str] | None, what: str, where: str) -> tuple[int, ...]:
    """Names or indices -> indices into ``names``; ``names=None`` (not known yet) checks only the types and
    returns placeholder indices."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ValueError(f"{where}: {what}s must be a list of names or indices, got {items!r}")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ValueError(f"{where}: {what} {item!r} is neither a name nor an index")
        if isinstance(item, int):
            if item < 0 or (names is not None and item >= len(names)):
                n = "?" if names is None else len(names)
                raise ValueError(f"{where}: {what} index {item} out of range (the dataset has {n})")
            out.append(item)
        elif names is None:
            out.append(-1)
        elif item in names:
            out.append(list(names).index(item))
        else:
            has = f"the dataset has {list(names)}" if names else f"the dataset has no {what}s"
            raise ValueError(f"{where}: unknown {what} {item!r}{_suggest(item, names)}; {has}")
    if not out:
        raise ValueError(f"{where}: empty {what} list")
    return tuple(out)


def _int_pair(spec: Mapping, key: str, where: str) -> tuple[int, int]:
    value = spec[key]
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{where}: {key} must be [start, stop] (two integers), got {value!r}")
    return int(value[0]), int(value[1])


def _fill(spec: Mapping, where: str) -> float:
    value = spec.get("fill", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: fill must be a number, got {value!r}")
    return float(value)


PANEL_KEYS = frozenset({"type", "channels", "exclude", "groups"})
"""The keys of a ``panel`` component (one channel component per channel, or per named group)."""
_KEYS = {
    "panel": set(PANEL_KEYS),
    "channels": {"type", "channels"},
    "region": {"type", "rows", "cols", "mode", "fill"},
    "mask": {"type", "mask", "invert", "fill"},
    "chain": {"type", "steps"},
}
_REQUIRED = {"panel": (), "channels": ("channels",), "region": ("rows",), "mask": ("mask",), "chain": ("steps",)}


def _build(
    spec: Mapping, channel_names: Sequence[str] | None, mask_names: Sequence[str] | None, where: str
) -> Component:
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"{where}: a component needs a 'type' (one of {sorted(_KEYS)}), got {spec!r}")
    kind = spec["type"]
    if kind not in _KEYS:
        hint = _suggest(kind, sorted(_KEYS)) if isinstance(kind, str) else ""
        raise ValueError(f"{where}: unknown component type {kind!r}{hint}; choose one of {sorted(_KEYS)}")
    unknown = set(spec) - _KEYS[kind]
    if unknown:
        hints = "".join(_suggest(str(k), sorted(_KEYS[kind])) for k in sorted(unknown, key=str))
        raise ValueError(
            f"{where}: unknown key(s) {sorted(unknown, key=str)}{hints} for a {kind!r} component; "
            f"its keys: {sorted(_KEYS[kind])}"
        )
    if missing := [k for k in _REQUIRED[kind] if k not in spec]:
        raise ValueError(f"{where}: a {kind!r} component needs {missing}")
    if kind == "panel":
        raise ValueError(f"{where}: a panel stands for several components; expand it first (expand_panels)")
    if kind == "channels":
        return ChannelComponent(_resolve(spec["channels"], channel_names, "channel", where))
    if kind == "region":
        rows = _int_pair(spec, "rows", where)
        cols = _int_pair(spec, "cols", where) if spec.get("cols") is not None else None
        mode = spec.get("mode", "crop")
        if mode not in ("crop", "zero"):
            raise ValueError(f"{where}: region mode must be crop or zero, got {mode!r}")
        for key, (start, stop) in (("rows", rows), ("cols", cols or (0, 1))):
            if not 0 <= start < stop:
                raise ValueError(f"{where}: region {key} [{start}, {stop}] must satisfy 0 <= start < stop")
        return RegionComponent(rows, cols, mode, _fill(spec, where))
    if kind == "mask":
        invert = spec.get("invert", False)
        if not isinstance(invert, bool):
            raise ValueError(f"{where}: invert must be true or false, got {invert!r}")
        (index,) = _resolve([spec["mask"]], mask_names, "mask", where)
        return MaskComponent(index, invert, _fill(spec, where))
    steps = spec["steps"]
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
        raise ValueError(f"{where}: a chain needs steps: a non-empty list of components, got {steps!r}")
    built = tuple(_build(s, channel_names, mask_names, f"{where}.steps[{i}]") for i, s in enumerate(steps))
    for i, step in enumerate(built):
        cropped = any(isinstance(b, RegionComponent) and b.mode == "crop" for b in built[:i])
        if isinstance(step, MaskComponent) and cropped:
            raise ValueError(
                f"{where}.steps[{i}]: a mask step after a cropping region no longer matches the masks' size; "
                "put the mask step first"
            )
    return ChainComponent(built)


def build_component(
    spec: Mapping, channel_names: Sequence[str], mask_names: Sequence[str] = (), where: str = "component"
) -> Component:
    """Build a :class:`Component` from its config dict; errors name ``where`` and the offending key or value."""
    return _build(spec, list(channel_names), list(mask_names), where)


def build_components(
    specs: Mapping[str, Mapping], channel_names: Sequence[str], mask_names: Sequence[str] = ()
) -> dict[str, Component]:
    """Build every named component of a config section ``components: {name: spec}`` (panels expanded)."""
    specs, _ = expand_panels(specs, [], channel_names)
    return {
        name: build_component(spec, channel_names, mask_names, where=f"components.{name}")
        for name, spec in specs.items()
    }


def check_components(
    specs: Mapping[str, Mapping],
    channel_names: Sequence[str] | None,
    mask_names: Sequence[str] | None,
    size: tuple[int, int] | None,
    where: str = "components",
) -> dict[str, Shape | None]:
    """Check a ``components`` section against what a dataset will hold, before it exists: types, keys, channel
    and mask names, and regions inside images of ``size`` (H, W). ``None`` for any of these means "not known
    yet": only what can be checked without it is. Returns each component's output shape (``None`` when the
    dataset's channels or size are unknown); errors name ``where.<component>`` and the value at fault."""
    if not isinstance(specs, Mapping):
        raise ValueError(f"{where}: must map component names to components, got {specs!r}")
    shapes: dict[str, Shape | None] = {}
    for name, spec in specs.items():
        at = f"{where}.{name}"
        component = _build(spec, None if channel_names is None else list(channel_names), mask_names, at)
        shapes[name] = None
        if size is None:
            continue
        try:  # regions are checked against the size even when the channels are not known yet
            shape = component.out_shape((1 if channel_names is None else len(channel_names), *size))
        except ValueError as err:
            raise ValueError(f"{at}: {err}") from None
        if channel_names is not None:
            shapes[name] = shape
    return shapes


def _members(patterns: object, names: Sequence[str], where: str) -> list[str]:
    """Channel names matching ``patterns`` (names or fnmatch patterns), pattern by pattern, each at most once."""
    if isinstance(patterns, str) or not isinstance(patterns, Sequence) or not patterns:
        raise ValueError(f"{where}: expected a non-empty list of channel names or patterns, got {patterns!r}")
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{where}: {pattern!r} is not a channel name or pattern")
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"{where}: {pattern!r} matches no channel; the dataset has {list(names)}")
        out += [h for h in hits if h not in out]
    return out


def _panel(name: str, spec: Mapping, channel_names: Sequence[str]) -> dict[str, dict]:
    """The channel components a panel stands for, ``{"<panel>:<member>": {type: channels, channels: [...]}}``."""
    where = f"components.{name}"
    if unknown := set(spec) - _KEYS["panel"]:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for a 'panel' component")
    if "groups" in spec and "channels" in spec:
        raise ValueError(f"{where}: a panel takes channels (one component each) or groups (one per group), not both")
    excluded = set(_members(spec["exclude"], channel_names, f"{where}.exclude")) if spec.get("exclude") else set()
    if "groups" in spec:
        groups = spec["groups"]
        if not isinstance(groups, Mapping) or not groups:
            raise ValueError(f"{where}.groups: expected {{group name: [channels]}}, got {groups!r}")
        members = {
            str(g): [c for c in _members(v, channel_names, f"{where}.groups.{g}") if c not in excluded]
            for g, v in groups.items()
        }
    else:
        chosen = _members(spec.get("channels", ["*"]), channel_names, f"{where}.channels")
        members = {c: [c] for c in channel_names if c in chosen and c not in excluded}
    if empty := [g for g, v in members.items() if not v]:
        raise ValueError(f"{where}: group(s) {empty} keep no channel after exclude")
    if not members:
        raise ValueError(f"{where}: the panel keeps no channel")
    return {f"{name}:{member.replace('.', '_')}": {"type": "channels", "channels": v} for member, v in members.items()}


def expand_panels(
    specs: Mapping[str, Mapping], inputs: Sequence[str], channel_names: Sequence[str] | None
) -> tuple[dict[str, Mapping], list[str]]:
    """Components and paired inputs with every ``panel`` replaced by the channel components it stands for (and a
    panel named in ``inputs`` by all of them, in order). Without ``channel_names`` (not known yet) everything is
    returned unchanged."""
    if channel_names is None or not any(
        isinstance(spec, Mapping) and spec.get("type") == "panel" for spec in specs.values()
    ):
        return dict(specs), list(inputs)
    out: dict[str, Mapping] = {}
    expanded: dict[str, list[str]] = {}
    for name, spec in specs.items():
        if isinstance(spec, Mapping) and spec.get("type") == "panel":
            parts = _panel(name, spec, channel_names)
            expanded[name] = list(parts)
            out.update(parts)
        else:
            out[name] = spec
    clashes = [n for parts in expanded.values() for n in parts if n in specs]
    if clashes:
        raise ValueError(f"components: panel components {clashes} clash with components of the same name")
    return out, [m for i in inputs for m in expanded.get(i, [i])]
