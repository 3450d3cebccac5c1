"""Builders of the paper's real datasets, one module per upstream source (imported only when used).

Each module exposes ``build_<kind>(out, files, params, caps, seed) -> {dataset name: path}`` (see
:mod:`splicer.data.real.common`), registered with its params and the datasets it writes in
:data:`splicer.registry.KINDS`. Builders write the same dataset names, channel, class and split names as the
matching demo family of :mod:`splicer.data.demo`, so one experiments config runs on demo or real data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from splicer.registry import KINDS, Kind, resolve

__all__ = ["builder", "dataset_names", "param_defaults"]


def _entry(kind: str) -> Kind:
    if kind not in KINDS or KINDS[kind].builder is None:
        real = sorted(k for k, e in KINDS.items() if e.builder)
        raise ValueError(f"no builder for dataset kind {kind!r}; real kinds: {real}")
    return KINDS[kind]


def builder(kind: str) -> Callable:
    """The builder function of a real dataset ``kind``."""
    return resolve(_entry(kind).builder)


def param_defaults(kind: str) -> dict:
    """The builder ``params`` of a real dataset ``kind`` with their defaults (for checking a config early)."""
    entry = _entry(kind)
    return dict(resolve(entry.params)) if entry.params else {}


def dataset_names(kind: str, params: Mapping | None = None) -> tuple[str, ...]:
    """The dataset directories a build of ``kind`` (with ``params``) writes."""
    merged = {**param_defaults(kind), **dict(params or {})}
    return tuple(name.format(**merged) for name in _entry(kind).datasets)
