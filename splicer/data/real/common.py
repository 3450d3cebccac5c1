"""What every real-dataset builder shares: errors naming the file at fault, parameter checks, sample caps,
deterministic splits and split-ordered rows.

A builder is a function ``build(out, files, params, caps, seed) -> {dataset name: path}`` in a module of
:mod:`splicer.data.real`; ``files`` maps each archive name of :mod:`splicer.data.sources` to its local path.
``SPLITS`` (train, val, test: the probe trains on train, selects on val, reports test) comes from
:mod:`splicer.data.vocab`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.vocab import SPLITS

__all__ = ["SPLITS", "BuildError", "Caps", "check_params", "require", "split_order", "stable_rng", "three_way_split"]


class BuildError(ValueError):
    """A raw file cannot be turned into a dataset; the message starts with the file (or archive) at fault."""

    def __init__(self, file: str | Path, problem: str) -> None:
        self.file = str(file)
        super().__init__(f"{file}: {problem}")


def require(files: Mapping[str, Path], name: str, kind: str, *, folder_ok: bool = False) -> Path:
    """The local path of archive ``name`` (with ``folder_ok``, possibly an extracted upstream folder read in place,
    ``source.path``); a clear error if the build was not handed it or it is gone."""
    if name not in files:
        raise BuildError(
            f"resources/{kind}/{name}",
            f"archive {name!r} of kind {kind!r} was not provided to the build (got {sorted(files)})",
        )
    path = Path(files[name])
    if not (path.is_file() or (folder_ok and path.is_dir())):
        raise BuildError(path, f"archive {name!r} of kind {kind!r} is missing")
    return path


def check_params(kind: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``params``; an unknown key or a value of the wrong type is a ValueError naming it."""
    if extra := sorted(set(params) - set(defaults)):
        raise ValueError(f"datasets entry of kind {kind!r}: unknown params key(s) {extra}; known: {sorted(defaults)}")
    out = dict(defaults)
    for key, value in params.items():
        default = defaults[key]
        if default is not None and not _same_type(value, default):
            raise ValueError(f"datasets entry of kind {kind!r}: params.{key} must be like {default!r}, got {value!r}")
        out[key] = value
    return out


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and (isinstance(default, float) or isinstance(value, int))
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(default))


def stable_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the string ``keys`` (not on Python's hash seed)."""
    return np.random.default_rng([int(seed), *(zlib.crc32(k.encode()) for k in keys)])


@dataclass(frozen=True)
class Caps:
    """Upper bounds on the number of samples kept per dataset split (``datasets.<entry>.caps`` in the config).

    Keys, most specific first: ``"<dataset>/<split>"`` (e.g. ``"cell_types/train"``), ``"<dataset>"`` (each of
    its splits), ``"*"`` (every split of every dataset). Values are positive integers. A capped split keeps a
    random subset (fixed by the build seed), in its original order.
    """

    limits: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.limits.items():
            if not isinstance(key, str) or not key or key.count("/") > 1:
                raise ValueError(f"caps key {key!r} must be '*', '<dataset>' or '<dataset>/<split>'")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"caps[{key!r}] must be a positive integer, got {value!r}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Caps:
        """The caps of one ``datasets`` config entry (none when the entry has no ``caps``)."""
        return cls(dict(spec.get("caps") or {}))

    def limit(self, dataset: str, split: str) -> int | None:
        """The cap of one split, or None."""
        for key in (f"{dataset}/{split}", dataset, "*"):
            if key in self.limits:
                return self.limits[key]
        return None

    def apply(self, rows: np.ndarray, dataset: str, split: str, seed: int = 0) -> np.ndarray:
        """``rows`` (indices of one split), reduced to at most the cap by a seeded random subset, order kept."""
        rows = np.asarray(rows)
        cap = self.limit(dataset, split)
        if cap is None or rows.size <= cap:
            return rows
        keep = stable_rng(seed, "caps", dataset, split).choice(rows.size, size=cap, replace=False)
        return rows[np.sort(keep)]


def split_order(split: np.ndarray) -> np.ndarray:
    """Row order (stable) that makes each split one contiguous block, so selecting a split stays memory-mapped."""
    return np.argsort(np.asarray(split), kind="stable")


def three_way_split(
    n: int, fractions: Sequence[float], seed: int, key: str, labels: np.ndarray | None = None
) -> np.ndarray:
    """Split codes (0/1/2 = train/val/test) for ``n`` rows in the given ``fractions``; stratified by ``labels``.

    Deterministic in ``(seed, key)``. With labels, each class is split in the same proportions.
    """
    fractions = np.asarray(fractions, float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    rng = stable_rng(seed, "split", key)
    codes = np.zeros(n, np.uint8)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for rows in groups:
        rows = rows[rng.permutation(rows.size)]
        bounds = np.round(np.cumsum(fractions)[:2] * rows.size).astype(int)
        codes[rows[bounds[0] : bounds[1]]] = 1
        codes[rows[bounds[1] :]] = 2
    return codes
