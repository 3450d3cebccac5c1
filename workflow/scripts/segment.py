"""Snakemake adapter: segment every dataset of a data folder (see splicer.segment)."""

from splicer.logs import logged
from splicer.segment import segment_manifest

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    segment_manifest(
        snakemake.input.manifest,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        dict(snakemake.config["datasets"][snakemake.wildcards.data]["segment"]),  # noqa: F821
        cache_dir=snakemake.params.cache,  # noqa: F821
    )
