"""Paper figures, tables and the scorecard, drawn only from tidy CSV tables and dataset directories.

One module per paper figure (:mod:`~splicer.plots.fig2`, :mod:`~splicer.plots.fig3`, :mod:`~splicer.plots.fig4`)
plus :mod:`~splicer.plots.scorecard`; shared helpers in :mod:`~splicer.plots.common`. Every figure has the same
signature::

    fig(inputs: Mapping[str, path | list[path]], outputs: Mapping[str, path], title_suffix: str = "", **opts)

``inputs`` names its files by role (the figure's entry in :data:`splicer.registry.FIGURES` lists required and
optional roles); ``outputs`` needs ``png`` (written at 150 dpi); ``pdf`` and, for tables, ``csv`` default to the
``png`` path with that suffix. :func:`make_figure` checks the name, the input roles and the options, then draws.
"""

from __future__ import annotations

import inspect
from typing import Any

from splicer.plots.common import Inputs, Outputs
from splicer.registry import FIGURES, resolve

__all__ = ["make_figure"]


def make_figure(name: str, inputs: Inputs, outputs: Outputs, **opts: Any) -> None:
    """Draw figure ``name`` after checking the name, the input roles and the option names (ValueError)."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known figures: {', '.join(FIGURES)}")
    entry = FIGURES[name]
    required, optional = entry.inputs, entry.optional
    missing = [k for k in required if inputs.get(k) is None]
    if missing:
        raise ValueError(
            f"{name}: missing input(s) {missing} (required {list(required)}, optional "
            f"{list(optional)}; given {sorted(inputs)})"
        )
    unknown_inputs = sorted(set(inputs) - set(required) - set(optional))
    if unknown_inputs:
        raise ValueError(
            f"{name}: unknown input(s) {unknown_inputs} (required {list(required)}, optional {list(optional)})"
        )
    if "png" not in outputs:
        raise ValueError(f"{name}: outputs need a 'png' path (given: {sorted(outputs)})")
    fn = resolve(entry.draw)
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in ("inputs", "outputs")]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {allowed}")
    fn(inputs, outputs, **opts)
