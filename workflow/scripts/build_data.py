"""Snakemake adapter: build one ``datasets`` entry (see splicer.data.build) from its verified archives."""

from pathlib import Path

from splicer.data.build import build_data
from splicer.logs import logged
from splicer.pipeline.archives import archive_files

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    archives = archive_files(snakemake.input)  # noqa: F821
    build_data(snakemake.params.spec, Path(snakemake.output[0]).parent, archives)  # noqa: F821
