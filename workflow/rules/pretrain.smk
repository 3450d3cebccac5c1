# Self-supervised pretraining: one job per experiment x method x pairing x loss x seed.
import os

RUN = f"{RES}/runs/{{experiment}}/{{method}}/{{pairing}}/{{loss}}/seed{{seed}}"
RUN_LOG = f"{RES}/logs/runs/{{experiment}}/{{method}}/{{pairing}}/{{loss}}/seed{{seed}}"


# The run config goes inline (params: a changed config reruns the run); pretrain writes it to run_config.json.
# With `evaluate_with_pretraining` (small CPU configs such as the demo) the same process then evaluates the
# encoder and writes evaluation.json, and there is no separate evaluate job (one process start per run).
rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        **pretrain_outputs(),
    log:
        f"{RUN_LOG}/pretrain.log",
    benchmark:
        f"{RES}/benchmarks/pretrain/{{experiment}}/{{method}}/{{pairing}}/{{loss}}/seed{{seed}}.tsv"
    conda:
        "../../envs/splicer.yaml"
    threads: config["threads"]
    # Sized by splicer/cluster.py; a retry (attempt 2, 3, ...) resumes from checkpoint.pt with a longer limit.
    # `exec`: the trainer replaces the shell, so a SIGTERM from SLURM (time limit, pre-emption) reaches it with
    # no shell in between to die first; SIGUSR1 (the profile's --signal) is covered by common.smk.
    # train.devices x train.nodes > 1: one task per GPU (tasks, tasks_per_gpu, nodes, mpi; unset otherwise) and
    # `splicer pretrain` starts the ranks itself (srun in the job, torchrun locally), cpus_per_task CPUs each.
    resources:
        gpu=lambda w: C.launch(config, run_of(w))["gpu"],
        tasks=lambda w: C.launch(config, run_of(w))["tasks"],
        tasks_per_gpu=lambda w: C.launch(config, run_of(w))["tasks_per_gpu"],
        nodes=lambda w: C.launch(config, run_of(w))["nodes"],
        mpi=lambda w: C.launch(config, run_of(w))["mpi"],
        cpus_per_task=C.cpus_per_task(config),
        mem_mb=lambda w: C.mem_mb(
            config, "pretrain", w.experiment, C.processes(config, run_of(w))[0]
        ),
        runtime=lambda w, attempt: C.runtime(
            config, "pretrain", w.experiment, attempt, C.world(config, run_of(w))
        ),
    params:
        data=lambda w: P.dataset_path(
            config, w.experiment, config["experiments"][w.experiment]["pretrain"]
        ),
        split=lambda w: P.split_flag(config, w.experiment),
        out=lambda w, output: os.path.dirname(output.encoder),
        cfg=lambda w: run_config_json(w),
        evaluate=lambda w: P.evaluate_after_pretraining(config, run_of(w)),
    # every value is quoted (:q); params.split and params.evaluate are quoted by splicer.pipeline.paths
    shell:
        "export OMP_NUM_THREADS={threads}; exec python -m splicer.cli pretrain --config-json {params.cfg:q} "
        "--data {params.data:q} --out {params.out:q} {params.split} {params.evaluate} "
        "--cpus-per-task {resources.cpus_per_task:q} > {log:q} 2>&1"
