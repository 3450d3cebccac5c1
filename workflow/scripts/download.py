"""Snakemake adapter: fetch (or verify a pre-placed or in-place) raw archive and write its verification record
(see splicer.data.download.fetch_verified)."""

from splicer.data.download import fetch_verified
from splicer.data.sources import Archive
from splicer.logs import logged
from splicer.pipeline.archives import archive_of

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    record = snakemake.output[0]  # noqa: F821
    fields = dict(snakemake.params.archive)  # noqa: F821
    fields["subdirs"] = tuple(fields["subdirs"])
    fields["contents"] = tuple(tuple(item) for item in fields["contents"])
    archive = Archive(**fields)
    fetch_verified(archive, archive_of(record).parent, record)
