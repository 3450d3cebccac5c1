"""The pipeline config (what the Snakefile reads) turned into runs, paths, run configs and tidy tables.

All Snakemake logic that is more than a path template lives here, so it is unit-tested and the rule files
stay thin. Layout under ``results/<name>/``::

    data/<data>/manifest.json, data/<data>/<dataset>/          datasets (demo generator or real builder)
    segmented/<data>/manifest.json, segmented/<data>/<dataset>/ the same datasets with segmenter masks
    runs/<experiment>/<method>/<pairing>/<loss>/seed<seed>/     run.yaml, encoder.pt, metrics.json, eval/*.json
    supervised/<experiment>/<task>/seed<seed>.json             supervised ceilings
    tables/<experiment>/{probes,spectra,correlations,ceilings}.csv, tables/scorecard.csv
    figures/<figure>.{png,pdf}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splicer.config import deep_merge, validate_run_config
from splicer.methods import PRESETS, VIEW, build_pairing

__all__ = [
    "TIDY_COLUMNS",
    "Run",
    "check_config",
    "collect_tables",
    "data_dir",
    "dataset_path",
    "experiment_runs",
    "run_config",
    "run_dir",
]

TIDY_COLUMNS = ["experiment", "dataset", "method", "loss", "pairing", "seed", "task", "variant", "metric", "value"]


@dataclass(frozen=True)
class Run:
    """One pretraining run of the grid: method x pairing x loss x seed within an experiment."""

    experiment: str
    method: str
    pairing: str
    loss: str
    seed: int

    @property
    def path(self) -> str:
        return f"{self.experiment}/{self.method}/{self.pairing}/{self.loss}/seed{self.seed}"


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"config {where}: {message}")


def _check_dataset_entry(where: str, spec: Mapping) -> None:
    """A dataset entry's segment section, and a real entry's source options, builder params and caps, checked
    before any job runs."""
    if "segment" in spec:
        from splicer.segment import parse_spec

        try:
            parse_spec(spec["segment"])
        except ValueError as err:
            raise _fail(f"{where}.segment", str(err)) from None
    if spec["kind"] == "demo":
        return
    from splicer.data.real import param_defaults
    from splicer.data.real.common import Caps, check_params
    from splicer.data.sources import archives

    for key, check in (
        ("source", lambda: archives(spec["kind"], **spec.get("source", {}))),
        ("params", lambda: check_params(spec["kind"], spec.get("params", {}), param_defaults(spec["kind"]))),
        ("caps", lambda: _check_caps(spec, Caps.from_spec(spec))),
    ):
        try:
            check()
        except (ValueError, TypeError, ImportError) as err:
            raise _fail(f"{where}.{key}", str(err)) from None


def _check_caps(spec: Mapping, caps: Any) -> None:
    """Every caps key names ``*`` or a dataset (and split) the entry's builder writes."""
    from splicer.data.real import dataset_names

    names = dataset_names(spec["kind"], dict(spec.get("params", {})))
    for key in caps.limits:
        dataset, _, split = key.partition("/")
        if key != "*" and dataset not in names:
            raise ValueError(f"caps key {key!r}: kind {spec['kind']!r} writes datasets {list(names)}")
        if split and split not in ("train", "val", "test"):
            raise ValueError(f"caps key {key!r}: split must be train, val or test")


def check_config(config: Mapping) -> None:
    """Cross-reference checks the JSON schema cannot express; errors name the key path and the value."""
    datasets = config["datasets"]
    for dname, spec in datasets.items():
        _check_dataset_entry(f"datasets.{dname}", spec)
        for record in archive_targets(config, dname):
            try:
                archive_options(config, spec["kind"], archive_of(record).name)
            except ValueError as err:
                raise _fail(f"datasets.{dname}.source", str(err)) from None
    for ename, exp in config["experiments"].items():
        where = f"experiments.{ename}"
        if exp["data"] not in datasets:
            raise _fail(f"{where}.data", f"unknown dataset {exp['data']!r}; defined: {sorted(datasets)}")
        pairings = exp["pairings"]
        for name, inputs in pairings.items():
            for item in inputs:
                if item != VIEW and item not in exp["components"]:
                    raise _fail(
                        f"{where}.pairings.{name}",
                        f"{item!r} is neither 'view' nor a component ({sorted(exp['components'])})",
                    )
        seen = set()
        for i, run in enumerate(exp["runs"]):
            if run["method"] not in PRESETS:
                raise _fail(f"{where}.runs[{i}].method", f"unknown method {run['method']!r}; choose {sorted(PRESETS)}")
            if run["pairing"] not in pairings:
                known = sorted(pairings)
                raise _fail(f"{where}.runs[{i}].pairing", f"unknown pairing {run['pairing']!r}; defined: {known}")
            key = (run["method"], run["pairing"])
            if key in seen:
                raise _fail(f"{where}.runs[{i}]", f"method {key[0]!r} with pairing {key[1]!r} is listed twice")
            seen.add(key)
        for name, spec in exp["evaluate"].items():
            data = _split_ref(config, ename, spec["data"])[0]
            if data not in datasets:
                raise _fail(f"{where}.evaluate.{name}.data", f"unknown dataset {data!r}; defined: {sorted(datasets)}")
        for table in ("spectrum", "correlate"):
            for name in exp.get(table, []):
                if name not in exp["evaluate"]:
                    raise _fail(f"{where}.{table}", f"{name!r} is not one of the evaluations {sorted(exp['evaluate'])}")
        losses = exp.get("losses") or config["losses"]
        for entry in exp["runs"]:
            run = Run(ename, entry["method"], entry["pairing"], losses[0], 0)
            try:
                cfg = validate_run_config(run_config(config, run), where=f"{where} (run {run.path})")
                method = cfg["method"]
                build_pairing(
                    method["name"], method["inputs"], method["loss"], cfg["model"]["embed_dim"], **method["options"]
                )
            except ValueError as err:
                raise _fail(f"{where}.runs ({entry['method']}/{entry['pairing']})", str(err)) from None
    from splicer.plots import FIGURES

    for fig, spec in config.get("figures", {}).items():
        if fig not in FIGURES:
            raise _fail(f"figures.{fig}", f"unknown figure; known: {sorted(FIGURES)}")
        for role in TABLE_ROLES:
            for ename in spec.get(role, []):
                if ename not in config["experiments"]:
                    raise _fail(f"figures.{fig}.{role}", f"unknown experiment {ename!r}")
        figure_inputs(config, fig)


def experiment_runs(config: Mapping, experiment: str) -> list[Run]:
    """Every run of one experiment: runs x losses x seeds (experiment-level lists override the global ones)."""
    exp = config["experiments"][experiment]
    losses = exp.get("losses") or config["losses"]
    seeds = exp.get("seeds") or config["seeds"]
    return [
        Run(experiment, r["method"], r["pairing"], loss, int(seed))
        for r in exp["runs"]
        for loss in losses
        for seed in seeds
    ]


def find_run(config: Mapping, experiment: str, method: str, pairing: str) -> Mapping:
    """The ``runs`` entry of an experiment for a method and pairing."""
    for entry in config["experiments"][experiment]["runs"]:
        if entry["method"] == method and entry["pairing"] == pairing:
            return entry
    raise ValueError(f"experiment {experiment!r} has no run with method {method!r} and pairing {pairing!r}")


def run_config(config: Mapping, run: Run) -> dict:
    """The :mod:`splicer.config` run config of one run: global defaults < experiment overrides < run options."""
    exp = config["experiments"][run.experiment]
    entry = find_run(config, run.experiment, run.method, run.pairing)
    cfg = deep_merge(config.get("run_defaults", {}), exp.get("run_overrides", {}))
    cfg = deep_merge(cfg, entry.get("overrides", {}))
    cfg["components"] = dict(exp["components"])
    cfg["method"] = {
        "name": run.method,
        "inputs": list(exp["pairings"][run.pairing]),
        "loss": run.loss,
        "options": dict(entry.get("options", {})),
    }
    cfg = deep_merge(cfg, {"train": {"seed": run.seed, "device": config.get("device", "auto")}})
    return cfg


def export_environment(root: str) -> None:
    """Let jobs (local, conda or SLURM, which inherit this environment) find this package and a Python.

    The repository goes on ``PYTHONPATH``; the folder of the interpreter running Snakemake goes on ``PATH`` so
    that ``python`` in a shell rule is this venv's when Snakemake was started without activating it (a conda
    env, when used, is activated in front of it).
    """
    import os
    import sys

    def prepend(var: str, entry: str) -> None:
        rest = [p for p in os.environ.get(var, "").split(os.pathsep) if p and p != entry]
        os.environ[var] = os.pathsep.join([entry, *rest])

    prepend("PYTHONPATH", root)
    prepend("PATH", os.path.dirname(sys.executable))


def results_root(config: Mapping) -> str:
    """``results/<name>``."""
    return f"results/{config['name']}"


def data_dir(config: Mapping, data: str) -> str:
    """Directory holding the datasets of one ``datasets`` entry, segmented when it has a ``segment`` section."""
    kind = "segmented" if config["datasets"][data].get("segment") else "data"
    return f"{results_root(config)}/{kind}/{data}"


def _split_ref(config: Mapping, experiment: str, dataset: str) -> tuple[str, str]:
    """``rMNIST`` -> (the experiment's data, rMNIST); ``eurosat/bands13`` -> (eurosat, bands13)."""
    if "/" in dataset:
        data, name = dataset.split("/", 1)
        return data, name
    return config["experiments"][experiment]["data"], dataset


def dataset_path(config: Mapping, experiment: str, dataset: str) -> str:
    """Path of one dataset of an experiment: ``rMNIST`` (its own data) or ``<datasets entry>/<dataset>``."""
    data, name = _split_ref(config, experiment, dataset)
    return f"{data_dir(config, data)}/{name}"


def eval_manifests(config: Mapping, experiment: str) -> list[str]:
    """Manifests of every data folder an experiment's evaluations read."""
    exp = config["experiments"][experiment]
    datas = {_split_ref(config, experiment, spec["data"])[0] for spec in exp["evaluate"].values()}
    return [manifest(config, d) for d in sorted(datas)]


def run_dir(config: Mapping, run: Run) -> str:
    """Output folder of one run."""
    return f"{results_root(config)}/runs/{run.path}"


def _read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read result {path}: {err}") from None


def _run_fields(config: Mapping, run: Run) -> dict[str, Any]:
    exp = config["experiments"][run.experiment]
    return {
        "experiment": run.experiment,
        "dataset": exp.get("dataset_label") or exp["pretrain"],
        "method": run.method,
        "loss": run.loss,
        "pairing": run.pairing,
        "seed": run.seed,
    }


def _eval_fields(config: Mapping, experiment: str, name: str) -> dict[str, str]:
    spec = config["experiments"][experiment]["evaluate"][name]
    return {"task": spec.get("task", name), "variant": spec.get("variant", "-")}


def _rows(config: Mapping, run: Run, evaluation: Mapping) -> dict[str, list[dict]]:
    exp = run.experiment
    out: dict[str, list[dict]] = {"probes": [], "spectra": [], "correlations": []}
    for name, result in evaluation.get("probes", {}).items():
        base = {**_run_fields(config, run), **_eval_fields(config, exp, name), "head": result.get("head")}
        for metric in ("accuracy", "balanced_accuracy", "auc", "val_accuracy"):
            value = result.get(metric)
            if value is not None:
                out["probes"].append({**base, "metric": metric, "value": float(value)})
    for name, values in evaluation.get("spectra", {}).items():
        base = {**_run_fields(config, run), **_eval_fields(config, exp, name), "metric": "singular_value"}
        out["spectra"] += [{**base, "rank": i + 1, "value": float(v)} for i, v in enumerate(values)]
    for name, result in evaluation.get("correlations", {}).items():
        base = {**_run_fields(config, run), **_eval_fields(config, exp, name)}
        out["correlations"].append({**base, "metric": "mean_abs_correlation", "value": result["mean_abs_correlation"]})
        out["correlations"] += [
            {**base, "metric": f"channel:{c}", "value": v} for c, v in result["per_channel"].items()
        ]
    return out


def collect_tables(
    config: Mapping,
    experiment: str,
    evaluations: Iterable[tuple[Run, str | Path]],
    supervised: Iterable[tuple[str, int, str | Path]] = (),
    ssl_ceiling: Iterable[tuple[Run, str | Path]] = (),
) -> dict:
    """Tidy tables of one experiment from its runs' ``evaluation.json`` files (and ceiling results).

    Returns DataFrames ``probes`` (+ ``head``), ``spectra`` (+ ``rank``), ``correlations`` and ``ceilings``
    (``experiment, kind, task, seed, metric, value``; kinds ``ssl_complex_only``, ``supervised_complex_only``).
    """
    import pandas as pd

    rows: dict[str, list[dict]] = {"probes": [], "spectra": [], "correlations": []}
    for run, path in evaluations:
        for key, items in _rows(config, run, _read_json(path)).items():
            rows[key] += items
    ceilings = []
    for run, path in ssl_ceiling:
        for name, result in _read_json(path).get("probes", {}).items():
            ceilings.append(
                {
                    "experiment": experiment,
                    "kind": "ssl_complex_only",
                    "task": name,
                    "method": run.method,
                    "loss": run.loss,
                    "seed": run.seed,
                    "metric": "accuracy",
                    "value": result["accuracy"],
                }
            )
    for name, seed, path in supervised:
        ceilings.append(
            {
                "experiment": experiment,
                "kind": "supervised_complex_only",
                "task": name,
                "method": "-",
                "loss": "-",
                "seed": seed,
                "metric": "accuracy",
                "value": _read_json(path)["accuracy"],
            }
        )
    columns = {
        "probes": [*TIDY_COLUMNS, "head"],
        "spectra": [*TIDY_COLUMNS, "rank"],
        "correlations": TIDY_COLUMNS,
    }
    tables = {key: pd.DataFrame(rows[key], columns=cols) for key, cols in columns.items()}
    tables["ceilings"] = pd.DataFrame(
        ceilings, columns=["experiment", "kind", "task", "method", "loss", "seed", "metric", "value"]
    )
    return tables


# ---- paths and inputs the rule files ask for -------------------------------------------------------------------


def manifest(config: Mapping, data: str) -> str:
    """The manifest marking one ``datasets`` entry as built (and segmented, if it asks to be)."""
    return f"{data_dir(config, data)}/manifest.json"


def split_flag(config: Mapping, experiment: str) -> str:
    """``--split NAME`` when the experiment pretrains on one split of its pretraining dataset."""
    split = config["experiments"][experiment].get("pretrain_split")
    return f"--split {split}" if split else ""


def gpus(config: Mapping) -> int:
    """GPUs a training/embedding job asks the scheduler for (none on CPU configs)."""
    return 0 if config.get("device", "auto") == "cpu" else 1


def evaluate_args(config: Mapping, experiment: str) -> str:
    """``--eval name=dir ... --spectrum name --correlate name`` for one experiment's evaluate job."""
    exp = config["experiments"][experiment]
    args = [f"--eval {name}={dataset_path(config, experiment, spec['data'])}" for name, spec in exp["evaluate"].items()]
    args += [f"--spectrum {name}" for name in exp.get("spectrum", [])]
    args += [f"--correlate {name}" for name in exp.get("correlate", [])]
    return " ".join(args)


def evaluation_path(config: Mapping, run: Run) -> str:
    """A run's evaluation results."""
    return f"{run_dir(config, run)}/evaluation.json"


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
            f"{results_root(config)}/supervised/{experiment}/{name}/seed{seed}.json"
            for name in exp.get("supervised", [])
            for seed in seeds
        ],
    }


def table_paths(config: Mapping, experiment: str) -> dict[str, str]:
    """The tidy tables of one experiment."""
    root = f"{results_root(config)}/tables/{experiment}"
    return {k: f"{root}/{k}.csv" for k in ("probes", "spectra", "correlations", "ceilings")}


VERIFIED = ".verified"
"""Folder (inside ``resources/<kind>/``) of the download rule's outputs: one small JSON per verified archive.

The archives themselves are never Snakemake outputs, so Snakemake never deletes them (it removes a job's old
outputs before rerunning it, e.g. after a code change): rerunning a download only re-verifies the file."""


def archive_targets(config: Mapping, data: str) -> list[str]:
    """Verification records (``resources/<kind>/.verified/<file>.json``) of the raw archives a real dataset is
    built from; none for demo or folder data. :func:`archive_of` gives each record's archive."""
    spec = config["datasets"][data]
    if spec["kind"] == "demo":
        return []
    from splicer.data.sources import archives

    found = archives(spec["kind"], **spec.get("source", {}))
    return [f"resources/{spec['kind']}/{VERIFIED}/{a.name}.json" for a in found]


def archive_of(record: str | Path) -> Path:
    """The archive of a verification record: ``resources/<kind>/.verified/<f>.json`` -> ``resources/<kind>/<f>``."""
    record = Path(record)
    if record.parent.name != VERIFIED or record.suffix != ".json":
        raise ValueError(f"{record} is not a verification record (resources/<kind>/{VERIFIED}/<file>.json)")
    return record.parent.parent / record.name[: -len(".json")]


def archives_present(records: Iterable[str | Path]) -> list[Path]:
    """The archives of ``records``; an archive deleted since it was verified gets its record removed (so the next
    run fetches or re-verifies it) and a FileNotFoundError that says so."""
    paths, missing = [], []
    for record in records:
        path = archive_of(record)
        if not path.is_file():
            Path(record).unlink(missing_ok=True)
            missing.append(path)
        paths.append(path)
    if missing:
        where = ", ".join(str(p.resolve()) for p in missing)
        raise FileNotFoundError(f"archive(s) verified earlier are gone: {where}. Their verification records were "
                                "removed: run again to download them (or, offline, put them back at that path).")
    return paths


def archive_options(config: Mapping, kind: str, file: str) -> dict:
    """The ``source`` options (mirror, checksums, slides, size) under which archive ``file`` of ``kind`` is fetched:
    those of the ``datasets`` entries built from it, which must agree on its mirror and pinned checksum (else
    ValueError naming the entries); empty when no entry uses it (the file is then looked up among all variants)."""
    from splicer.data.sources import archives

    chosen: dict | None = None
    seen: dict[tuple, str] = {}
    for name, spec in config["datasets"].items():
        if spec["kind"] != kind:
            continue
        source = dict(spec.get("source", {}))
        if not any(a.name == file for a in archives(kind, **source)):
            continue
        key = (source.get("mirror"), dict(source.get("checksums") or {}).get(file))
        seen.setdefault(key, name)
        if len(seen) > 1:
            a, b = seen.values()
            raise ValueError(f"datasets entries {a!r} and {b!r} both use {kind} archive {file!r} but with a "
                             "different source.mirror or source.checksums for it; make them agree")
        chosen = chosen if chosen is not None else source
    return chosen or {}


# ---- figures -------------------------------------------------------------------------------------------------

TABLE_ROLES = ("probes", "spectra", "correlations", "ceilings")
DATASET_ROLES = ("dataset", "datasets")


def _data_ref(config: Mapping, ref: str, where: str) -> tuple[str, str]:
    data, sep, name = ref.partition("/")
    if not sep or data not in config["datasets"]:
        raise _fail(where, f"{ref!r} must be <datasets entry>/<dataset>; entries: {sorted(config['datasets'])}")
    return data, name


def figure_inputs(config: Mapping, figure: str) -> tuple[list[str], dict[str, str | list[str]]]:
    """Files a figure rule depends on, and the ``inputs`` mapping (role -> path or paths) for the plot function.

    Table roles list experiments (their tidy CSVs); dataset roles name ``<datasets entry>/<dataset>`` folders,
    on which the rule depends through the folder's manifest.
    """
    spec = config["figures"][figure]
    files: list[str] = []
    roles: dict[str, str | list[str]] = {}
    for role in TABLE_ROLES:
        if role in spec:
            paths = [table_paths(config, e)[role] for e in spec[role]]
            files += paths
            roles[role] = paths
    for role in DATASET_ROLES:
        if role in spec:
            refs = [spec[role]] if role == "dataset" else list(spec[role])
            dirs = []
            for ref in refs:
                data, name = _data_ref(config, ref, f"figures.{figure}.{role}")
                files.append(manifest(config, data))
                dirs.append(f"{data_dir(config, data)}/{name}")
            roles[role] = dirs[0] if role == "dataset" else dirs
    return sorted(set(files)), roles


def figure_options(config: Mapping, figure: str) -> dict:
    """Plot options of a figure (config ``figures.<name>.options``), with ``demo`` set for the scorecard."""
    options = dict(config["figures"][figure].get("options", {}))
    if figure == "scorecard":
        options.setdefault("demo", bool(config.get("demo", False)))
    return options


# ---- summary -------------------------------------------------------------------------------------------------


def summarise(probe_tables: Iterable[str | Path], ceiling_tables: Iterable[str | Path], demo: bool) -> str:
    """Markdown summary: probe accuracy mean ± sd over seeds per run and evaluation, then the ceilings."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in probe_tables]
    probes = pd.concat(frames) if frames else pd.DataFrame(columns=TIDY_COLUMNS)
    acc = probes[probes.metric == "accuracy"]
    keys = ["experiment", "method", "pairing", "loss", "task", "variant"]
    rows = acc.groupby(keys, sort=False).value.agg(["mean", "std", "count"]).reset_index()
    lines = [
        f"# Results summary ({'embedded demo: synthetic analogues' if demo else 'real data'})",
        "",
        "Linear-probe test accuracy, mean ± sd over seeds (n).",
        "",
        "| experiment | method | pairing | loss | task | variant | accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows.itertuples():
        sd = "" if pd.isna(r.std) else f" ± {r.std:.3f}"
        lines.append(
            f"| {r.experiment} | {r.method} | {r.pairing} | {r.loss} | {r.task} | {r.variant} | "
            f"{r.mean:.3f}{sd} (n={r.count}) |"
        )
    ceil_frames = [pd.read_csv(p) for p in ceiling_tables]
    ceilings = pd.concat(ceil_frames) if ceil_frames else pd.DataFrame()
    if len(ceilings):
        lines += ["", "Ceilings on the complex component alone (mean ± sd over seeds):", ""]
        for (exp, kind), g in ceilings.groupby(["experiment", "kind"], sort=False):
            sd = "" if len(g) < 2 else f" ± {g.value.std():.3f}"
            lines.append(f"- {exp}, {kind}: {g.value.mean():.3f}{sd} (n={len(g)})")
    return "\n".join(lines) + "\n"
