import sys

from snakemake.exceptions import WorkflowError

# The package lives beside the Snakefile; jobs (local, conda or SLURM) import it through PYTHONPATH.
sys.path.insert(0, workflow.basedir)

from splicer import cluster as C
from splicer import segment as S
from splicer.pipeline import archives as A
from splicer.pipeline import figures as F
from splicer.pipeline import grid as G
from splicer.pipeline import paths as P
from splicer.pipeline.checks import check_config
from splicer.registry import FIGURES, LOSSES, METHODS

C.export_environment(workflow.basedir)
# In a SLURM job: SIGUSR1 (the profile's pre-emption warning) is for the trainer only (see splicer/cluster.py).
C.ignore_preemption_signal_in_job()

try:
    check_config(config)
except ValueError as err:
    raise WorkflowError(str(err)) from None

RES = P.results_root(config)
EXPERIMENTS = list(config["experiments"])
NAME = "[A-Za-z0-9_]+"


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


def first_run_config(wildcards):
    """The supervised ceiling trains the encoder (and augmentation, optimiser, schedule) of the experiment's first
    run, with labels."""
    return f"{P.run_dir(config, G.experiment_runs(config, wildcards.experiment)[0])}/run.yaml"
