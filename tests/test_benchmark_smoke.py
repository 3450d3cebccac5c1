"""Smoke test of benchmarks/speed.py: tiny settings, every (method, implementation) combination timed."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("lightly")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("splicer_benchmark_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(60)
def test_speed_benchmark_runs_every_combination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    speed = _load()
    previous = torch.get_num_threads()
    out_json = tmp_path / "speed.json"
    try:
        out = speed.main(
            [
                "--device",
                "cpu",
                "--threads",
                "1",
                "--n-images",
                "64",
                "--batch-size",
                "16",
                "--warmup",
                "1",
                "--steps",
                "1",
                "--rounds",
                "1",
                "--workers",
                "0",
                "--json",
                str(out_json),
            ]
        )
    finally:
        torch.set_num_threads(previous)

    combos = {(r["config"], r["impl"]) for r in out["results"]}
    assert combos == {(c, i) for c in ("baseline", "splicer K=2", "splicer K=4") for i in ("ours", "reference")}
    for row in out["results"]:
        assert math.isfinite(row["images_per_s"]) and row["images_per_s"] > 0
    ratios = [*out["speedup"].values(), *(v for c in out["step_cost"].values() for v in c.values())]
    assert len(ratios) == 3 + 2 * 2
    assert all(math.isfinite(v) and v > 0 for v in ratios)
    assert {t["passed"] for t in out["targets"]} <= {True, False} and len(out["targets"]) == 4

    printed = capsys.readouterr().out
    assert "splicer K=4" in printed and "ours/ref" in printed and ("PASS" in printed or "MISS" in printed)
    assert json.loads(out_json.read_text())["speedup"] == pytest.approx(out["speedup"])
