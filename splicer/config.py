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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULTS", "deep_merge", "load_run_config", "parse_overrides", "validate_run_config"]

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


def validate_run_config(cfg: Mapping, where: str = "run config") -> dict:
    """Merge defaults and check section and key names; errors name ``where`` and the key."""
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {sorted(unknown)}; expected {sorted(DEFAULTS)}")
    merged = deep_merge(DEFAULTS, cfg)
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
