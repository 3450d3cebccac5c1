"""Snakemake adapter: draw one paper figure or table from the tidy tables (see splicer.plots)."""

import matplotlib

matplotlib.use("Agg")

from splicer.logs import logged
from splicer.plots import make_figure

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    sm = snakemake  # noqa: F821
    make_figure(sm.rule, sm.params.inputs, dict(sm.output.items()), **sm.params.options)
