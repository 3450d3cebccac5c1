"""Snakemake adapter: fetch (or verify a pre-placed) raw archive and write its verification record
(see splicer.data.download.fetch_verified)."""

from splicer.data.download import fetch_verified
from splicer.data.sources import find_archive
from splicer.logs import logged
from splicer.pipeline.archives import archive_of

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    record = snakemake.output[0]  # noqa: F821
    archive = find_archive(snakemake.params.kind, snakemake.params.file, **snakemake.params.source)  # noqa: F821
    fetch_verified(archive, archive_of(record).parent, record)
