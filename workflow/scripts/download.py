"""Snakemake adapter: fetch (or verify a pre-placed) raw archive (see splicer.data.download)."""

from pathlib import Path

from splicer.data.download import fetch
from splicer.data.sources import find_archive
from splicer.logs import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    archive = find_archive(snakemake.params.kind, snakemake.params.file, **snakemake.params.source)  # noqa: F821
    fetch(archive, Path(snakemake.output[0]).parent)  # noqa: F821
