"""Gating of per-cell mean intensities: per-sample marker thresholds and first-match phenotype rules.

A threshold is a number (in the table's intensity units), ``"otsu"`` (Otsu's threshold on log1p(intensity) of the
sample's cells, 256 bins) or ``"quantile:<q>"`` (the sample's q-quantile). A rule ``{label, pos, neg, any}`` matches
a cell whose ``pos`` markers are all positive (mean >= threshold), ``neg`` markers all negative and, if ``any`` is
given, at least one of them positive; the first matching rule gives the label (``null``: unlabelled), as scimap's
phenotype workflow and the Orion-CRC decision tree (:mod:`splicer.data.real.orion`) do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["apply_rules", "check_rules", "otsu", "parse_gate", "thresholds"]


def parse_gate(marker: str, spec: Any) -> tuple[str, float]:
    """``("value", t)``, ``("otsu", nan)`` or ``("quantile", q)`` from a gate spec; ValueError naming the marker."""
    if isinstance(spec, bool):
        raise ValueError(f"gate of {marker!r}: {spec!r} is not a number, 'otsu' or 'quantile:<q>'")
    if isinstance(spec, int | float):
        return "value", float(spec)
    if spec == "otsu":
        return "otsu", math.nan
    match = re.fullmatch(r"quantile:([0-9]*\.?[0-9]+)", str(spec))
    if match and 0.0 < float(match.group(1)) < 1.0:
        return "quantile", float(match.group(1))
    raise ValueError(f"gate of {marker!r} must be a number, 'otsu' or 'quantile:<q>' with 0<q<1, got {spec!r}")


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of log1p(values) (256 bins), returned in intensity units; inf if all values are equal."""
    v = np.log1p(np.clip(np.asarray(values, np.float64), 0.0, None))
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return math.inf
    hist, edges = np.histogram(v, bins=256, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (s0[-1] - s0) / w1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1.0
    return float(np.expm1(edges[int(np.argmax(between)) + 1]))


def thresholds(values: Mapping[str, np.ndarray], gates: Mapping[str, Any], default_gate: Any) -> dict[str, float]:
    """One threshold per marker of ``values`` (its cells' mean intensities) by its gate (else ``default_gate``)."""
    out = {}
    for marker, x in values.items():
        how, value = parse_gate(marker, gates.get(marker, default_gate))
        x = np.asarray(x, np.float64)
        if how == "otsu":
            value = otsu(x) if x.size else math.inf
        elif how == "quantile":
            value = float(np.quantile(x, value)) if x.size else math.inf
        out[marker] = value
    return out


_RULE_KEYS = {"label", "pos", "neg", "any"}


def check_rules(rules: Any, markers: Sequence[str], where: str) -> list[dict[str, Any]]:
    """Validated gating rules: each ``{label: str | null, pos: [...], neg: [...], any: [...]}`` over ``markers``."""
    if not isinstance(rules, list) or not rules:
        raise ValueError(f"{where}.rules must be a non-empty list of {{label, pos, neg, any}} rules, got {rules!r}")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or "label" not in rule or (extra := set(rule) - _RULE_KEYS):
            raise ValueError(
                f"{where}.rules[{i}] must be a mapping with 'label' and any of pos/neg/any, got {rule!r}"
                + (f" (unknown keys {sorted(extra)})" if isinstance(rule, Mapping) and set(rule) - _RULE_KEYS else "")
            )
        if rule["label"] is not None and not (isinstance(rule["label"], str) and rule["label"]):
            raise ValueError(f"{where}.rules[{i}].label must be a class name or null, got {rule['label']!r}")
        parsed = {"label": rule["label"]}
        for key in ("pos", "neg", "any"):
            names = rule.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{where}.rules[{i}].{key} must be a list of marker names, got {names!r}")
            if unknown := [n for n in names if n not in markers]:
                raise ValueError(f"{where}.rules[{i}].{key} names marker(s) {unknown} not in the panel {list(markers)}")
            parsed[key] = list(names)
        if not (parsed["pos"] or parsed["neg"] or parsed["any"]):
            raise ValueError(f"{where}.rules[{i}] has no pos, neg or any marker: it would match every cell")
        out.append(parsed)
    return out


def apply_rules(
    positive: Mapping[str, np.ndarray], rules: Sequence[Mapping[str, Any]], classes: Sequence[str], n: int
) -> np.ndarray:
    """Class index per cell (-1: no rule or a ``null`` label): the first rule whose ``pos`` markers are all
    positive, ``neg`` all negative and (if given) at least one ``any`` positive decides."""
    conditions, choices = [], []
    for rule in rules:
        ok = np.ones(n, bool)
        for m in rule.get("pos", ()):
            ok &= positive[m]
        for m in rule.get("neg", ()):
            ok &= ~positive[m]
        if rule.get("any"):
            ok &= np.logical_or.reduce([positive[m] for m in rule["any"]])
        conditions.append(ok)
        label = rule["label"]
        choices.append(classes.index(label) if label is not None and label in classes else -1)
    return np.select(conditions, choices, default=-1).astype(np.int64) if rules else np.full(n, -1, np.int64)
