"""Snakemake adapter: draw one paper figure or table from the tidy tables (see splicer.plots)."""

from splicer.plots import make_figure

from splicer.logs import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    sm = snakemake  # noqa: F821
    make_figure(sm.wildcards.figure, dict(sm.input.items()), dict(sm.output.items()), **sm.params.options)
