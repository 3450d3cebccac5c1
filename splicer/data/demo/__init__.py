"""Deterministic generators of the embedded demo data (small CPU-sized analogues of the paper's datasets).

Every family is built so that a *simple* feature (high variance, first order, easy to learn) and a *complex*
feature (low variance or second order) both carry label information, which is the situation SpliCER targets.
Each generator writes datasets in the :mod:`splicer.data.format` layout under ``out_dir`` and returns
``{dataset_name: path}``; the same seed gives byte-identical arrays (:func:`splicer.data.demo.common.rng_for`).

Families, one module each (see each module for the design): ``mnist_cifar`` (MNIST-CIFAR simplicity-bias
benchmark), ``multiplex`` (Orion-CRC-like single-cell crops), ``hyperspectral`` (EuroSAT-like 13-band patches),
``histology`` (NCT/Camelyon-like H&E tiles with nuclei masks), ``xray`` (ChestMNIST/PneumoniaMNIST-like
radiographs with lung masks).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from splicer.data.demo import histology, hyperspectral, mnist_cifar, multiplex, xray
from splicer.data.demo.histology import make_histology
from splicer.data.demo.hyperspectral import make_hyperspectral
from splicer.data.demo.mnist_cifar import make_mnist_cifar
from splicer.data.demo.multiplex import make_multiplex
from splicer.data.demo.xray import make_xray

__all__ = [
    "DEMO_FAMILIES",
    "demo_datasets",
    "layout",
    "make_demo",
    "make_histology",
    "make_hyperspectral",
    "make_mnist_cifar",
    "make_multiplex",
    "make_xray",
]

DEMO_FAMILIES: dict[str, Callable[..., dict[str, Path]]] = {
    "mnist_cifar": make_mnist_cifar,
    "multiplex": make_multiplex,
    "hyperspectral": make_hyperspectral,
    "histology": make_histology,
    "xray": make_xray,
}
_MODULES = {
    "mnist_cifar": mnist_cifar,
    "multiplex": multiplex,
    "hyperspectral": hyperspectral,
    "histology": histology,
    "xray": xray,
}
_DATASETS = {family: module.DATASETS for family, module in _MODULES.items()}


def _family(family: str) -> Callable[..., dict[str, Path]]:
    if family not in DEMO_FAMILIES:
        raise ValueError(f"unknown demo family {family!r}; known: {sorted(DEMO_FAMILIES)}")
    return DEMO_FAMILIES[family]


def demo_datasets(family: str) -> tuple[str, ...]:
    """The datasets a demo family writes (declared, not generated)."""
    _family(family)
    return _DATASETS[family]


def layout(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``Kind.layout`` of the ``demo`` kind: the channels, masks and sizes the entry's family writes with its
    ``params`` (:class:`~splicer.registry.Layout` per dataset), declared by each family module, not generated."""
    family = spec.get("family", "")
    _family(family)
    return _MODULES[family].layout(dict(spec.get("params") or {}))


def make_demo(family: str, out_dir: str | Path, seed: int = 0, **params: Any) -> dict[str, Path]:
    """Build one demo family; unknown families or parameters raise ``ValueError`` naming them."""
    fn = _family(family)
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("out_dir", "seed")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for demo family {family!r}; allowed: {allowed}")
    return fn(out_dir, seed, **params)
