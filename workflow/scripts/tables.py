"""Snakemake adapter: tidy CSV tables of one experiment (see splicer.pipeline.tables.experiment_tables)."""

from splicer.logs import logged
from splicer.pipeline.tables import experiment_tables

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    sm = snakemake  # noqa: F821
    for key, frame in experiment_tables(sm.config, sm.wildcards.experiment).items():
        frame.to_csv(sm.output[key], index=False)
        print(f"{key}: {len(frame)} rows -> {sm.output[key]}")
