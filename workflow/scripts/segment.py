"""Snakemake adapter: segment every dataset of a data folder (see splicer.segment)."""

from splicer.logs import logged
from splicer.segment import segment_manifest

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    segment_manifest(snakemake.input[0], snakemake.output[0], snakemake.params.segmenter)  # noqa: F821
