"""The README's *Extending* section is true: a new method, loss, dataset kind and figure each need only the places it
names. A copy of the repository gets the four additions, each written only where the README says, and a real
Snakemake run uses all four end to end."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Caches too: other xdist workers write them (through temporary files) while the copy runs.
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "results",
    "resources",
    "logs",
    ".snakemake",
    "__pycache__",
    "*.egg-info",
    ".hypothesis",
    ".ruff_cache",
    ".pytest_cache",
)

METHOD = '''

def paired_only_pairing(inputs: Sequence[str], loss: str, embed_dim: int) -> PairingSpec:
    """Every pair among the primary and the components, no second view (TriDeNT without its unimodal pair)."""
    branches = _branches(inputs)
    nodes = [PRIMARY, *[b.name for b in branches]]
    pairs = tuple(Pair(a, b, loss=loss) for a, b in combinations(nodes, 2))
    return PairingSpec("paired_only", embed_dim, branches, pairs)
'''
LOSS = '''

class BarlowTwinsLoss(nn.Module):
    """Barlow Twins: the cross-correlation of the standardised embeddings pushed to the identity."""

    def __init__(self, lambd: float = 0.005) -> None:
        super().__init__()
        self.lambd = lambd

    def forward(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        a = (z_a - z_a.mean(0)) / (z_a.std(0) + 1e-6)
        b = (z_b - z_b.mean(0)) / (z_b.std(0) + 1e-6)
        c = a.T @ b / a.shape[0]
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on + self.lambd * off, {"on_diagonal": on.detach(), "off_diagonal": off.detach()}
'''
KIND = '''"""Images from one .npz file: images (N, C, H, W) uint8, labels (N,), split (N,) codes of train/val/test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splicer.data.format import save_dataset
from splicer.data.real.common import SPLITS, check_params

DEFAULTS = {"path": "", "name": "images"}


def build_npz(out, files, params, caps, seed):
    p = check_params("npz", params, DEFAULTS)
    with np.load(p["path"]) as f:
        images, labels, split = f["images"], f["labels"], f["split"]
    meta = {"name": p["name"], "channel_names": [f"c{i}" for i in range(images.shape[1])],
            "class_names": [str(c) for c in range(int(labels.max()) + 1)], "split_names": SPLITS, "mask_names": []}
    return {p["name"]: save_dataset(Path(out) / p["name"], images, labels, split, meta)}
'''
FIGURE = '''"""A figure beyond the paper's: mean probe accuracy of every method, per task."""

from __future__ import annotations

from splicer.plots.common import TIDY_COLUMNS, input_paths, new_figure, read_table, save_figure


def fig_methods(inputs, outputs, title_suffix="", *, metric="accuracy"):
    df = read_table(input_paths(inputs, "probes", "figMethods"), TIDY_COLUMNS, "figMethods")
    means = df[df.metric == metric].groupby(["task", "method"])["value"].mean().unstack()
    fig = new_figure(5, 3)
    means.plot.bar(ax=fig.add_subplot(111))
    save_figure(fig, outputs, "figMethods")
'''


def _insert(path: Path, anchor: str, text: str) -> None:
    """Insert ``text`` after the first line ending ``anchor`` (an entry into a registry dict)."""
    source = path.read_text()
    assert anchor in source, f"{path}: {anchor!r} not found"
    path.write_text(source.replace(anchor, anchor + text, 1))


def _extending_section() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Extending\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, "README.md has no '## Extending' section"
    return match.group(1)


@pytest.mark.slow
def test_a_method_a_loss_a_kind_and_a_figure_in_the_places_the_readme_names(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=IGNORE)
    touched = {
        "splicer/methods.py",
        "splicer/losses.py",
        "splicer/registry.py",
        "splicer/data/real/npz.py",
        "splicer/plots/extra.py",
        "workflow/report/figMethods.rst",
    }
    section = _extending_section()
    for place in touched - {"splicer/data/real/npz.py", "splicer/plots/extra.py", "workflow/report/figMethods.rst"}:
        assert place in section, f"the Extending section does not name {place}"
    for pattern in ("splicer/data/real/<kind>.py", "splicer/plots/", "workflow/report/<name>.rst"):
        assert pattern in section, f"the Extending section does not name {pattern}"

    # a method: a pairing function in methods.py, its entry in the registry
    (repo / "splicer/methods.py").write_text((repo / "splicer/methods.py").read_text() + METHOD)
    _insert(
        repo / "splicer/registry.py",
        '"splicer": Method("splicer.methods:splicer_pairing", "SpliCER"),\n',
        '    "paired_only": Method("splicer.methods:paired_only_pairing", "paired only"),\n',
    )
    # a loss: a module in losses.py, its entry in the registry
    (repo / "splicer/losses.py").write_text((repo / "splicer/losses.py").read_text() + LOSS)
    _insert(
        repo / "splicer/registry.py",
        '"simclr": Loss("splicer.losses:NTXentLoss", "SimCLR"),\n',
        '    "barlow": Loss("splicer.losses:BarlowTwinsLoss", "Barlow Twins"),\n',
    )
    # a dataset kind: a builder module, its entry in the registry
    (repo / "splicer/data/real/npz.py").write_text(KIND)
    _insert(
        repo / "splicer/registry.py",
        "KINDS: dict[str, Kind] = {\n",
        '    "npz": Kind("splicer.data.real.npz:build_npz", "splicer.data.real.npz:DEFAULTS", ("{name}",), None,\n'
        "                SizeHint(64, 16, 16, 3, eval_images=64)),\n",
    )
    # a figure: a drawing function, its entry in the registry, its caption
    (repo / "splicer/plots/extra.py").write_text(FIGURE)
    _insert(
        repo / "splicer/registry.py",
        "FIGURES: dict[str, Figure] = {\n",
        '    "figMethods": Figure("splicer.plots.extra:fig_methods", ("probes",)),\n',
    )
    (repo / "workflow/report/figMethods.rst").write_text("Mean probe accuracy of every method, per task.\n")

    rng = np.random.default_rng(0)
    n = 96
    labels = np.arange(n) % 2
    images = rng.integers(0, 128, (n, 3, 16, 16)).astype(np.uint8)
    images[labels == 1, 1] += 100  # a learnable channel difference
    np.savez(tmp_path / "toy.npz", images=images, labels=labels, split=(np.arange(n) % 3).astype(np.uint8))
    config = {  # ... and the config entries that use them
        "name": "ext",
        "device": "cpu",
        "seeds": [0],
        "losses": ["barlow"],
        "run_defaults": {
            "model": {
                "encoder": {"arch": "resnet", "base_width": 4, "blocks": [1]},
                "projector_hidden": [32],
                "embed_dim": 32,
            },
            "loss_options": {"barlow": {"lambd": 0.01}},
            "train": {"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "progress": False},
        },
        "datasets": {"toy": {"kind": "npz", "params": {"path": str(tmp_path / "toy.npz"), "name": "toy"}}},
        "experiments": {
            "toy": {
                "data": "toy",
                "pretrain": "toy",
                "pretrain_split": "train",
                "components": {
                    "c0": {"type": "channels", "channels": ["c0"]},
                    "c1": {"type": "channels", "channels": ["c1"]},
                },
                "pairings": {"channels": ["c0", "c1"]},
                "runs": [{"method": "paired_only", "pairing": "channels"}],
                "evaluate": {"toy": {"data": "toy", "task": "toy"}},
            }
        },
        "figures": {"figMethods": {"probes": ["toy"]}},
    }
    (tmp_path / "ext.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "all", "--cores", "2", "--configfile", str(tmp_path / "ext.yaml")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert (repo / "results/ext/figures/figMethods.png").stat().st_size > 0
    probes = (repo / "results/ext/tables/toy/probes.csv").read_text()
    assert "paired_only,barlow" in probes
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "ext.yaml")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Nothing to be done" in lint.stdout + lint.stderr, textwrap.shorten(lint.stdout, 2000)
