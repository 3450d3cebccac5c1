"""A real-data Snakemake run on fixtures: MNIST and CIFAR-10 archives in their upstream formats, served over
127.0.0.1, downloaded by the ``download`` rule, verified, built, pre-trained on and probed; then the same config
offline from pre-placed archives, and offline with an archive missing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from loopback import serve_files
from test_real_mnist_cifar import fixture_labels, write_archives
from test_workflow import ROOT, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RUN_DEFAULTS = {
    "model": {"encoder": {"arch": "resnet", "base_width": 4, "blocks": [1]}, "projector_hidden": [32], "embed_dim": 64},
    "augment": {"crop_scale": [0.6, 1.0], "p_hflip": 0.0},
    "train": {
        "epochs": 1,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 0.002,
        "warmup_epochs": 0,
        "checkpoint_every": 100,
        "progress": False,
    },
}


def fixture_config(mirror: str, checksums: dict[str, str]) -> dict:
    """A paper-shaped config on the fixture archives: real kind ``mnist_cifar``, a mirror and pinned digests."""
    return {
        "name": "fixture",
        "device": "cpu",
        "seeds": [0],
        "losses": ["vicreg"],
        "run_defaults": RUN_DEFAULTS,
        "datasets": {
            "mnist_cifar": {
                "kind": "mnist_cifar",
                "source": {"mirror": mirror, "checksums": checksums},
                "caps": {"*": 96},
            },
        },
        "experiments": {
            "mnist_cifar": {
                "data": "mnist_cifar",
                "pretrain": "pretrain",
                "components": {
                    "mnist": {"type": "region", "rows": [0, 32]},
                    "cifar": {"type": "region", "rows": [32, 64]},
                },
                "pairings": {"none": [], "cifar": ["cifar"]},
                "runs": [
                    {"method": "baseline", "pairing": "none"},
                    {"method": "splicer", "pairing": "cifar", "options": {"include_view": True}},
                ],
                "evaluate": {v: {"data": v, "task": "mnist_cifar", "variant": v} for v in ("rNONE", "rMNIST")},
            }
        },
        "figures": {"fig2a": {"dataset": "mnist_cifar/rNONE"}},
    }


def run_fixture(workdir: Path, config: dict, *targets: str, env: dict | None = None):
    path = workdir / "fixture.yaml"
    path.write_text(yaml.safe_dump(config))
    old = dict(os.environ)
    try:
        os.environ.update(env or {})
        return snakemake(*targets, "--cores", "2", "-d", str(workdir), "--configfile", str(path), cwd=ROOT, timeout=500)
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_download_build_pretrain_probe_then_offline(tmp_path: Path, server) -> None:
    archives = write_archives(tmp_path / "upstream", fixture_labels())
    urls = serve_files(server, archives, prefix="/mirror/")
    sums = {name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for name, p in archives.items()}
    config = fixture_config(server.url("/mirror/"), sums)
    targets = ("results/fixture/tables/mnist_cifar/probes.csv", "results/fixture/figures/fig2a.png")

    online = tmp_path / "online"
    online.mkdir()
    run = run_fixture(online, config, *targets, env={"SPLICER_OFFLINE": "0"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for name, url in urls.items():  # every archive came over HTTP from the mirror and is the served file
        assert any(path == url.removeprefix(server.url("")) for path, _ in server.requests), name
        assert (online / "resources" / "mnist_cifar" / name).read_bytes() == archives[name].read_bytes()
        record = json.loads((online / "resources" / "mnist_cifar" / ".verified" / f"{name}.json").read_text())
        assert record["sha256"] == sums[name].removeprefix("sha256:")
    manifest = json.loads((online / "results/fixture/data/mnist_cifar/manifest.json").read_text())
    assert manifest["kind"] == "mnist_cifar" and "rMNIST" in manifest["datasets"] and manifest["caps"] == {"*": 96}
    probes = pd.read_csv(online / targets[0])
    acc = probes[probes.metric == "accuracy"]
    assert set(acc.method) == {"baseline", "splicer"} and set(acc.variant) == {"rNONE", "rMNIST"}
    assert acc.value.between(0, 1).all()
    # rNONE: both halves carry the label and the fixture's digits are constant blocks, so even one epoch of a
    # 4-wide ResNet separates the classes far above chance.
    assert acc[acc.variant == "rNONE"].value.min() > 0.8

    # Offline, archives copied into resources/ by hand (old timestamps, as `cp -p` keeps them): verified, used
    # and never deleted, nothing fetched.
    offline = tmp_path / "offline"
    shutil.copytree(online / "resources", offline / "resources", ignore=shutil.ignore_patterns(".verified"))
    for placed in (offline / "resources/mnist_cifar").iterdir():
        os.utime(placed, (1e9, 1e9))
    served = len(server.requests)
    run = run_fixture(offline, config, targets[0], env={"SPLICER_OFFLINE": "1"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert len(server.requests) == served
    pd.testing.assert_frame_equal(pd.read_csv(offline / targets[0]), probes)  # deterministic
    assert sorted(p.name for p in (offline / "resources/mnist_cifar").glob("*.gz")) == sorted(archives)

    # Offline with one archive missing: fails before building, says what to fetch and where to put it.
    missing = tmp_path / "missing"
    shutil.copytree(online / "resources", missing / "resources", ignore=shutil.ignore_patterns(".verified"))
    (missing / "resources/mnist_cifar/cifar-10-python.tar.gz").unlink()
    run = run_fixture(missing, config, targets[0], env={"SPLICER_OFFLINE": "1"})
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "cifar-10-python.tar.gz" in out and str(missing / "resources/mnist_cifar") in out
    assert not (missing / "results/fixture/data/mnist_cifar/manifest.json").exists()

    # In place: torchvision's root (MNIST/raw/*.gz and the cifar tarball it keeps), named by source.path and read
    # where it is: the download rule only verifies it (offline, nothing fetched or copied) and the build matches.
    torchvision = tmp_path / "torchvision"
    (torchvision / "MNIST" / "raw").mkdir(parents=True)
    for name, path in archives.items():
        shutil.copy(path, torchvision / ("MNIST/raw" if name.endswith("-ubyte.gz") else "") / name)
    in_place = tmp_path / "in_place"
    in_place.mkdir()
    config["datasets"]["mnist_cifar"]["source"] = {"path": str(torchvision), "checksums": sums}
    manifest = "results/fixture/data/mnist_cifar/manifest.json"
    run = run_fixture(in_place, config, manifest, env={"SPLICER_OFFLINE": "1"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert len(server.requests) == served
    assert [p.name for p in (in_place / "resources/mnist_cifar").iterdir()] == [".verified"]  # nothing copied
    record = json.loads((in_place / "resources/mnist_cifar/.verified/cifar-10-python.tar.gz.json").read_text())
    assert record["path"] == str(torchvision / "cifar-10-python.tar.gz")
    for name in ("rNONE", "pretrain"):
        a, b = (root / f"results/fixture/data/mnist_cifar/{name}/images.npy" for root in (online, in_place))
        assert a.read_bytes() == b.read_bytes()
