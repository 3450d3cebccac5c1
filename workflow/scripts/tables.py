"""Snakemake adapter: tidy CSV tables of one experiment (see splicer.pipeline.collect_tables)."""

from splicer import pipeline as P
from splicer.logs import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    sm = snakemake  # noqa: F821
    config, experiment = sm.config, sm.wildcards.experiment
    runs = P.experiment_runs(config, experiment)
    ceiling_runs = [r for other in P.ceiling_sources(config, experiment) for r in P.experiment_runs(config, other)]
    exp = config["experiments"][experiment]
    seeds = exp.get("seeds") or config["seeds"]
    supervised = [(name, seed) for name in exp.get("supervised", []) for seed in seeds]
    tables = P.collect_tables(
        config,
        experiment,
        zip(runs, sm.input.evaluations, strict=True),
        [(name, seed, path) for (name, seed), path in zip(supervised, sm.input.supervised, strict=True)],
        zip(ceiling_runs, sm.input.ssl_ceiling, strict=True),
    )
    for key, frame in tables.items():
        frame.to_csv(sm.output[key], index=False)
        print(f"{key}: {len(frame)} rows -> {sm.output[key]}")
