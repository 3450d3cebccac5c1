import sys

from snakemake.exceptions import WorkflowError

# The package lives beside the Snakefile; jobs (local, conda or SLURM) import it through PYTHONPATH.
sys.path.insert(0, workflow.basedir)

from splicer import cluster as C
from splicer import pipeline as P
from splicer import segment as S

P.export_environment(workflow.basedir)
# In a SLURM job: SIGUSR1 (the profile's pre-emption warning) is for the trainer only (see splicer/cluster.py).
C.ignore_preemption_signal_in_job()

try:
    P.check_config(config)
except ValueError as err:
    raise WorkflowError(str(err)) from None

RES = P.results_root(config)
EXPERIMENTS = list(config["experiments"])


wildcard_constraints:
    data="[A-Za-z0-9_]+",
    experiment="[A-Za-z0-9_]+",
    method="baseline|sigma_je|trident|splicer",
    pairing="[A-Za-z0-9_+]+",
    loss="vicreg|simclr",
    seed="[0-9]+",
    evaluation="[A-Za-z0-9_]+",
    figure="[A-Za-z0-9]+",


def runs_of(experiment):
    return P.experiment_runs(config, experiment)


def all_targets():
    figures = [f"{RES}/figures/{name}.png" for name in config.get("figures", {})]
    tables = [f"{RES}/tables/{e}/probes.csv" for e in EXPERIMENTS]
    return figures + tables + [f"{RES}/summary.md"]


FIGURE_TABLES = ("fig4b", "tableS2", "scorecard")


def _figure_outputs(name):
    out = {
        "png": report(
            f"{RES}/figures/{name}.png",
            caption=f"../report/{name}.rst",
            category="Figures" if name not in FIGURE_TABLES else "Tables",
        ),
        "pdf": f"{RES}/figures/{name}.pdf",
    }
    if name in FIGURE_TABLES:
        out["csv"] = f"{RES}/figures/{name}.csv"
    return out
