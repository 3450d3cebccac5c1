# Segmentation masks -> components (nuclei / background, lungs / background). The segmenter and its weights,
# fallback and options come from datasets.<data>.segment (splicer/segment.py); masks are cached chunk by chunk in
# {RES}/cache/segment, so a resubmitted or rerun job reuses what is done. The pretrained segmenters (hovernet,
# hybridgnet) ask for a GPU; their weights file, when it exists, is an input (a changed file reruns the job).


rule segment:
    input:
        manifest=f"{RES}/data/{{data}}/manifest.json",
        weights=lambda w: S.weights_inputs(config["datasets"][w.data]["segment"]),
    output:
        f"{RES}/segmented/{{data}}/manifest.json",
    log:
        f"{RES}/logs/segment/{{data}}.log",
    benchmark:
        f"{RES}/benchmarks/segment/{{data}}.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        gpu=lambda w: C.segment_gpu(config, w.data),
        mem_mb=16000,
        runtime=lambda w: C.segment_runtime(config, w.data),
    params:
        # what decides the masks, as provenance (a changed device or batch size reruns nothing downstream); the
        # job reads the whole section, runtime options included, from the config
        masks=lambda w: S.mask_relevant(config["datasets"][w.data]["segment"]),
        cache=f"{RES}/cache/segment",
    script:
        "../scripts/segment.py"


from snakemake.logging import logger

from splicer.pipeline.checks import segment_job_problems

# Said at every invocation, dry runs included (Snakemake hides Python warnings): pretrained segmenters that
# cannot run here; the onstart hook (common.smk) stops a real run that would execute one of their segment jobs.
for _problem in segment_job_problems(config).values():
    logger.warning(f"WARNING: {_problem}")
