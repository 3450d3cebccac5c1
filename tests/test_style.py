"""House style, checked as tests so the README's test command (and CI) runs them: ruff lint and format on the
Python, snakefmt on the Snakefile and rule files (`snakemake --lint` is in test_workflow.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: bash envs/install.sh installs the lock")
    return str(path)


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["snakefmt", "--check", "Snakefile", "workflow"]],
    ids=lambda c: " ".join(c),
)
def test_clean(command: list[str]) -> None:
    run = subprocess.run([_tool(command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"`{' '.join(command)}` reports:\n{run.stdout[-4000:]}{run.stderr[-4000:]}"
