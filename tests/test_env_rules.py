"""Every rule runs in the conda env it names (``--sdm conda``), tested as CI can without conda.

* Each rule names an env, and the envs are the ones this test knows how to check.
* The light envs (``download``, ``plots``: no torch) are built as venvs from their pins (pip, from PyPI or the
  local cache) and each of their rules' scripts runs a tiny real job in them, with a stand-in ``snakemake``
  object and nothing on ``sys.path`` but the env and this repository. (A real ``--sdm conda`` job also sees the
  Snakemake installation's ``sys.path`` as a fallback, which can hide a missing package: this test does not.)
* The torch envs (``splicer``, ``data``) are not re-installed (a second CUDA torch is ~3 GB and minutes of CI);
  instead every third-party import reachable from their rules' scripts -- module-level *and* inside functions,
  found by walking the ``splicer`` modules' syntax trees -- must belong to a distribution the env's pins
  install, with their dependencies, as the venv CI built from the same lock records them. Imports a user adds
  on purpose (TIAToolbox for HoVer-Net) are listed in ``OPTIONAL``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"
ENVS = ROOT / "envs"

# rule -> (env, what it runs: a script under workflow/scripts, or the splicer module its shell command runs)
EXPECTED = {
    "download": ("download", "workflow/scripts/download.py"),
    "build_data": ("data", "workflow/scripts/build_data.py"),
    "segment": ("data", "workflow/scripts/segment.py"),
    "pretrain": ("splicer", "splicer/cli.py"),
    "evaluate": ("splicer", "splicer/cli.py"),
    "supervised": ("splicer", "splicer/cli.py"),
    "embed_h5ad": ("splicer", "splicer/cli.py"),
    "tables": ("plots", "workflow/scripts/tables.py"),
    "summary": ("plots", "workflow/scripts/summary.py"),
    "<figure>": ("plots", "workflow/scripts/figure.py"),
}
LIGHT = ("download", "plots")
# installed by the user where the paper's segmenters run (checked before any job): HoVer-Net through TIAToolbox,
# HybridGNet's model code (its checkout at segment.options.source) needs torch_geometric
OPTIONAL = {"tiatoolbox", "torch_geometric"}


def rule_envs() -> dict[str, tuple[str, str]]:
    """Rule name ('<figure>' for the figure rules) -> (env name, script or 'splicer/cli.py')."""
    out = {}
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=rule\b|    rule\b)", text)[1:]:
            name = re.match(r"\s*rule\s*(\w*)\s*:", block)
            rule = name.group(1) if name and name.group(1) else "<figure>"
            env = re.search(r'conda:\s*\n\s*"\.\./\.\./envs/(\w+)\.yaml"', block)
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w.]+)"', block)
            if not env and not script and "shell:" not in block:
                continue  # an aggregating target (e.g. `embeddings`): runs nothing
            run = f"workflow/scripts/{script.group(1)}" if script else "splicer/cli.py"
            out[rule] = (env.group(1) if env else None, run)
    return out


def env_pins(env: str) -> list[str]:
    doc = yaml.safe_load((ENVS / f"{env}.yaml").read_text())
    return next(d["pip"] for d in doc["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_every_rule_runs_in_the_env_this_test_checks() -> None:
    found = rule_envs()
    assert found == {rule: EXPECTED[rule] for rule in found}, found
    assert set(found) == set(EXPECTED)
    assert {p.stem for p in ENVS.glob("*.yaml")} == {env for env, _ in EXPECTED.values()}
    assert not any("torch" in pin for env in LIGHT for pin in env_pins(env)), "a light env pins torch"


# --------------------------------------------------------------------------------------------------- light envs
def build_venv(env: str) -> Path:
    """A venv with exactly the env's pins (and what pip resolves for them), cached by the pins' hash."""
    pins = env_pins(env)
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    base = Path(os.environ.get("SPLICER_ENV_VENVS", Path.home() / ".cache" / "splicer-env-venvs"))
    venv = base / f"{env}-{key}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins]
    result = subprocess.run(pip, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        if re.search(r"(Could not|Failed to) (fetch|establish|find a version)|NewConnectionError", result.stderr):
            pytest.skip(f"cannot install the {env} env's pins (no package index reachable): {result.stderr[-300:]}")
        raise AssertionError(f"pip cannot install envs/{env}.yaml's pins:\n{result.stderr[-3000:]}")
    (venv / ".complete").touch()
    return python


RUNNER = """
import json, runpy, sys

class Named(list):
    def __init__(self, items):
        items = items if isinstance(items, dict) else dict(enumerate(items))
        super().__init__(items.values())
        self._items = {k: v for k, v in items.items() if isinstance(k, str)}
        for k, v in self._items.items():
            setattr(self, k, v)
    def items(self):
        return self._items.items()
    def __getitem__(self, key):
        return self._items[key] if isinstance(key, str) else super().__getitem__(key)

spec = json.load(open(sys.argv[1]))
sm = type("Snakemake", (), {})()
for key in ("input", "output", "log", "params", "wildcards"):
    setattr(sm, key, Named(spec.get(key, {})))
sm.config, sm.rule = spec.get("config", {}), spec["rule"]
runpy.run_path(spec["script"], init_globals={"snakemake": sm}, run_name="__main__")
blocked = [m for m in ("torch", "torchvision", "sklearn", "medmnist") if m in sys.modules]
assert not blocked, f"the job imported {blocked}"
"""


def run_job(python: Path, tmp_path: Path, rule: str, script: str, **spec) -> None:
    """Run one rule's script in ``python``'s env: only the env and this repository are importable."""
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    job = tmp_path / f"{rule}.json"
    job.write_text(json.dumps({"rule": rule, "script": str(ROOT / script), **spec}))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [str(python), "-s", str(runner), str(job)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    logs = "".join(Path(p).read_text() for p in spec.get("log", []) if Path(p).exists())
    assert result.returncode == 0, f"{rule} failed in its env:\n{result.stderr[-3000:]}\n{logs[-3000:]}"


def _demo_config() -> dict:
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_download_rule_runs_in_its_env(tmp_path: Path) -> None:
    import io

    python = build_venv("download")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo("metadata.csv")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"a,b\n"))
    placed = tmp_path / "resources" / "camelyon17" / "camelyon17_v1.0_archive.tar.gz"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(data.getvalue())
    from splicer.pipeline.archives import archive_fields

    config = {"datasets": {"camelyon17": {"kind": "camelyon17"}}}
    fields = archive_fields(config, "camelyon17", placed.name)  # what the rule's param hands the job
    record = placed.parent / ".verified" / f"{placed.name}.json"
    log = tmp_path / "download.log"
    run_job(
        python,
        tmp_path,
        "download",
        EXPECTED["download"][1],
        output=[str(record)],
        log=[str(log)],
        params={"archive": fields},
    )
    info = json.loads(record.read_text())
    assert info["path"] == str(placed) and "tar index walked to its end" in info["verified"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tables_summary_and_figure_rules_run_in_the_plots_env(tmp_path: Path) -> None:
    from test_plots import _probe_rows, _write_csv

    from splicer.pipeline import figures as F
    from splicer.pipeline import paths as P

    python = build_venv("plots")
    config = _demo_config()
    inputs = P.table_inputs(config, "mnist_cifar")
    for path in inputs["evaluations"] + inputs["ssl_ceiling"]:
        Path(tmp_path, path).parent.mkdir(parents=True, exist_ok=True)
        probes = {"rMNIST": {"head": "linear", "accuracy": 0.7, "auc": 0.8, "val_accuracy": 0.7}}
        Path(tmp_path, path).write_text(json.dumps({"probes": probes, "spectra": {"rNONE": [1.0, 0.5]}}))
    for path in inputs["supervised"]:
        Path(tmp_path, path).parent.mkdir(parents=True, exist_ok=True)
        Path(tmp_path, path).write_text(json.dumps({"accuracy": 0.9}))
    tables = {k: str(tmp_path / v) for k, v in P.table_paths(config, "mnist_cifar").items()}
    Path(tables["probes"]).parent.mkdir(parents=True)
    run_job(
        python,
        tmp_path,
        "tables",
        EXPECTED["tables"][1],
        output=tables,
        log=[str(tmp_path / "tables.log")],
        wildcards={"experiment": "mnist_cifar"},
        config=config,
    )
    summary = tmp_path / "summary.md"
    run_job(
        python,
        tmp_path,
        "summary",
        EXPECTED["summary"][1],
        input={"probes": [tables["probes"]], "ceilings": [tables["ceilings"]]},
        output=[str(summary)],
        log=[str(tmp_path / "summary.log")],
        params={"datasets": {}},
        config={"demo": True},
    )
    assert "0.700" in summary.read_text()
    probes = _write_csv(tmp_path / "probes_all.csv", _probe_rows())
    out = {"png": str(tmp_path / "fig2c.png"), "pdf": str(tmp_path / "fig2c.pdf")}
    run_job(
        python,
        tmp_path,
        "fig2c",
        EXPECTED["<figure>"][1],
        output=out,
        log=[str(tmp_path / "fig2c.log")],
        params={"inputs": {"probes": [str(probes)]}, "options": F.figure_options(config, "fig2c")},
    )
    assert Path(out["png"]).stat().st_size > 1000


# --------------------------------------------------------------------------------------------------- torch envs
def _imports(tree: ast.AST, module: str) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = module.rsplit(".", node.level)[0]
            names.add(f"{base}.{node.module}" if node.module else base)
    return names


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def reachable_imports(entries: list[Path | str]) -> set[str]:
    """Top-level third-party modules imported anywhere (module level or inside functions) by the ``entries`` (files,
    or ``splicer`` module names) and every ``splicer`` module they import, transitively."""
    todo = [("__script__", e) if isinstance(e, Path) else (e, _module_file(e)) for e in entries]
    seen, third = set(), set()
    while todo:
        module, path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in _imports(ast.parse(path.read_text()), module):
            if name.split(".")[0] == "splicer":
                parts = name.split(".")
                todo += [(".".join(parts[:i]), _module_file(".".join(parts[:i]))) for i in range(2, len(parts) + 1)]
            elif name.split(".")[0] not in sys.stdlib_module_names:
                third.add(name.split(".")[0])
    return third


def entry_modules(env: str) -> list[Path | str]:
    """What the env's rules run: their scripts, plus what those resolve by name at run time -- for ``data``, the
    builder of every dataset kind (build_data) and every segmenter (segment)."""
    from splicer.registry import KINDS

    entries: list[Path | str] = [ROOT / script for rule, (e, script) in EXPECTED.items() if e == env]
    if env == "data":
        entries += [k.builder.split(":")[0] for k in KINDS.values() if k.builder]
        entries += ["splicer.data.demo", "splicer.segmenters", "splicer.pretrained_segmenters"]
    return entries


def closure(pins: list[str]) -> set[str]:
    """Distribution names (normalised) the pins install, with their dependencies, as installed here."""
    from packaging.requirements import Requirement

    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    todo, out = [Requirement(p).name for p in pins], set()
    while todo:
        name = norm(todo.pop())
        if name in out:
            continue
        out.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for req in map(Requirement, requires):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


@pytest.mark.parametrize("env", ["data", "splicer"])
def test_torch_env_pins_cover_every_import_of_its_rules(env: str) -> None:
    providers = md.packages_distributions()
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    installed = closure(env_pins(env))
    missing = {}
    for module in sorted(reachable_imports(entry_modules(env)) - OPTIONAL):
        dists = {norm(d) for d in providers.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists) or "not installed anywhere"
    assert not missing, f"envs/{env}.yaml does not install what its rules import: {missing}"
