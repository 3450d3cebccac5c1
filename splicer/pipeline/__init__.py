"""The pipeline config (what the Snakefile reads) turned into runs, paths, checks and tidy tables.

All Snakemake logic that is more than a path template lives in this package, so it is unit-tested and the rule
files stay thin; nothing here imports torch, matplotlib or seaborn at import time. Modules:

* :mod:`~splicer.pipeline.checks` -- :func:`check_config`, every cross-reference the schema cannot express;
* :mod:`~splicer.pipeline.grid` -- the run grid (:class:`Run`, :func:`experiment_runs`, :func:`run_config`);
* :mod:`~splicer.pipeline.paths` -- where results go and what each rule reads;
* :mod:`~splicer.pipeline.archives` -- the download rule's verification records;
* :mod:`~splicer.pipeline.tables` -- tidy tables and the Markdown summary;
* :mod:`~splicer.pipeline.figures` -- what each figure target reads.

Layout under ``results/<name>/``::

    data/<data>/manifest.json, data/<data>/<dataset>/           datasets (demo generator or real builder)
    segmented/<data>/manifest.json, segmented/<data>/<dataset>/  the same datasets with segmenter masks
    runs/<experiment>/<method>/<pairing>/<loss>/seed<seed>/      run_config.json, encoder.pt, metrics.json,
                                                                 evaluation.json
    supervised/<experiment>/<task>/seed<seed>/result.json       supervised ceilings
    embeddings/<export>/<sample>.h5ad, manifest.json            per-cell embeddings (AnnData)
    tables/<experiment>/{probes,spectra,correlations,ceilings}.csv
    figures/<figure>.{png,pdf[,csv]}, summary.md
"""
