"""Builders of the paper's real datasets, one module per upstream source (imported only when used).

Each module exposes ``build(out, files, params, caps, seed) -> {dataset name: path}`` (see
:mod:`splicer.data.real.common`) and writes the same dataset names, channel, class and split names as the
matching demo family of :mod:`splicer.data.demo`, so one experiments config runs on demo or real data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

__all__ = ["BUILDERS", "builder", "param_defaults"]

BUILDERS = {
    "mnist_cifar": "mnist_cifar",
    "chestmnist": "medmnist",
    "pneumoniamnist": "medmnist",
    "eurosat": "sentinel2",
    "mmearth": "sentinel2",
    "nct_crc": "histology",
    "camelyon17": "histology",
    "orion_crc": "orion",
    "folder": "folder",
}
"""Dataset kind -> module of :mod:`splicer.data.real` holding its builder (``build_<kind>``)."""


def _module(kind: str) -> ModuleType:
    if kind not in BUILDERS:
        raise ValueError(f"no builder for dataset kind {kind!r}; real kinds: {sorted(BUILDERS)}")
    return importlib.import_module(f"splicer.data.real.{BUILDERS[kind]}")


def builder(kind: str) -> Callable:
    """The builder function of a real dataset ``kind``."""
    return getattr(_module(kind), f"build_{kind}")


_DEFAULTS = {
    "nct_crc": "NCT_DEFAULTS",
    "camelyon17": "CAMELYON_DEFAULTS",
    "eurosat": "EUROSAT_DEFAULTS",
    "mmearth": "MMEARTH_DEFAULTS",
}
"""Kinds whose module holds several builders: the name of their defaults; the others use ``DEFAULTS``."""


def param_defaults(kind: str) -> dict:
    """The builder ``params`` of a real dataset ``kind`` with their defaults (for checking a config early)."""
    defaults = getattr(_module(kind), _DEFAULTS.get(kind, "DEFAULTS"))
    return dict(defaults[kind] if kind in ("chestmnist", "pneumoniamnist") else defaults)
