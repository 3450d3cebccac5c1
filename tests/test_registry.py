"""Every name of splicer.registry resolves to what it promises; config checks use it; parsing stays light."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from configs import load
from torch import nn

from splicer.methods import PairingSpec, build_pairing, method_options
from splicer.pipeline.checks import check_config, dataset_names
from splicer.registry import FIGURES, KINDS, LOSSES, METHODS, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_names_the_bad_path():
    assert resolve("splicer.registry:METHODS") is METHODS
    with pytest.raises(ValueError, match=r"package\.module:attribute"):
        resolve("splicer.registry.METHODS")
    with pytest.raises(AttributeError):
        resolve("splicer.registry:NOPE")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_builds_a_pairing(method):
    inputs = [] if method == "baseline" else ["a", "b"]
    spec = build_pairing(method, inputs, "vicreg", 64)
    assert isinstance(spec, PairingSpec) and spec.method == method
    assert METHODS[method].label
    assert set(method_options(method)) <= set(inspect.signature(resolve(METHODS[method].pairing)).parameters)


def test_method_options_come_from_the_preset_signature():
    assert method_options("baseline") == ()
    assert "include_view" in method_options("splicer")
    with pytest.raises(ValueError, match=r"unknown option.*include_view.*.trident."):
        build_pairing("trident", ["a"], "vicreg", 64, include_view=True)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        build_pairing("nope", ["a"], "vicreg", 64)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_is_a_module(loss):
    cls = resolve(LOSSES[loss].module)
    assert issubclass(cls, nn.Module) and LOSSES[loss].label


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_resolves(kind):
    entry = KINDS[kind]
    if entry.builder is not None:
        builder = resolve(entry.builder)
        assert list(inspect.signature(builder).parameters)[:5] == ["out", "files", "params", "caps", "seed"]
        assert isinstance(resolve(entry.params), dict)
        assert entry.datasets
    if entry.archives is not None:
        archives = resolve(entry.archives)
        assert callable(archives) or isinstance(archives, list)
        assert callable(archives) == (entry.variants is not None), "an archives function needs its variants"
    assert entry.size.height > 0 and entry.size.channels > 0


def test_declared_datasets_of_a_folder_entry_follow_its_name():
    assert dataset_names({"kind": "folder", "params": {"images": "x", "name": "tiles"}}) == ("tiles",)
    assert dataset_names({"kind": "folder", "params": {"images": "x"}}) == ("images",)
    assert dataset_names({"kind": "demo", "family": "xray"}) == (
        "pretrain",
        "pneumonia",
        "pretrain_complex",
        "pneumonia_complex",
    )


@pytest.mark.parametrize("figure", list(FIGURES))
def test_every_figure_draws_and_has_a_caption(figure):
    fn = resolve(FIGURES[figure].draw)
    assert list(inspect.signature(fn).parameters)[:3] == ["inputs", "outputs", "title_suffix"]
    assert (ROOT / "workflow" / "report" / f"{figure}.rst").is_file()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["datasets"]["xray"].update(kind="xrays"), r"datasets\.xray\.kind: unknown dataset kind 'xrays'"),
        (lambda c: c["datasets"]["xray"].update(family="x-ray"), r"datasets\.xray\.family: unknown demo family"),
        (lambda c: c["datasets"]["xray"]["params"].update(n_pretrian=5), r"datasets\.xray\.params: .*n_pretrian"),
        (lambda c: c.update(losses=["vicreg", "simclrr"]), r"config losses: unknown loss 'simclrr'"),
        (lambda c: c["experiments"]["chest"].update(losses=["byol"]), r"experiments\.chest\.losses: unknown loss"),
        (
            lambda c: c["experiments"]["chest"]["runs"].append({"method": "dino", "pairing": "none"}),
            r"runs\[2\]\.method: unknown method 'dino'",
        ),
        (lambda c: c["figures"].update(fig9={"probes": ["chest"]}), r"figures\.fig9: unknown figure"),
        (lambda c: c["figures"]["fig2b"].update(probes=["chest"]), r"figures\.fig2b: does not read \['probes'\]"),
        (lambda c: c["figures"].update(fig3c={"probes": ["orion"]}), r"figures\.fig3c: needs input\(s\)"),
    ],
)
def test_names_are_checked_against_the_registry(edit, message):
    config = copy.deepcopy(load("config.yaml"))
    edit(config)
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_parsing_the_workflow_imports_no_plotting_library():
    """What the Snakefile runs at parse time (common.smk's imports and the config checks) never pulls in
    matplotlib or seaborn: every `snakemake` call would pay for them."""
    code = f"""
import sys, yaml
sys.path.insert(0, {str(ROOT)!r})
from snakemake.utils import validate
from splicer import cluster, segment
from splicer.pipeline import archives, figures, grid, paths
from splicer.pipeline.checks import check_config
from splicer.registry import FIGURES, LOSSES, METHODS
for name in ("config.yaml", "paper.yaml"):
    config = yaml.safe_load(open({str(ROOT / "config")!r} + "/" + name))
    validate(config, {str(ROOT / "workflow" / "schemas" / "config.schema.yaml")!r})
    check_config(config)
print(sorted(m for m in ("matplotlib", "seaborn") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
