"""The run grid: every pretraining run of an experiment (method x pairing x loss x seed) and its run config."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass

from splicer.config import deep_merge

__all__ = ["Run", "embedding_run", "experiment_runs", "find_run", "known_channels", "run_config"]


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


def known_channels(config: Mapping, experiment: str) -> list[str] | None:
    """Channel names of an experiment's pretraining dataset when its kind declares them before any build (the
    kind's ``layout`` in :data:`splicer.registry.KINDS`), else None (then panels expand when the run starts)."""
    from splicer.registry import KINDS

    exp = config["experiments"][experiment]
    entry = config["datasets"].get(exp["data"])
    declare = getattr(KINDS.get(entry["kind"]), "layout", None) if entry else None
    if not declare:
        return None
    found = _declared(declare, json.dumps(entry, sort_keys=True, default=str)).get(exp["pretrain"])
    channels = getattr(found, "channels", None)
    return None if channels is None else list(channels)


@functools.lru_cache(maxsize=64)
def _declared(layout: str, entry: str) -> dict:
    from splicer.registry import resolve

    return resolve(layout)(json.loads(entry))


def run_config(config: Mapping, run: Run) -> dict:
    """The :mod:`splicer.config` run config of one run: global defaults < experiment overrides < run options."""
    exp = config["experiments"][run.experiment]
    entry = find_run(config, run.experiment, run.method, run.pairing)
    cfg = deep_merge(config.get("run_defaults", {}), exp.get("run_overrides", {}))
    cfg = deep_merge(cfg, entry.get("overrides", {}))
    components, inputs = dict(exp["components"]), list(exp["pairings"][run.pairing])
    if any(isinstance(spec, Mapping) and spec.get("type") == "panel" for spec in components.values()):
        from splicer.components import expand_panels  # panels: per channel, where the channels are declared

        components, inputs = expand_panels(components, inputs, known_channels(config, run.experiment))
    cfg["components"] = components
    cfg["method"] = {
        "name": run.method,
        "inputs": inputs,
        "loss": run.loss,
        "options": dict(entry.get("options", {})),
    }
    cfg = deep_merge(cfg, {"train": {"seed": run.seed, "device": config.get("device", "auto")}})
    return cfg


def embedding_run(config: Mapping, name: str) -> Run:
    """The run whose encoder an embedding export (config ``embeddings.<name>``) uses: its ``method``/``pairing``
    (default: the experiment's first run), ``loss`` and ``seed`` (default: the experiment's first); ValueError
    naming the key at fault."""
    spec = config["embeddings"][name]
    where = f"config embeddings.{name}"
    experiment = spec["experiment"]
    if experiment not in config["experiments"]:
        raise ValueError(
            f"{where}.experiment: unknown experiment {experiment!r}; defined: {sorted(config['experiments'])}"
        )
    runs = experiment_runs(config, experiment)
    first = runs[0]
    method, pairing = spec.get("method", first.method), spec.get("pairing")
    if pairing is None:
        pairing = next((r.pairing for r in runs if r.method == method), first.pairing)
    wanted = Run(experiment, method, pairing, spec.get("loss", first.loss), int(spec.get("seed", first.seed)))
    if wanted not in runs:
        grid = sorted({(r.method, r.pairing, r.loss, r.seed) for r in runs})
        raise ValueError(
            f"{where}: experiment {experiment!r} has no run {wanted.path!r}; its runs (method, pairing, loss, "
            f"seed): {grid}"
        )
    return wanted
