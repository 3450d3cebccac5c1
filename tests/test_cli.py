"""The `splicer` command: one step by hand, with clear errors and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from splicer.cli import EXIT_BAD_INPUT, main
from splicer.data.format import save_dataset

RUN = {
    "method": {"name": "splicer", "inputs": ["top", "bottom"], "loss": "vicreg"},
    "components": {"top": {"type": "region", "rows": [0, 8]}, "bottom": {"type": "region", "rows": [8, 16]}},
    "model": {"encoder": {"arch": "resnet", "base_width": 4, "blocks": [1]}, "projector_hidden": [16], "embed_dim": 16},
    "train": {"epochs": 1, "batch_size": 16, "progress": False, "device": "cpu", "warmup_epochs": 0},
}


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    n = 48
    images = rng.integers(0, 256, (n, 3, 16, 8), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.int64)
    images[labels == 1, :, 8:] //= 4  # a learnable difference
    meta = {
        "name": "tiny",
        "channel_names": ["r", "g", "b"],
        "class_names": ["a", "b"],
        "split_names": ["train", "val", "test"],
        "mask_names": [],
    }
    save_dataset(tmp_path / "data", images, labels, (np.arange(n) % 3).astype(np.uint8), meta)
    return tmp_path / "data"


def test_pretrain_then_evaluate_by_hand(tmp_path, data, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(RUN))
    assert main(["pretrain", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "encoder.pt").exists()
    out = tmp_path / "evaluation.json"
    code = main(
        [
            "evaluate",
            "--encoder",
            str(tmp_path / "run" / "encoder.pt"),
            "--eval",
            f"tiny={data}",
            "--spectrum",
            "tiny",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert 0 <= result["probes"]["tiny"]["accuracy"] <= 1 and result["spectra"]["tiny"][0] == pytest.approx(1.0)


def test_bad_config_key_exits_2_naming_it(tmp_path, data, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**RUN, "train": {**RUN["train"], "epoch": 3}}))
    code = main(["pretrain", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run")])
    assert code == EXIT_BAD_INPUT
    assert "epoch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_override_and_missing_dataset(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(RUN))
    code = main(
        [
            "pretrain",
            "--config",
            str(cfg),
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "r"),
            "-s",
            "train.epochs=2",
        ]
    )
    assert code == EXIT_BAD_INPUT
    assert "nowhere" in capsys.readouterr().err


def test_checkpoint_of_another_config_or_rebuilt_data_is_set_aside(tmp_path, data):
    """Resume only the same run on the same data; a stale checkpoint is kept aside, never silently reused."""
    import os

    from splicer.config import load_run_config
    from splicer.run import pretrain

    out = tmp_path / "run"
    cfg = load_run_config(RUN)
    pretrain(cfg, data, out)
    first = (out / "encoder.pt").read_bytes()
    pretrain(cfg, data, out)  # same run, same data: the finished checkpoint is reused
    assert not list(out.glob("checkpoint.stale-*.pt"))
    assert (out / "encoder.pt").read_bytes() == first

    other = load_run_config({**RUN, "augment": {"p_hflip": 1.0}})
    pretrain(other, data, out)  # another config: set aside, trained afresh
    assert len(list(out.glob("checkpoint.stale-*.pt"))) == 1

    labels = data / "labels.npy"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))  # the data were rebuilt
    pretrain(other, data, out)
    assert len(list(out.glob("checkpoint.stale-*.pt"))) == 2  # both kept, even within the same second


def test_supervised_ceiling_runs_through_the_trainer_and_resumes(tmp_path, data):
    """The supervised ceiling is the pretraining trainer with labels: checkpoints, metrics and a pre-empted run
    that resumes ends with the same result as an uninterrupted one."""
    import signal

    from splicer import run
    from splicer.config import validate_run_config
    from splicer.train import Preempted

    cfg = validate_run_config({**RUN, "train": {**RUN["train"], "epochs": 3, "checkpoint_every": 0}})
    whole = run.supervised(cfg, data, tmp_path / "whole", seed=1)
    assert {"checkpoint.pt", "metrics.csv", "metrics.json", "encoder.pt", "result.json"} <= {
        p.name for p in (tmp_path / "whole").iterdir()
    }
    assert 0 <= whole["accuracy"] <= 1 and 0 <= whole["best_epoch"] < 3 and whole["n_train"] == 16

    class Interrupt:
        def on_step_end(self, step, loss):
            if step == 2:
                signal.raise_signal(signal.SIGUSR1)

    from splicer import train as train_module

    real_train = train_module.train

    def interrupted(*args, hooks=None, **kwargs):
        return real_train(*args, hooks=[hooks, Interrupt()], **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(train_module, "train", interrupted), pytest.raises(Preempted):
        run.supervised(cfg, data, tmp_path / "resumed", seed=1)
    assert not (tmp_path / "resumed" / "result.json").exists()
    resumed = run.supervised(cfg, data, tmp_path / "resumed", seed=1)
    assert resumed == whole


def test_pretrain_with_inline_config_then_evaluate_in_the_same_process(tmp_path, data, capsys):
    """What the pipeline runs with evaluate_with_pretraining: --config-json, then --evaluate-out; the evaluation
    equals `splicer evaluate` run afterwards on the same encoder."""
    import json as _json

    out = tmp_path / "run"
    code = main(
        [
            "pretrain",
            "--config-json",
            _json.dumps(RUN),
            "--data",
            str(data),
            "--out",
            str(out),
            "--eval",
            f"tiny={data}",
            "--spectrum",
            "tiny",
            "--evaluate-out",
            str(tmp_path / "fused.json"),
        ]
    )
    assert code == 0
    fused = json.loads((tmp_path / "fused.json").read_text())
    assert (
        main(
            [
                "evaluate",
                "--encoder",
                str(out / "encoder.pt"),
                "--eval",
                f"tiny={data}",
                "--spectrum",
                "tiny",
                "--out",
                str(tmp_path / "separate.json"),
                "--seed",
                "0",
            ]
        )
        == 0
    )
    assert fused == json.loads((tmp_path / "separate.json").read_text())
    assert json.loads((out / "run_config.json").read_text())["method"]["name"] == "splicer"
    capsys.readouterr()
    assert main(["pretrain", "--config-json", "{not json", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "--config-json is not valid JSON" in capsys.readouterr().err
    assert (
        main(
            [
                "pretrain",
                "--config-json",
                "{}",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "y"),
                "--evaluate-out",
                str(tmp_path / "e.json"),
            ]
        )
        == 2
    )
    assert "--evaluate-out and --eval go together" in capsys.readouterr().err
