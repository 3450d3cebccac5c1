"""Every mistake caught before the GPU bill, and corrupt or concurrent state handled (issue #13).

Config errors fail in the dry run (``check_config``, the schema); corrupt checkpoints, encoders and datasets, a
second process on one run directory, Ctrl-C, bring-your-own folders and deterministic download failures each get
a message that names the file and what to do. The README's *Bad inputs* section lists what is checked when.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from configs import load
from torch import nn

from splicer.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_LOCKED, main
from splicer.config import validate_run_config
from splicer.data.build import build_data
from splicer.data.format import DatasetChangedError, load_dataset, save_dataset
from splicer.pipeline import paths as P
from splicer.pipeline.checks import check_config, entry_layouts
from splicer.registry import KINDS, Kind, Layout
from splicer.run import RunLocked, run_lock
from splicer.train import Preempted, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def demo() -> dict:
    return load("config.yaml")


# ======================================================================= 1. checked against declared layouts
def _exp(c: dict, name: str) -> dict:
    return c["experiments"][name]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (  # an evaluation set the entry does not build: failed only in the evaluate job, after every pretraining
            lambda c: _exp(c, "mnist_cifar")["evaluate"]["rNONE"].update(data="rNONEE"),
            r"experiments\.mnist_cifar\.evaluate\.rNONE\.data: 'rNONEE' \(did you mean 'rNONE'\?\) is not a dataset "
            r"of entry 'mnist_cifar'.*\['pretrain', 'pretrain_cifar_only', 'rNONE'",
        ),
        (
            lambda c: _exp(c, "orion")["components"]["CD8a"].update(channels=["CD8"]),
            r"experiments\.orion\.components\.CD8a: unknown channel 'CD8' \(did you mean 'CD8a'\?\)",
        ),
        (
            lambda c: _exp(c, "nct")["components"]["nuclei"].update(mask="nucleii"),
            r"experiments\.nct\.components\.nuclei: unknown mask 'nucleii' \(did you mean 'nuclei'\?\).*"
            r"masks come from its segmenter 'classical_nuclei'",
        ),
        (
            lambda c: _exp(c, "mnist_cifar")["components"]["cifar"].update(type="regoin"),
            r"components\.cifar: unknown component type 'regoin' \(did you mean 'region'\?\)",
        ),
        (
            lambda c: _exp(c, "mnist_cifar")["components"]["cifar"].update(colz=[0, 16]),
            r"components\.cifar: unknown key\(s\) \['colz'\] \(did you mean 'cols'\?\)",
        ),
        (
            lambda c: _exp(c, "mnist_cifar")["components"]["cifar"].update(rows=[16, 40]),
            r"components\.cifar: region rows=\[16, 40\] cols=\[0, 16\] lies outside an image of 32x16",
        ),
        (
            lambda c: _exp(c, "mnist_cifar")["components"]["cifar"].update(rows=[16.0, 32]),
            r"components\.cifar: rows must be \[start, stop\] \(two integers\)",
        ),
        (
            lambda c: _exp(c, "nct")["components"]["background"].update(invert="yes"),
            r"components\.background: invert must be true or false",
        ),
        (
            lambda c: _exp(c, "mnist_cifar")["components"].update(cifar={"type": "channels", "channels": "R"}),
            r"components\.cifar: channels must be a list",
        ),
        (  # a mask component on data without masks
            lambda c: _exp(c, "mnist_cifar")["components"].update(cifar={"type": "mask", "mask": "nuclei"}),
            r"components\.cifar: unknown mask 'nuclei'; the dataset has no masks",
        ),
        (
            lambda c: _exp(c, "nct")["components"].update(
                nuclei={"type": "chain", "steps": [{"type": "region", "rows": [0, 8]}, {"type": "mask", "mask": 0}]}
            ),
            r"components\.nuclei\.steps\[1\]: a mask step after a cropping region",
        ),
        (
            lambda c: _exp(c, "mnist_cifar").update(pretrain="pretrainn"),
            r"experiments\.mnist_cifar\.pretrain: 'pretrainn' \(did you mean 'pretrain'\?\) is not a dataset",
        ),
        (
            lambda c: c["datasets"]["mnist_cifar"].update(family="mnist_cifr"),
            r"datasets\.mnist_cifar\.family: unknown demo family 'mnist_cifr' \(did you mean 'mnist_cifar'\?\)",
        ),
        (
            lambda c: c["datasets"]["multiplex"]["params"].update(n_pretrian=10),
            r"datasets\.multiplex\.params: unknown parameter\(s\) \['n_pretrian'\] \(did you mean 'n_pretrain'\?\)",
        ),
        (
            lambda c: c["datasets"]["histology"]["params"].update(size=4),
            r"datasets\.histology\.params: parameter 'size' must be an int >= 8, got 4",
        ),
        (
            lambda c: c["datasets"]["xray"]["params"].update(pretrain_prevalence="high"),
            r"datasets\.xray\.params: parameter 'pretrain_prevalence' must be a number",
        ),
        (  # an encoder pretrained on 3 bands evaluated on 13
            lambda c: _exp(c, "eurosat_rgb")["evaluate"]["rgb"].update(data="bands13"),
            r"eurosat_rgb\.evaluate\.rgb\.data: dataset hyperspectral/bands13 has 13 channel\(s\).*pretrained on "
            r"hyperspectral/rgb with 3",
        ),
        (
            lambda c: _exp(c, "mnist_cifar").update(supervised=["cifar_onyl"]),
            r"experiments\.mnist_cifar\.supervised: 'cifar_onyl' \(did you mean 'cifar_only'\?\)",
        ),
        (
            lambda c: c["figures"]["fig2a"].update(dataset="mnist_cifar/rNON"),
            r"figures\.fig2a\.dataset: 'rNON' \(did you mean 'rNONE'\?\) is not a dataset of entry 'mnist_cifar'",
        ),
        (  # the segmenter gives lungs, the components ask for nuclei
            lambda c: c["datasets"]["histology"].update(segment={"segmenter": "classical_lungs"}),
            r"nct\.components\.nuclei: unknown mask 'nuclei'.*\['lungs'\].*segmenter 'classical_lungs'",
        ),
    ],
)
def test_config_errors_fail_before_any_job_naming_key_and_value(demo, edit, message):
    config = copy.deepcopy(demo)
    edit(config)
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_configs_pass_and_unusual_choices_are_noted(demo):
    assert check_config(demo) == []
    notes = check_config(load("paper.yaml"))
    assert len(notes) == 1 and "camelyon17/camelyon has 96x96 px images" in notes[0] and "224x224" in notes[0]


def test_a_folder_entry_declares_what_its_params_say_and_leaves_the_rest_to_the_build():
    spec = {"kind": "folder", "params": {"images": "x", "name": "tiles"}}
    assert entry_layouts(spec) == {"tiles": Layout(None, (), None)}
    spec["params"].update(channel_names=["R", "G", "B"], masks="m", mask_names=["nuclei"], size=[32, 48])
    assert entry_layouts(spec) == {"tiles": Layout(("R", "G", "B"), ("nuclei",), (32, 48))}
    spec["params"].pop("mask_names")
    assert entry_layouts(spec)["tiles"].masks is None  # masks given, names known after the build
    assert entry_layouts({**spec, "segment": {"segmenter": "truth"}})["tiles"].masks is None
    segmented = {**spec, "segment": {"segmenter": "hovernet", "fallback": "classical_nuclei"}}
    assert entry_layouts(segmented)["tiles"].masks == ("nuclei",)


@pytest.mark.parametrize("family", ["mnist_cifar", "multiplex", "hyperspectral", "histology", "xray"])
def test_demo_families_build_what_they_declare(tmp_path, family):
    """build_data compares every build with its kind's declared layout (checked here for each demo family)."""
    size = {"half_size": 8} if family == "mnist_cifar" else {"size": 8}
    params = {"n_pretrain": 4, "n_train": 4, "n_val": 2, "n_test": 2, **size}
    spec = {"kind": "demo", "family": family, "seed": 0, "params": params}
    build_data(spec, tmp_path)
    for name, layout in entry_layouts(spec).items():
        data = load_dataset(tmp_path / name)
        assert Layout(tuple(data.channel_names), tuple(data.mask_names), data.hw) == layout, name


def test_a_build_that_contradicts_its_declared_layout_fails(tmp_path, monkeypatch):
    wrong = f"{__name__}:_wrong_layout"
    monkeypatch.setitem(KINDS, "demo", Kind(None, None, (), None, KINDS["demo"].size, layout=wrong))
    spec = {"kind": "demo", "family": "xray", "params": {"n_pretrain": 4, "n_train": 4, "n_val": 2, "n_test": 2}}
    with pytest.raises(RuntimeError, match=r"pretrain: the 'demo' build wrote masks \['lungs'\] \(declared \[\]\)"):
        build_data({**spec, "params": {**spec["params"], "size": 8}}, tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def _wrong_layout(spec):
    return {"pretrain": Layout(("X-ray",), (), None)}


class _DarkNuclei:
    """A NucleusModel stand-in (splicer.pretrained_segmenters): dark pixels are nuclei."""

    mpp = 0.25

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return (batch.mean(axis=-1) < 110).astype(np.int32)

    def describe(self) -> dict:
        return {"source": "test"}


def test_declared_segmenter_masks_are_what_the_segmenters_write(tmp_path):
    from splicer.data.demo import make_histology, make_xray
    from splicer.pipeline.checks import _SEGMENTER_MASKS, segmented_masks
    from splicer.segment import segment_dataset

    small = {"n_pretrain": 2, "n_train": 2, "n_val": 2, "n_test": 2, "size": 16}
    runs = {
        "classical_nuclei": (make_histology, None),
        "classical_lungs": (make_xray, None),
        "hovernet": (make_histology, _DarkNuclei()),
    }
    for name, (make, model) in runs.items():
        src = make(tmp_path / name, **small)["pretrain"]
        record = segment_dataset(src, tmp_path / name / "seg", name, model=model)
        assert tuple(record["mask_names"]) == _SEGMENTER_MASKS[name] == segmented_masks({"segmenter": name})[0]
    assert segmented_masks({"segmenter": "hybridgnet", "options": {"masks": ["lungs", "heart"]}})[0] == (
        "lungs",
        "heart",
    )


# ======================================================================================= 2. numeric types
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["run_defaults"]["train"].update(epochs=1.5),
            r"config run_defaults: train\.epochs must be an "
            r"integer, got 1\.5 \(float\)",
        ),
        (
            lambda c: c["run_defaults"]["train"].update(epochs="ten"),
            r"run_defaults: train\.epochs must be an integer, "
            r"got 'ten' \(str\)",
        ),
        (lambda c: c["run_defaults"]["train"].update(lr="fast"), r"run_defaults: train\.lr must be a number"),
        (lambda c: c["run_defaults"]["train"].update(amp="no"), r"run_defaults: train\.amp must be true or false"),
        (lambda c: c["run_defaults"]["model"].update(embed_dim="256"), None),  # a numeric string: accepted
        (
            lambda c: c["run_defaults"]["model"].update(embed_dim=25.5),
            r"run_defaults: model\.embed_dim must be an "
            r"integer",
        ),
        (
            lambda c: c["run_defaults"]["model"]["encoder"].update(base_widht=4),
            r"run_defaults: unknown key\(s\) "
            r"\['base_widht'\] in model\.encoder",
        ),
        (
            lambda c: c["run_defaults"]["loss_options"]["vicreg"].update(sim_weigth=1),
            r"unknown option\(s\) "
            r"\['sim_weigth'\] in loss_options\.vicreg",
        ),
        (
            lambda c: _exp(c, "orion")["run_overrides"]["train"].update(batch_size="many"),
            r"config experiments\.orion"
            r"\.run_overrides: train\.batch_size must be an integer",
        ),
        (
            lambda c: _exp(c, "mnist_cifar")["runs"][0].update(overrides={"augment": {"p_hflip": "half"}}),
            r"experiments\.mnist_cifar\.runs\[0\]\.overrides: augment\.p_hflip must be a number",
        ),
    ],
)
def test_numbers_are_typed_with_the_key_path(demo, edit, message):
    config = copy.deepcopy(demo)
    edit(config)
    if message is None:
        check_config(config)
        return
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_1e_minus_3_is_the_number_every_user_means():
    raw = yaml.safe_load("train: {lr: 1e-3, epochs: 2.0, batch_size: 32.0, max_steps: 1e4}")
    assert raw["train"]["lr"] == "1e-3"  # PyYAML (YAML 1.1) reads it as a string
    cfg = validate_run_config(raw)
    assert cfg["train"]["lr"] == 0.001 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["epochs"] == 2 and isinstance(cfg["train"]["epochs"], int)
    assert cfg["train"]["batch_size"] == 32 and cfg["train"]["max_steps"] == 10_000
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg  # what the run_config rule writes
    with pytest.raises(ValueError, match=r"train\.epochs must be an integer, got 1\.5"):
        TrainConfig.from_dict({"epochs": 1.5})


# ================================================================================== 3. names and shell quoting
def _snakemake(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_a_name_carrying_a_shell_command_is_refused_by_the_dry_run(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('experiments:\n  mnist_cifar:\n    pretrain: "pretrain$(touch INJECTED)"\n')
    run = _snakemake(
        "-n", "-d", str(tmp_path), "--configfile", str(ROOT / "config" / "config.yaml"), str(bad), cwd=tmp_path
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "does not match '^[A-Za-z0-9_]+$'" in out and "pretrain$(touch INJECTED)" in out
    assert not (tmp_path / "INJECTED").exists() and not (tmp_path / "results").exists()


def test_every_value_in_a_shell_command_is_quoted():
    """Placeholders of every ``shell:`` are ``:q``-quoted, except the thread count and the argument strings that
    splicer.pipeline.paths quotes itself."""
    prequoted = {"threads", "params.args", "params.split", "params.evaluate"}
    for rules in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = rules.read_text()
        for block in re.findall(r"^    shell:\n((?:        \".*\"\n)+)", text, re.M):
            for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", block):
                name, _, spec = field.partition(":")
                assert spec == "q" or name in prequoted, f"{rules.name}: {{{field}}} is not quoted"


def test_argument_strings_survive_the_shell():
    config = {
        "name": "a b$(touch X)",
        "datasets": {"d": {"kind": "demo"}},
        "experiments": {
            "e": {
                "data": "d",
                "pretrain_split": "tr ain",
                "evaluate": {"x": {"data": "it's"}},
                "spectrum": ["x"],
                "correlate": [],
            }
        },
    }
    assert shlex.split(P.evaluate_args(config, "e")) == [
        "--eval",
        "x=results/a b$(touch X)/data/d/it's",
        "--spectrum",
        "x",
    ]
    assert shlex.split(P.split_flag(config, "e")) == ["--split", "tr ain"]


# ============================================================= 4. corrupt checkpoint.pt and encoder.pt, 6. SIGINT
N, C, S = 40, 2, 8  # batch 8 -> 5 steps per epoch


class Tiny(nn.Module):
    """The trainer protocol on a tiny encoder: MSE between two noisy views' embeddings plus a variance term."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        from splicer.encoders import build_encoder

        torch.manual_seed(seed)
        self.primary_encoder = build_encoder("resnet", C, S, base_width=4, blocks=[1])
        self.head = nn.Linear(self.primary_encoder.out_dim, 8)

    def training_loss(self, x, masks, generator):
        views = [x + 0.1 * torch.randn(x.shape, generator=generator) for _ in range(2)]
        z1, z2 = (self.head(self.primary_encoder(v)) for v in views)
        loss = (z1 - z2).pow(2).mean() + torch.relu(1.0 - z1.std(dim=0)).mean()
        return loss, {}


def _images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (N, C, S, S), dtype=np.uint8)


def _cfg() -> TrainConfig:
    return TrainConfig(
        epochs=3, batch_size=8, lr=1e-2, warmup_epochs=1, checkpoint_every=4, log_every=1, device="cpu", progress=False
    )


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = Tiny()
    out = tmp_path_factory.mktemp("ref")
    train(model, _images(), _cfg(), out)
    return model, out


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_a_checkpoint"])
def test_a_corrupt_checkpoint_is_set_aside_and_the_run_restarts(tmp_path, reference, caplog, damage):
    ref_model, ref_out = reference
    stop = Preempted  # a first run stopped at step 7 leaves a checkpoint, which is then damaged

    def at_7(step, loss):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(stop):
        train(Tiny(), _images(), _cfg(), tmp_path, hooks=at_7)
    ckpt = tmp_path / "checkpoint.pt"
    blob = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint\n" * 100)
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    model = Tiny()
    with caplog.at_level(logging.WARNING, logger="splicer.train"):
        summary = train(model, _images(), _cfg(), tmp_path)
    aside = list(tmp_path.glob("checkpoint.corrupt-*.pt"))
    assert len(aside) == 1, list(tmp_path.iterdir())
    assert "cannot be read" in caplog.text and aside[0].name in caplog.text and "from step 0" in caplog.text
    assert "weights_only=False" not in caplog.text  # torch's advice to run code from the file is never repeated
    assert summary["resumed_from_step"] is None and summary["steps"] == 15
    assert _same_weights(model, ref_model)  # a fresh run from the same initial weights
    assert (tmp_path / "metrics.csv").read_text() == (ref_out / "metrics.csv").read_text()


RUN = {
    "method": {"name": "baseline", "inputs": [], "loss": "vicreg"},
    "model": {"encoder": {"arch": "resnet", "base_width": 4, "blocks": [1]}, "projector_hidden": [16], "embed_dim": 16},
    "train": {"epochs": 1, "batch_size": 16, "progress": False, "device": "cpu", "warmup_epochs": 0},
}


def _dataset(path: Path, channels: int = 3, n: int = 48, hw: tuple[int, int] = (8, 8), labels=None) -> Path:
    rng = np.random.default_rng(0)
    meta = {
        "name": path.name,
        "channel_names": [f"c{i}" for i in range(channels)],
        "class_names": ["a", "b"],
        "split_names": ["train", "val", "test"],
        "mask_names": [],
    }
    y = (np.arange(n) % 2) if labels is None else labels
    return save_dataset(path, rng.integers(0, 256, (n, channels, *hw), dtype=np.uint8), y, np.arange(n) % 3, meta)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """A pretrained encoder of 3-channel 8x8 images (by the command line)."""
    root = tmp_path_factory.mktemp("enc")
    data = _dataset(root / "data")
    (root / "run.yaml").write_text(yaml.safe_dump(RUN))
    assert main(["pretrain", "--config", str(root / "run.yaml"), "--data", str(data), "--out", str(root / "run")]) == 0
    return root / "run" / "encoder.pt"


def test_a_truncated_encoder_exits_2_naming_it_and_the_fix(tmp_path, encoder, capsys):
    bad = tmp_path / "encoder.pt"
    bad.write_bytes(encoder.read_bytes()[:2000])
    data = _dataset(tmp_path / "data")
    code = main(["evaluate", "--encoder", str(bad), "--eval", f"x={data}", "--out", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert f"encoder {bad} cannot be read" in err and "truncated or corrupt" in err and "--forcerun" in err
    assert "weights_only" not in err and "Traceback" not in err


def test_evaluating_on_another_channel_count_names_both(tmp_path, encoder, capsys):
    data = _dataset(tmp_path / "bands", channels=13)
    code = main(["evaluate", "--encoder", str(encoder), "--eval", f"x={data}", "--out", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert f"encoder {encoder} cannot embed dataset {data}" in err
    assert "takes 3-channel images (8 px when trained)" in err and "have 13 channel(s) (13x8x8)" in err
    assert not (tmp_path / "e.json").exists()


def test_another_image_size_is_embedded_with_a_warning(tmp_path, encoder, caplog):
    from splicer.encoders import load_encoder
    from splicer.evaluate import embed

    images = np.zeros((2, 3, 16, 16), np.uint8)
    with caplog.at_level(logging.WARNING, logger="splicer.evaluate"):
        assert embed(load_encoder(encoder), images).shape[0] == 2
    assert "16x16 px given to an encoder trained on images of 8 px" in caplog.text


def test_sigint_checkpoints_then_stops_and_the_rerun_is_bitwise_identical(tmp_path, reference):
    ref_model, ref_out = reference

    def ctrl_c(step, loss):
        if step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Preempted) as info:
        train(Tiny(), _images(), _cfg(), tmp_path, hooks=ctrl_c)
    assert info.value.step == 7 and info.value.signum == signal.SIGINT and "SIGINT" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is before
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 7  # nothing lost
    resumed = Tiny(seed=5)
    assert train(resumed, _images(), _cfg(), tmp_path)["resumed_from_step"] == 7
    assert _same_weights(resumed, ref_model)
    assert (tmp_path / "metrics.csv").read_text() == (ref_out / "metrics.csv").read_text()


def test_ctrl_c_on_the_command_line_exits_130_without_a_traceback(tmp_path):
    data = _dataset(tmp_path / "data", n=64)
    cfg = {**RUN, "train": {**RUN["train"], "epochs": 10_000, "checkpoint_every": 0, "log_every": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "splicer.cli", "pretrain", "--config", str(tmp_path / "run.yaml")]
    proc = subprocess.Popen(
        [*cmd, "--data", str(data), "--out", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ((out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "stopped by SIGINT; checkpoint written at step" in err
    step = int(re.search(r"at step (\d+)", err).group(1))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step >= 3


# ======================================================================================== 5. run-directory lock
def test_a_second_process_on_a_run_directory_fails_and_changes_nothing(tmp_path):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "run"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(RUN))
    with run_lock(out, "first"):
        (out / "run_config.json").write_text("the first run's\n")
        cmd = [sys.executable, "-m", "splicer.cli", "pretrain", "--config", str(tmp_path / "run.yaml")]
        second = subprocess.run(
            [*cmd, "--data", str(data), "--out", str(out), "-s", "train.lr=0.002"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert second.returncode == EXIT_LOCKED, second.stderr
        assert f"run directory {out} is in use by pid {os.getpid()}" in second.stderr and "`first`" in second.stderr
        assert "Traceback" not in second.stderr
        assert (out / "run_config.json").read_text() == "the first run's\n"
        assert sorted(p.name for p in out.iterdir()) == [".lock", "run_config.json"]
        with pytest.raises(RunLocked, match="already in use by this process"), run_lock(out):
            pass
    with run_lock(out):  # released with the block
        pass


def test_the_supervised_ceiling_takes_the_lock_too(tmp_path):
    from splicer.run import supervised

    data = _dataset(tmp_path / "data")
    with run_lock(tmp_path / "sup"), pytest.raises(RunLocked):
        supervised(validate_run_config(RUN), data, tmp_path / "sup")


# ================================================================================ 8. datasets changed after a build
@pytest.fixture
def built(tmp_path) -> Path:
    spec = {"kind": "demo", "family": "histology", "seed": 0}
    spec["params"] = {"n_pretrain": 8, "n_train": 8, "n_val": 4, "n_test": 4, "size": 16}
    return build_data(spec, tmp_path / "data").parent


def test_the_manifest_records_sizes_and_sampled_checksums(built):
    arrays = json.loads((built / "manifest.json").read_text())["arrays"]
    assert sorted(arrays) == sorted(["eval", "pretrain", "shift", "pretrain_complex", "eval_complex", "shift_complex"])
    record = arrays["pretrain"]["images.npy"]
    assert record["bytes"] == (built / "pretrain" / "images.npy").stat().st_size
    assert len(record["sampled_blake2b"]) == 32
    assert set(arrays["pretrain"]) == {"images.npy", "labels.npy", "split.npy", "masks.npy"}
    load_dataset(built / "pretrain")  # unchanged: loads


def test_a_truncated_array_names_the_rule_to_rerun(built, monkeypatch):
    monkeypatch.chdir(built.parent)
    images = built / "pretrain" / "images.npy"
    with open(images, "r+b") as fh:
        fh.truncate(images.stat().st_size - 100)
    with pytest.raises(DatasetChangedError) as info:
        load_dataset(built / "pretrain")
    msg = str(info.value)
    assert msg.startswith("data/pretrain/images.npy has") and "truncated?" in msg
    assert "`snakemake --forcerun data/manifest.json <your target>` (rule build_data" in msg


def test_changed_contents_of_the_same_size_are_caught(built):
    labels = built / "eval" / "labels.npy"
    blob = bytearray(labels.read_bytes())
    blob[-1] ^= 1  # the last block is always sampled
    labels.write_bytes(bytes(blob))
    os.utime(built / "manifest.json")  # an edit keeps meta.json older than the manifest
    with pytest.raises(DatasetChangedError, match="has the size it was built with but other contents"):
        load_dataset(built / "eval")


def test_changed_masks_of_a_segmented_folder_name_the_segment_rule(built, tmp_path, monkeypatch):
    from splicer.segment import segment_manifest

    monkeypatch.chdir(tmp_path)
    segment_manifest(built / "manifest.json", tmp_path / "seg" / "manifest.json", "truth")
    load_dataset(tmp_path / "seg" / "eval")
    masks = tmp_path / "seg" / "eval" / "masks.npy"
    with open(masks, "r+b") as fh:
        fh.truncate(masks.stat().st_size - 1)
    with pytest.raises(DatasetChangedError, match=r"seg/manifest.json <your target>` \(rule segment"):
        load_dataset(tmp_path / "seg" / "eval")
    images = tmp_path / "seg" / "shift" / "images.npy"  # a link into the data folder: rebuild that
    with open(images.resolve(), "r+b") as fh:
        fh.truncate(images.stat().st_size - 1)
    with pytest.raises(DatasetChangedError, match=r"data/manifest.json <your target>` \(rule build_data"):
        load_dataset(tmp_path / "seg" / "shift")


def test_a_job_on_a_changed_dataset_exits_2(built, tmp_path, capsys):
    (built / "pretrain" / "split.npy").write_bytes(b"")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(RUN))
    argv = ["pretrain", "--config", str(tmp_path / "run.yaml"), "--data", str(built / "pretrain")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == EXIT_BAD_INPUT
    assert "split.npy has 0 bytes" in capsys.readouterr().err


def test_a_rebuild_over_an_old_manifest_is_not_mistaken_for_a_change(built):
    spec = {"kind": "demo", "family": "histology", "seed": 1}
    spec["params"] = {"n_pretrain": 6, "n_train": 8, "n_val": 4, "n_test": 4, "size": 16}
    build_data(spec, built)
    assert load_dataset(built / "pretrain").n == 6


# =============================================================================================== 9. folder kind
def _png_folder(root: Path, n: int = 6) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"t{i}.png")
    return root


def test_a_labels_csv_matching_no_image_fails_the_build(tmp_path):
    from splicer.data.real.common import BuildError

    images = _png_folder(tmp_path / "img")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"img_{i}.png,a\n" for i in range(6)))
    spec = {"kind": "folder", "params": {"images": str(images), "labels": str(labels)}}
    with pytest.raises(BuildError, match=r"labels\.csv: none of its 6 row\(s\) names an image.*'img_0\.png'.*'t0'"):
        build_data(spec, tmp_path / "out")
    labels.write_text("file,label\n")
    with pytest.raises(BuildError, match="labels CSV has no rows"):
        build_data(spec, tmp_path / "out")


def test_unmatched_rows_and_skipped_files_are_reported(tmp_path, caplog):
    images = _png_folder(tmp_path / "img")
    (images / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (images / "notes.txt").write_text("x")
    (images / ".DS_Store").write_text("x")
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"t{i}.png,{'ab'[i % 2]}\n" for i in range(6)) + "lost.png,a\nother.tif,b\n")
    spec = {"kind": "folder", "params": {"images": str(images), "labels": str(labels), "name": "mine"}}
    with caplog.at_level(logging.INFO, logger="splicer.data.real.folder"):
        build_data(spec, tmp_path / "out")
    info = load_dataset(tmp_path / "out" / "mine").meta["info"]
    assert info["label_rows_without_image"] == 2 and info["label_files_without_image"] == ["lost.png", "other.tif"]
    skipped = info["skipped_files"]
    assert skipped["dangling_links"] == {"count": 1, "names": ["gone.png"]}
    assert skipped["other_suffix"]["names"] == ["notes.txt"] and skipped["hidden"]["names"] == [".DS_Store"]
    assert "pointing to nothing: gone.png" in caplog.text
    assert "name no image (ignored): lost.png, other.tif" in caplog.text


def test_a_folder_name_must_be_usable_by_the_experiments():
    config = load("config.yaml")
    config["datasets"]["mine"] = {"kind": "folder", "params": {"images": "x", "name": "my tiles$(x)"}}
    with pytest.raises(ValueError, match=r"datasets\.mine\.params: .*plain name of letters, digits and _"):
        check_config(config)


def test_a_split_with_only_unlabelled_images_says_so(tmp_path, encoder, capsys):
    labels = np.where(np.arange(48) % 3 == 1, -1, np.arange(48) % 2)  # every val image is unlabelled
    data = _dataset(tmp_path / "data", labels=labels)
    code = main(["evaluate", "--encoder", str(encoder), "--eval", f"x={data}", "--out", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "split 'val' holds 16 image(s), none labelled (label -1)" in err and "0 samples" not in err


# =================================================================================================== 10. downloads
def test_every_failed_attempt_is_in_the_message(server, tmp_path, monkeypatch):
    from loopback import Route

    from splicer.data.download import DownloadError, fetch
    from splicer.data.sources import Archive

    monkeypatch.delenv("SPLICER_OFFLINE", raising=False)
    server.routes["/f.bin"] = Route(b"x" * 1000, status=503)
    archive = Archive("f.bin", server.url("/f.bin"), size=1000)
    with pytest.raises(DownloadError) as info:
        fetch(archive, tmp_path, retries=2, timeout=5, backoff=0.0)
    assert re.findall(r"attempt \d: HTTPError: HTTP Error 503", str(info.value)) == [
        "attempt 1: HTTPError: HTTP Error 503",
        "attempt 2: HTTPError: HTTP Error 503",
        "attempt 3: HTTPError: HTTP Error 503",
    ]


@pytest.mark.slow
def test_a_deterministic_download_failure_runs_once_and_its_log_keeps_why(tmp_path):
    """Offline, a pre-placed corrupt archive is moved aside (md5 mismatch) and a missing one says where to put it;
    neither job is rerun (even with --retries), so the logs keep the first and only message."""
    corrupt = "train-labels-idx1-ubyte.gz"
    (tmp_path / "resources" / "mnist_cifar").mkdir(parents=True)
    (tmp_path / "resources" / "mnist_cifar" / corrupt).write_bytes(b"not the labels")
    missing = "t10k-labels-idx1-ubyte.gz"
    targets = [f"resources/mnist_cifar/.verified/{f}.json" for f in (corrupt, missing)]
    run = _snakemake(
        *targets,
        "--cores",
        "1",
        "--keep-going",
        "--retries",
        "2",
        "--configfile",
        str(ROOT / "config" / "paper.yaml"),
        cwd=tmp_path,
        env={**ENV, "SPLICER_OFFLINE": "1"},
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Trying to restart" not in out
    log = (tmp_path / "logs" / "download" / "mnist_cifar" / f"{corrupt}.log").read_text()
    assert "md5 mismatch" in log and "moved it aside" in log
    assert (tmp_path / "resources" / "mnist_cifar" / f"{corrupt}.corrupt").exists()
    log = (tmp_path / "logs" / "download" / "mnist_cifar" / f"{missing}.log").read_text()
    assert "is missing and downloads are off" in log


# ================================================================================= 11. README: what is checked when
def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {title}\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_the_readme_says_what_is_checked_when():
    section = _section("Bad inputs")
    for stage in ("Dry run", "Build", "Job"):
        assert f"**{stage}" in section, stage
    for fact in ("CD8a", "checkpoint.corrupt-", "--forcerun", "fcntl", "NFS", "Lustre", "labels CSV", "retries"):
        assert fact in section, fact
    assert re.search(r"weight files are code", section, re.I) and "trusted source" in section and "sha256" in section


def test_examples_put_the_target_before_configfile():
    """``--configfile`` takes several files: a target written after it is read as one more config file. Every
    ``snakemake ... --configfile`` command shown lists only config files after it, and a target before it."""
    files = [ROOT / "README.md", ROOT / "Snakefile", *(ROOT / "config").rglob("*.yaml"), ROOT / "slurm" / "config.yaml"]
    commands = 0
    for path in files:
        for line in path.read_text().splitlines():
            for command in re.findall(r"\bsnakemake\b([^`()#\n]*)", line):
                if "--configfile" not in command:
                    continue
                commands += 1
                head, _, tail = command.partition("--configfile")
                after = re.split(r"\s+-", " " + tail)[0].split()
                assert after and all(w.endswith((".yaml", ".yml", ".json")) for w in after), f"{path.name}: {line}"
                words = head.split()
                targets = [w for i, w in enumerate(words) if not w.startswith("-") and not _is_value(words, i)]
                assert targets, f"{path.name}: show the target before --configfile: {line.strip()}"
    assert commands >= 3


def _is_value(words: list[str], i: int) -> bool:
    """Whether ``words[i]`` is the value of the option before it (``--cores 2``, ``--profile slurm``)."""
    return i > 0 and words[i - 1] in ("--cores", "-c", "--profile", "-d", "--directory", "-j", "--jobs")
