"""The conda envs users build pin exactly what the pip lock CI installs pins, and the lock covers pyproject."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "envs" / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[norm(name)] = version
    return pins


def test_there_are_envs_for_each_concern():
    assert {p.stem for p in ENVS} >= {"splicer", "data", "plots"}


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_pins_equal_the_lock(env):
    doc = yaml.safe_load(env.read_text())
    pip_section = next(d["pip"] for d in doc["dependencies"] if isinstance(d, dict) and "pip" in d)
    lock = lock_pins()
    assert pip_section, f"{env.name} pins nothing"
    for requirement in pip_section:
        name, sep, version = requirement.partition("==")
        assert sep, f"{env.name}: {requirement!r} is not pinned with =="
        assert norm(name) in lock, f"{env.name}: {name} is not in envs/requirements.lock"
        assert lock[norm(name)] == version, f"{env.name}: {name}=={version} but the lock has {lock[norm(name)]}"
    conda_python = [d for d in doc["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert conda_python == ["python=3.11"], f"{env.name}: pin python=3.11 as CI uses"


def test_lock_covers_every_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    lock = lock_pins()
    for requirement in declared:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        assert norm(name) in lock, f"pyproject declares {name} but envs/requirements.lock does not pin it"


def test_rules_only_name_envs_that_exist():
    rules = (ROOT / "workflow" / "rules").glob("*.smk")
    for rule_file in rules:
        for env in re.findall(r'conda:\s*\n?\s*"([^"]+)"', rule_file.read_text()):
            target = (rule_file.parent / env).resolve()
            assert target.exists(), f"{rule_file.name} names conda env {env}, which does not exist"
