import json
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

# The package lives beside the Snakefile; jobs (local, conda or SLURM) import it through PYTHONPATH.
sys.path.insert(0, workflow.basedir)

from splicer import cluster as C
from splicer import segment as S
from splicer import warm as W
from splicer.pipeline import archives as A
from splicer.pipeline import figures as F
from splicer.pipeline import grid as G
from splicer.pipeline import paths as P
from splicer.pipeline.checks import check_config
from splicer.registry import FIGURES, LOSSES, METHODS

C.export_environment(workflow.basedir)
# In a SLURM job: SIGUSR1 (the profile's pre-emption warning) is for the trainer only (see splicer/cluster.py).
C.ignore_preemption_signal_in_job()

# Notes: legal but unusual choices, worth a look before the GPU bill.
try:
    for _note in check_config(config):
        logger.warning(f"note: {_note}")
except ValueError as err:
    raise WorkflowError(str(err)) from None

RES = P.results_root(config)
EXPERIMENTS = list(config["experiments"])
NAME = "[A-Za-z0-9_]+"


# The warm-start server of a local run (splicer/warm.py); stopped when the run ends.
WARM = {}


onstart:
    # Before any job (not in a dry run): the pretrained segmenters of the segment jobs this run will execute must
    # be able to run here (TIAToolbox or weights present, or a fallback set), else stop and say what to do.
    S.check_segment_jobs(config, workflow)
    # `warm_start`: one process imports torch once and forks each splicer job (local runs, never in a SLURM job;
    # jobs fall back to their own process whenever it is not listening).
    if W.wanted(config.get("warm_start", False), workflow.local_exec):
        WARM["server"] = W.start(
            f"{RES}/logs/warm_server.log", threads=config["threads"]
        )


def stop_warm_server():
    if WARM.get("server"):
        W.stop(WARM.pop("server"))


onsuccess:
    stop_warm_server()


onerror:
    stop_warm_server()


wildcard_constraints:
    data=NAME,
    experiment=NAME,
    method="|".join(METHODS),
    pairing="[A-Za-z0-9_+]+",
    loss="|".join(LOSSES),
    seed="[0-9]+",
    evaluation=NAME,


def all_targets():
    figures = [f"{RES}/figures/{name}.png" for name in config.get("figures", {})]
    tables = [f"{RES}/tables/{e}/probes.csv" for e in EXPERIMENTS]
    embeddings = [P.embedding_manifest(config, e) for e in config.get("embeddings", {})]
    return figures + tables + embeddings + [f"{RES}/summary.md"]


def figure_outputs(name):
    """PNG (in the report, captioned by workflow/report/<name>.rst) and PDF, plus the CSV of a table target."""
    table = FIGURES[name].table
    out = {
        "png": report(
            f"{RES}/figures/{name}.png",
            caption=f"../report/{name}.rst",
            category="Tables" if table else "Figures",
        ),
        "pdf": f"{RES}/figures/{name}.pdf",
    }
    if table:
        out["csv"] = f"{RES}/figures/{name}.csv"
    return out


def run_of(wildcards):
    """The grid run a pretrain job's wildcards name."""
    w = wildcards
    return G.Run(w.experiment, w.method, w.pairing, w.loss, int(w.seed))


def run_config_json(wildcards):
    """The run config of a pretrain job, inline (a changed config is a changed param: the run reruns)."""
    return json.dumps(G.run_config(config, run_of(wildcards)), sort_keys=True)


def first_run_config_json(wildcards):
    """The supervised ceiling trains the encoder (and augmentation, optimiser, schedule) of the experiment's first
    run, with labels."""
    return json.dumps(
        G.run_config(config, G.experiment_runs(config, wildcards.experiment)[0]),
        sort_keys=True,
    )


EVALUATE_WITH_PRETRAINING = config.get("evaluate_with_pretraining", False)


def pretrain_inputs(wildcards):
    data = {
        "data": P.manifest(config, config["experiments"][wildcards.experiment]["data"])
    }
    if EVALUATE_WITH_PRETRAINING:
        data["evaluation_data"] = P.eval_manifests(config, wildcards.experiment)
    return data


def pretrain_outputs():
    out = {"encoder": f"{RUN}/encoder.pt", "metrics": f"{RUN}/metrics.json"}
    if EVALUATE_WITH_PRETRAINING:
        out["evaluation"] = f"{RUN}/evaluation.json"
    return out


def scorecard_table():
    """The scorecard's claims table, when the config draws the scorecard (the summary shows its verdicts)."""
    return (
        [f"{RES}/figures/scorecard.csv"]
        if "scorecard" in config.get("figures", {})
        else []
    )
