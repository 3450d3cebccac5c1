# Frozen-encoder evaluation (probes, singular values, marker correlations), supervised ceilings, tidy tables,
# and per-cell embedding exports to AnnData (one .h5ad per sample: `snakemake embeddings`).
import os

if not EVALUATE_WITH_PRETRAINING:  # else pretrain evaluates (see pretrain.smk)

    rule evaluate:
        input:
            encoder=f"{RUN}/encoder.pt",
            data=lambda w: P.eval_manifests(config, w.experiment),
        output:
            f"{RUN}/evaluation.json",
        log:
            f"{RUN_LOG}/evaluate.log",
        benchmark:
            f"{RES}/benchmarks/evaluate/{{experiment}}/{{method}}/{{pairing}}/{{loss}}/seed{{seed}}.tsv"
        conda:
            "../../envs/splicer.yaml"
        threads: config["threads"]
        resources:
            gpu=C.gpus(config),
            cpus_per_task=C.cpus_per_task(config),
            mem_mb=lambda w: C.mem_mb(config, "evaluate", w.experiment),
            runtime=lambda w, attempt: C.runtime(
                config, "evaluate", w.experiment, attempt
            ),
        params:
            args=lambda w: P.evaluate_args(config, w.experiment),
            head=config["probe"]["head"],
            device=config["device"],
        # every value is quoted (:q); params.args is quoted by splicer.pipeline.paths
        shell:
            "OMP_NUM_THREADS={threads} python -m splicer.cli evaluate --encoder {input.encoder:q} {params.args} "
            "--out {output:q} --head {params.head:q} --seed {wildcards.seed:q} --device {params.device:q} > {log:q} 2>&1"


rule supervised:
    input:
        data=lambda w: P.manifest(config, config["experiments"][w.experiment]["data"]),
    output:
        P.supervised_path(config, "{experiment}", "{evaluation}", "{seed}"),
    log:
        f"{RES}/logs/supervised/{{experiment}}/{{evaluation}}/seed{{seed}}.log",
    benchmark:
        f"{RES}/benchmarks/supervised/{{experiment}}/{{evaluation}}/seed{{seed}}.tsv"
    conda:
        "../../envs/splicer.yaml"
    threads: config["threads"]
    # The same trainer as pretraining: a pre-empted or timed-out job resumes from its checkpoint.
    resources:
        gpu=C.gpus(config),
        cpus_per_task=C.cpus_per_task(config),
        mem_mb=lambda w: C.mem_mb(config, "supervised", w.experiment),
        runtime=lambda w, attempt: C.runtime(
            config, "supervised", w.experiment, attempt
        ),
    params:
        data=lambda w: P.dataset_path(config, w.experiment, w.evaluation),
        out=lambda w, output: os.path.dirname(output[0]),
        cfg=first_run_config_json,
    shell:
        "export OMP_NUM_THREADS={threads}; exec python -m splicer.cli supervised --config-json {params.cfg:q} "
        "--data {params.data:q} --out {params.out:q} --seed {wildcards.seed:q} > {log:q} 2>&1"


rule tables:
    input:
        unpack(lambda w: P.table_inputs(config, w.experiment)),
    output:
        probes=f"{RES}/tables/{{experiment}}/probes.csv",
        spectra=f"{RES}/tables/{{experiment}}/spectra.csv",
        correlations=f"{RES}/tables/{{experiment}}/correlations.csv",
        ceilings=f"{RES}/tables/{{experiment}}/ceilings.csv",
    log:
        f"{RES}/logs/tables/{{experiment}}.log",
    localrule: True
    conda:
        "../../envs/plots.yaml"
    script:
        "../scripts/tables.py"


rule embed_h5ad:
    input:
        encoder=lambda w: f"{P.run_dir(config, G.embedding_run(config, w.export))}/encoder.pt",
        data=lambda w: P.manifest(config, P.embedding_data(config, w.export)[0]),
    output:
        P.embedding_manifest(config, "{export}"),
    log:
        f"{RES}/logs/embeddings/{{export}}.log",
    benchmark:
        f"{RES}/benchmarks/embeddings/{{export}}.tsv"
    wildcard_constraints:
        export=NAME,
    conda:
        "../../envs/splicer.yaml"
    threads: config["threads"]
    resources:
        gpu=C.gpus(config),
        cpus_per_task=C.cpus_per_task(config),
        mem_mb=lambda w: C.mem_mb(
            config, "evaluate", config["embeddings"][w.export]["experiment"]
        ),
        runtime=lambda w, attempt: C.runtime(
            config, "evaluate", config["embeddings"][w.export]["experiment"], attempt
        ),
    params:
        data=lambda w: P.embedding_data(config, w.export)[1],
        out=lambda w, output: os.path.dirname(output[0]),
        batch=lambda w: config["embeddings"][w.export]["batch_size"],
        device=config["device"],
    shell:
        "OMP_NUM_THREADS={threads} python -m splicer.cli embed --encoder {input.encoder:q} --data {params.data:q} "
        "--out {params.out:q} --format h5ad --batch-size {params.batch:q} --device {params.device:q} > {log:q} 2>&1"


rule embeddings:
    input:
        [P.embedding_manifest(config, name) for name in config.get("embeddings", {})],
    localrule: True
