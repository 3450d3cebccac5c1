"""Snakemake adapter: build one ``datasets`` entry (see splicer.data.build)."""

from pathlib import Path

from splicer.data.build import build_data
from splicer.logs import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    build_data(snakemake.params.spec, Path(snakemake.output[0]).parent, list(snakemake.input))  # noqa: F821
