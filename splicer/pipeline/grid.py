"""The run grid: every pretraining run of an experiment (method x pairing x loss x seed) and its run config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from splicer.config import deep_merge

__all__ = ["Run", "experiment_runs", "find_run", "run_config"]


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
