"""Checks of a pipeline config that the JSON schema cannot express, run before any job (``snakemake -n``).

Every error is a ``ValueError`` starting ``config <key path>:`` and naming the value at fault and what would be
accepted. Names (methods, losses, dataset kinds, figures) come from :mod:`splicer.registry`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from splicer.pipeline.archives import archive_of, archive_options, archive_targets
from splicer.pipeline.figures import DATASET_ROLES, EMBEDDING_ROLES, TABLE_ROLES, figure_inputs
from splicer.pipeline.grid import Run, embedding_run, run_config
from splicer.pipeline.paths import split_ref
from splicer.registry import FIGURES, KINDS, LOSSES, METHODS

__all__ = ["check_config", "dataset_names"]


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"config {where}: {message}")


def dataset_names(spec: Mapping) -> tuple[str, ...]:
    """The dataset folders a ``datasets`` entry's build writes (declared, not built)."""
    kind = spec["kind"]
    if kind == "demo":
        from splicer.data.demo import demo_datasets

        return demo_datasets(spec.get("family", ""))
    from splicer.data.real import dataset_names as real_dataset_names

    return real_dataset_names(kind, spec.get("params", {}))


def _check_demo(where: str, spec: Mapping) -> None:
    from splicer.data.demo import DEMO_FAMILIES

    family = spec.get("family")
    if family not in DEMO_FAMILIES:
        raise _fail(f"{where}.family", f"unknown demo family {family!r}; families: {sorted(DEMO_FAMILIES)}")
    allowed = [p for p in inspect.signature(DEMO_FAMILIES[family]).parameters if p not in ("out_dir", "seed")]
    if unknown := sorted(set(spec.get("params", {})) - set(allowed)):
        raise _fail(f"{where}.params", f"unknown parameter(s) {unknown} for demo family {family!r}; allowed: {allowed}")


def _check_caps(spec: Mapping, caps: Any) -> None:
    """Every caps key names ``*`` or a dataset (and split) the entry's builder writes."""
    names = dataset_names(spec)
    for key in caps.limits:
        dataset, _, split = key.partition("/")
        if key != "*" and dataset not in names:
            raise ValueError(f"caps key {key!r}: kind {spec['kind']!r} writes datasets {list(names)}")
        if split and split not in ("train", "val", "test"):
            raise ValueError(f"caps key {key!r}: split must be train, val or test")


def _check_dataset_entry(where: str, spec: Mapping) -> None:
    """A dataset entry's kind and segment section, and a real entry's source options, builder params and caps."""
    if spec["kind"] not in KINDS:
        raise _fail(f"{where}.kind", f"unknown dataset kind {spec['kind']!r}; kinds: {list(KINDS)}")
    if "segment" in spec:
        from splicer.segment import parse_spec

        try:
            parse_spec(spec["segment"])
        except ValueError as err:
            raise _fail(f"{where}.segment", str(err)) from None
    if spec["kind"] == "demo":
        _check_demo(where, spec)
        return
    if "family" in spec:
        raise _fail(f"{where}.family", f"only demo entries have a family (this entry's kind is {spec['kind']!r})")
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


def _check_losses(where: str, losses: Any) -> None:
    for loss in losses or ():
        if loss not in LOSSES:
            raise _fail(where, f"unknown loss {loss!r}; losses: {list(LOSSES)}")


def _check_experiment(config: Mapping, ename: str) -> None:
    from splicer.config import validate_run_config
    from splicer.methods import VIEW, build_pairing

    datasets = config["datasets"]
    exp = config["experiments"][ename]
    where = f"experiments.{ename}"
    if exp["data"] not in datasets:
        raise _fail(f"{where}.data", f"unknown dataset {exp['data']!r}; defined: {sorted(datasets)}")
    _check_losses(f"{where}.losses", exp.get("losses"))
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
        if run["method"] not in METHODS:
            raise _fail(f"{where}.runs[{i}].method", f"unknown method {run['method']!r}; methods: {list(METHODS)}")
        if run["pairing"] not in pairings:
            raise _fail(
                f"{where}.runs[{i}].pairing", f"unknown pairing {run['pairing']!r}; defined: {sorted(pairings)}"
            )
        key = (run["method"], run["pairing"])
        if key in seen:
            raise _fail(f"{where}.runs[{i}]", f"method {key[0]!r} with pairing {key[1]!r} is listed twice")
        seen.add(key)
    for name, spec in exp["evaluate"].items():
        data = split_ref(config, ename, spec["data"])[0]
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


def _check_embedding(config: Mapping, name: str) -> None:
    """An embedding export names a run of the grid and a dataset of a declared entry."""
    embedding_run(config, name)
    spec = config["embeddings"][name]
    data, dataset = split_ref(config, spec["experiment"], spec["data"])
    if data not in config["datasets"]:
        raise _fail(f"embeddings.{name}.data", f"unknown dataset entry {data!r}; defined: {sorted(config['datasets'])}")
    if (names := dataset_names(config["datasets"][data])) and dataset not in names:
        raise _fail(f"embeddings.{name}.data", f"entry {data!r} writes datasets {list(names)}, not {dataset!r}")


def _check_figure(config: Mapping, name: str, spec: Mapping) -> None:
    if name not in FIGURES:
        raise _fail(f"figures.{name}", f"unknown figure; figures: {list(FIGURES)}")
    figure = FIGURES[name]
    roles = [r for r in (*TABLE_ROLES, *DATASET_ROLES, *EMBEDDING_ROLES) if r in spec]
    if missing := [r for r in figure.inputs if r not in roles]:
        raise _fail(f"figures.{name}", f"needs input(s) {missing} (accepts {[*figure.inputs, *figure.optional]})")
    if extra := [r for r in roles if r not in (*figure.inputs, *figure.optional)]:
        raise _fail(f"figures.{name}", f"does not read {extra} (accepts {[*figure.inputs, *figure.optional]})")
    for role in TABLE_ROLES:
        for ename in spec.get(role, []):
            if ename not in config["experiments"]:
                raise _fail(f"figures.{name}.{role}", f"unknown experiment {ename!r}")
    figure_inputs(config, name)


def check_config(config: Mapping) -> None:
    """Cross-reference checks the JSON schema cannot express; errors name the key path and the value."""
    _check_losses("losses", config["losses"])
    for dname, spec in config["datasets"].items():
        _check_dataset_entry(f"datasets.{dname}", spec)
        for record in archive_targets(config, dname):
            try:
                archive_options(config, spec["kind"], archive_of(record).name)
            except ValueError as err:
                raise _fail(f"datasets.{dname}.source", str(err)) from None
    for ename in config["experiments"]:
        _check_experiment(config, ename)
    for name in config.get("embeddings", {}):
        _check_embedding(config, name)
    for name, spec in config.get("figures", {}).items():
        _check_figure(config, name, spec)
