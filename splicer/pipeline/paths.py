"""Where results go (``results/<name>/...``) and what each rule reads and passes on the command line."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from splicer.pipeline.grid import Run, experiment_runs

__all__ = [
    "ceiling_sources",
    "data_dir",
    "dataset_path",
    "embedding_data",
    "embedding_manifest",
    "eval_manifests",
    "evaluate_after_pretraining",
    "evaluate_args",
    "evaluation_datasets",
    "evaluation_path",
    "manifest",
    "results_root",
    "run_dir",
    "split_flag",
    "split_ref",
    "supervised_path",
    "table_inputs",
    "table_paths",
]

TABLES = ("probes", "spectra", "correlations", "ceilings")
"""The tidy tables each experiment writes (``tables/<experiment>/<table>.csv``)."""


def results_root(config: Mapping) -> str:
    """``results/<name>``."""
    return f"results/{config['name']}"


def data_dir(config: Mapping, data: str) -> str:
    """Directory holding the datasets of one ``datasets`` entry, segmented when it has a ``segment`` section."""
    kind = "segmented" if config["datasets"][data].get("segment") else "data"
    return f"{results_root(config)}/{kind}/{data}"


def manifest(config: Mapping, data: str) -> str:
    """The manifest marking one ``datasets`` entry as built (and segmented, if it asks to be)."""
    return f"{data_dir(config, data)}/manifest.json"


def split_ref(config: Mapping, experiment: str, dataset: str) -> tuple[str, str]:
    """``rMNIST`` -> (the experiment's data, rMNIST); ``eurosat/bands13`` -> (eurosat, bands13)."""
    if "/" in dataset:
        data, name = dataset.split("/", 1)
        return data, name
    return config["experiments"][experiment]["data"], dataset


def dataset_path(config: Mapping, experiment: str, dataset: str) -> str:
    """Path of one dataset of an experiment: ``rMNIST`` (its own data) or ``<datasets entry>/<dataset>``."""
    data, name = split_ref(config, experiment, dataset)
    return f"{data_dir(config, data)}/{name}"


def evaluation_datasets(config: Mapping) -> dict[str, str]:
    """Every dataset the experiments evaluate on: ``"<experiment>/<evaluation>"`` -> its folder (each folder once,
    under its first evaluation)."""
    out: dict[str, str] = {}
    for experiment, exp in config["experiments"].items():
        for name, spec in exp["evaluate"].items():
            path = dataset_path(config, experiment, spec["data"])
            if path not in out.values():
                out[f"{experiment}/{name}"] = path
    return out


def eval_manifests(config: Mapping, experiment: str) -> list[str]:
    """Manifests of every data folder an experiment's evaluations read."""
    exp = config["experiments"][experiment]
    datas = {split_ref(config, experiment, spec["data"])[0] for spec in exp["evaluate"].values()}
    return [manifest(config, d) for d in sorted(datas)]


def embedding_manifest(config: Mapping, name: str) -> str:
    """The manifest of embedding export ``name`` (``embeddings/<name>/``: one ``<sample>.h5ad`` per sample)."""
    return f"{results_root(config)}/embeddings/{name}/manifest.json"


def embedding_data(config: Mapping, name: str) -> tuple[str, str]:
    """(datasets entry, dataset folder) embedding export ``name`` embeds."""
    spec = config["embeddings"][name]
    data, _ = split_ref(config, spec["experiment"], spec["data"])
    return data, dataset_path(config, spec["experiment"], spec["data"])


def run_dir(config: Mapping, run: Run) -> str:
    """Output folder of one run."""
    return f"{results_root(config)}/runs/{run.path}"


def evaluation_path(config: Mapping, run: Run) -> str:
    """A run's evaluation results."""
    return f"{run_dir(config, run)}/evaluation.json"


def supervised_path(config: Mapping, experiment: str, evaluation: str, seed: int) -> str:
    """A supervised ceiling's result (in its run directory)."""
    return f"{results_root(config)}/supervised/{experiment}/{evaluation}/seed{seed}/result.json"


def split_flag(config: Mapping, experiment: str) -> str:
    """``--split NAME`` when the experiment pretrains on one split of its pretraining dataset (shell-quoted)."""
    split = config["experiments"][experiment].get("pretrain_split")
    return shlex.join(["--split", split]) if split else ""


def evaluate_args(config: Mapping, experiment: str) -> str:
    """``--eval name=dir ... --spectrum name --correlate name`` for one experiment's evaluate job, every word
    shell-quoted (the rule pastes it into its command line)."""
    exp = config["experiments"][experiment]
    args: list[str] = []
    for name, spec in exp["evaluate"].items():
        args += ["--eval", f"{name}={dataset_path(config, experiment, spec['data'])}"]
    for name in exp.get("spectrum", []):
        args += ["--spectrum", name]
    for name in exp.get("correlate", []):
        args += ["--correlate", name]
    return shlex.join(args)


def evaluate_after_pretraining(config: Mapping, run: Run) -> str:
    """With ``evaluate_with_pretraining``, the pretrain job's arguments to evaluate its encoder in the same process
    (``--evaluate-out`` + :func:`evaluate_args` + head and device, shell-quoted); else nothing."""
    if not config.get("evaluate_with_pretraining", False):
        return ""
    head, device = config["probe"]["head"], config.get("device", "auto")
    out = ["--evaluate-out", evaluation_path(config, run), "--head", head, "--device", device]
    return f"{shlex.join(out)} {evaluate_args(config, run.experiment)}"


def ceiling_sources(config: Mapping, experiment: str) -> list[str]:
    """Experiments declared (``ceiling_of``) as SSL ceilings of ``experiment``."""
    return [name for name, exp in config["experiments"].items() if exp.get("ceiling_of") == experiment]


def table_inputs(config: Mapping, experiment: str) -> dict[str, list[str]]:
    """Inputs of the tables rule of one experiment, by role."""
    exp = config["experiments"][experiment]
    seeds = exp.get("seeds") or config["seeds"]
    return {
        "evaluations": [evaluation_path(config, run) for run in experiment_runs(config, experiment)],
        "ssl_ceiling": [
            evaluation_path(config, run)
            for other in ceiling_sources(config, experiment)
            for run in experiment_runs(config, other)
        ],
        "supervised": [
            supervised_path(config, experiment, name, seed) for name in exp.get("supervised", []) for seed in seeds
        ],
    }


def table_paths(config: Mapping, experiment: str) -> dict[str, str]:
    """The tidy tables of one experiment."""
    root = f"{results_root(config)}/tables/{experiment}"
    return {k: f"{root}/{k}.csv" for k in TABLES}
