"""Run configs: one YAML/dict describing a pretraining run, validated by name before any work starts.

A run config has these sections (all but ``method`` optional)::

    method:      {name: splicer, inputs: [view, cifar], loss: vicreg, options: {chunk_sizes: [128, 128]}}
    components:  {cifar: {type: region, rows: [16, 32]}}          # see splicer.components
    model:       {encoder: {arch: resnet18}, projector_hidden: [2048, 2048], embed_dim: 2048, fuse: auto}
    loss_options: {vicreg: {sim_weight: 25, var_weight: 25, cov_weight: 1}, simclr: {temperature: 0.2}}
    augment:     {crop_scale: [0.2, 1.0], ...}                      # see splicer.augment.AugmentConfig
    train:       {epochs: 200, batch_size: 256, ...}                # see splicer.train.TrainConfig

Defaults where the paper's supplement is missing follow solo-learn's CIFAR recipes (ResNet-18 with the small
stem, a 2048-2048-2048 projector as VICReg uses, VICReg 25/25/1, SimCLR temperature 0.2).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULTS",
    "check_types",
    "coerce_fields",
    "deep_merge",
    "load_run_config",
    "parse_overrides",
    "validate_run_config",
]

DEFAULTS: dict[str, Any] = {
    "method": {"name": "baseline", "inputs": [], "loss": "vicreg", "options": {}},
    "components": {},
    "model": {
        "encoder": {"arch": "resnet18"},
        "projector_hidden": [2048, 2048],
        "embed_dim": 2048,
        "fuse": "auto",  # fuse identical component encoders on CUDA; on CPU grouped convs are slower than a loop
    },
    "loss_options": {},
    "augment": {},
    "train": {},
}
_SECTION_KEYS = {
    "method": {"name", "inputs", "loss", "options"},
    "model": {"encoder", "projector_hidden", "embed_dim", "fuse"},
}


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["train.epochs=3", "method.inputs=[view, cifar]"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        node = out
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw)
    return out


# ------------------------------------------------------------------------------------------------------ types
# A number YAML 1.1 (PyYAML) leaves as a string: ``1e-3`` and ``1e4`` need a dot to be floats there.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _as_number(value: Any) -> float | None:
    """``value`` as a finite float when it is a number or a numeric string (``"1e-3"``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(ok, converted)``: ``value`` as type ``hint`` (int, float, bool, str, unions with None, tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return type(None) in args, None
        for arg in args:
            ok, out = _convert(value, arg)
            if ok and arg is not type(None):
                return True, out
        return False, value
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or len(value) != len(args):
            return False, value
        items = [_convert(v, a) for v, a in zip(value, args, strict=True)]
        return all(ok for ok, _ in items), [v for _, v in items]  # a list: run configs are written as YAML
    if origin is list:
        if not isinstance(value, list | tuple):
            return False, value
        items = [_convert(v, args[0]) for v in value] if args else [(True, v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        number = _as_number(value)
        return (True, int(number)) if number is not None and number.is_integer() else (False, value)
    if hint is float:
        number = _as_number(value)
        if number is None:
            return False, value
        return True, (value if isinstance(value, int | float) else number)  # a number stays as written
    if hint is str:
        return isinstance(value, str), value
    return True, value  # anything else: the consumer checks it


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is list:
        return f"a list of ({_describe(args[0])})" if args else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _coerce(values: Mapping, hints: Mapping[str, Any], where: str) -> dict:
    out = dict(values)
    for key, value in values.items():
        if key in hints:
            ok, converted = _convert(value, hints[key])
            if not ok:
                raise ValueError(
                    f"{where}.{key} must be {_describe(hints[key])}, got {value!r} ({type(value).__name__})"
                )
            out[key] = converted
    return out


def coerce_fields(cls: type, values: Mapping, where: str) -> dict:
    """``values`` for the dataclass ``cls`` with each known field checked against its type and converted
    (``1e-3`` written without a dot, which YAML reads as a string, becomes the float every user means; ``32.0``
    becomes 32 for an integer field, ``1.5`` or ``"ten"`` is an error naming ``where.<key>``). Unknown keys are
    left for ``cls`` to reject."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    return _coerce(values, {f.name: hints[f.name] for f in dataclasses.fields(cls)}, where)


def _signature_hints(fn: Any) -> dict[str, Any]:
    """Annotated keyword parameters of ``fn`` (a class: its ``__init__``) with their types."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    hints = typing.get_type_hints(target)
    return {n: hints.get(n, Any) for n in inspect.signature(target).parameters if n != "self"}


def check_types(cfg: Mapping, where: str = "run config") -> dict:
    """The sections of a run config (whole or partial, e.g. a pipeline's ``run_overrides``) with every value whose
    type is known checked and converted; errors name ``where`` and the key path (``train.epochs``)."""
    from splicer.augment import AugmentConfig
    from splicer.registry import LOSSES, resolve
    from splicer.train import TrainConfig

    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where} must be a mapping of sections, got {cfg!r}")
    out = dict(cfg)
    for section, cls in (("train", TrainConfig), ("augment", AugmentConfig)):
        if section in cfg:
            out[section] = coerce_fields(cls, cfg[section], f"{where}: {section}")
    if "model" in cfg:
        model = cfg["model"]
        if not isinstance(model, Mapping):
            raise ValueError(f"{where}: model must be a mapping, got {model!r}")
        model = _coerce(model, {"embed_dim": int, "projector_hidden": list[int]}, f"{where}: model")
        if "encoder" in model:
            from splicer.encoders import build_encoder

            encoder = model["encoder"]
            if not isinstance(encoder, Mapping):
                raise ValueError(f"{where}: model.encoder must be a mapping (arch, ...), got {encoder!r}")
            hints = {k: v for k, v in _signature_hints(build_encoder).items() if k not in ("in_channels", "image_size")}
            if extra := sorted(set(encoder) - set(hints)):
                raise ValueError(f"{where}: unknown key(s) {extra} in model.encoder; expected {sorted(hints)}")
            model["encoder"] = _coerce(encoder, hints, f"{where}: model.encoder")
        out["model"] = model
    if "loss_options" in cfg:
        options = cfg["loss_options"]
        if not isinstance(options, Mapping):
            raise ValueError(f"{where}: loss_options must map loss names to their options, got {options!r}")
        out["loss_options"] = dict(options)
        for loss, values in options.items():
            if loss not in LOSSES:
                continue  # validate_run_config names it
            hints = _signature_hints(resolve(LOSSES[loss].module))
            if not isinstance(values, Mapping):
                raise ValueError(f"{where}: loss_options.{loss} must be a mapping, got {values!r}")
            if extra := sorted(set(values) - set(hints)):
                raise ValueError(f"{where}: unknown option(s) {extra} in loss_options.{loss}; expected {sorted(hints)}")
            out["loss_options"][loss] = _coerce(values, hints, f"{where}: loss_options.{loss}")
    return out


def validate_run_config(cfg: Mapping, where: str = "run config") -> dict:
    """Merge defaults and check section and key names; errors name ``where`` and the key."""
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {sorted(unknown)}; expected {sorted(DEFAULTS)}")
    merged = deep_merge(DEFAULTS, cfg)
    for section in ("model", "augment", "train", "loss_options"):
        if not isinstance(merged[section], Mapping):
            raise ValueError(f"{where}: section {section!r} must be a mapping, got {merged[section]!r}")
    for section, keys in _SECTION_KEYS.items():
        extra = set(merged[section]) - keys
        if extra:
            raise ValueError(f"{where}: unknown key(s) {sorted(extra)} in section {section!r}; expected {sorted(keys)}")
    from splicer.registry import LOSSES, METHODS

    if extra := sorted(set(merged["loss_options"]) - set(LOSSES)):
        raise ValueError(f"{where}: unknown loss(es) {extra} in section 'loss_options'; losses: {list(LOSSES)}")
    if merged["method"]["name"] not in METHODS:
        raise ValueError(f"{where}: unknown method {merged['method']['name']!r}; methods: {list(METHODS)}")
    if merged["method"]["loss"] not in LOSSES:
        raise ValueError(f"{where}: unknown loss {merged['method']['loss']!r}; losses: {list(LOSSES)}")
    merged = check_types(merged, where)
    from splicer.augment import AugmentConfig
    from splicer.train import TrainConfig

    for section, cls in (("augment", AugmentConfig), ("train", TrainConfig)):
        try:
            cls.from_dict(merged[section])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: section {section!r}: {err}") from None
    if merged["model"]["fuse"] not in (True, False, "auto"):
        raise ValueError(f"{where}: model.fuse must be true, false or auto, got {merged['model']['fuse']!r}")
    if not isinstance(merged["method"]["inputs"], list):
        raise ValueError(f"{where}: method.inputs must be a list of component names or 'view'")
    return merged


def load_run_config(path: str | Path | Mapping, overrides: list[str] | None = None) -> dict:
    """Load a run config from a YAML file (or take a dict), apply ``key=value`` overrides, validate."""
    if isinstance(path, Mapping):
        cfg, where = dict(path), "run config"
    else:
        where = str(path)
        try:
            cfg = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ValueError(f"run config {where} does not exist") from None
        except yaml.YAMLError as err:
            raise ValueError(f"run config {where} is not valid YAML: {err}") from None
        if not isinstance(cfg, Mapping):
            raise ValueError(f"run config {where} must be a mapping of sections, got {type(cfg).__name__}")
    if overrides:
        cfg = deep_merge(cfg, parse_overrides(overrides))
    return validate_run_config(cfg, where)
