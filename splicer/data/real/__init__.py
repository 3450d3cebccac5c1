"""Builders of the paper's real datasets, one module per upstream source (imported only when used).

Each module exposes ``build(out, files, params, caps, seed) -> {dataset name: path}`` (see
:mod:`splicer.data.real.common`) and writes the same dataset names, channel, class and split names as the
matching demo family of :mod:`splicer.data.demo`, so one experiments config runs on demo or real data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

__all__ = ["BUILDERS", "DATASETS", "builder", "dataset_names", "param_defaults"]

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

DATASETS = {
    "mnist_cifar": ("pretrain", "pretrain_cifar_only", "rNONE", "rMNIST", "rCIFAR", "mnist_only", "cifar_only"),
    "chestmnist": ("pretrain",),
    "pneumoniamnist": ("pneumonia",),
    "eurosat": ("bands13", "rgb"),
    "mmearth": ("pretrain",),
    "nct_crc": ("pretrain", "eval"),
    "camelyon17": ("camelyon",),
    "orion_crc": ("pretrain", "cell_types", "t_cells"),
}
"""The datasets each builder writes (``folder`` writes one, named by its ``name`` param; checked after a build)."""


def dataset_names(kind: str, params: dict | None = None) -> tuple[str, ...]:
    """The dataset directories a build of ``kind`` (with ``params``) writes."""
    if kind == "folder":
        return (str((params or {}).get("name") or param_defaults("folder")["name"]),)
    return DATASETS[kind]


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
