"""Tests for splicer.train (resume, preemption, NaN handling, outputs) and splicer.optim."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from splicer.encoders import build_encoder, load_encoder
from splicer.optim import LARS, build_optimizer, warmup_cosine
from splicer.train import NonFiniteLossError, Preempted, TrainConfig, train

N, C, S = 40, 2, 8  # 40 images, batch 8 -> 5 steps per epoch


class ToyModel(nn.Module):
    """Implements the trainer protocol: MSE between embeddings of two noisy views, plus a variance term."""

    def __init__(self, init_seed: int = 0, nan_at_call: int | None = None, expect_masks: int | None = None):
        super().__init__()
        torch.manual_seed(init_seed)
        self.primary_encoder = build_encoder("resnet", C, S, base_width=4, blocks=[1])
        self.head = nn.Linear(self.primary_encoder.out_dim, 8)
        self.calls = 0
        self.nan_at_call = nan_at_call
        self.expect_masks = expect_masks

    def training_loss(self, x, masks, generator):
        self.calls += 1
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        if self.expect_masks is None:
            assert masks is None
        else:
            assert masks.dtype == torch.float32 and masks.shape == (x.shape[0], self.expect_masks, S, S)
            x = x * (0.5 + 0.5 * masks[:, :1])
        views = [x + 0.1 * torch.randn(x.shape, generator=generator, device=x.device) for _ in range(2)]
        z1, z2 = (self.head(self.primary_encoder(v)) for v in views)
        mse = F.mse_loss(z1, z2)
        var = F.relu(1.0 - z1.std(dim=0)).mean()
        loss = mse + var
        if self.nan_at_call == self.calls:
            loss = loss * float("nan")
        return loss, {"mse": mse.detach(), "var": var.detach()}


def _images(dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, np.iinfo(dtype).max, size=(N, C, S, S), dtype=dtype)


def _cfg(**kw) -> TrainConfig:
    base = {
        "epochs": 3,
        "batch_size": 8,
        "lr": 1e-2,
        "warmup_epochs": 1,
        "checkpoint_every": 4,
        "log_every": 1,
        "device": "cpu",
        "progress": False,
    }
    return TrainConfig(**{**base, **kw})


class Hook:
    def __init__(self, fn):
        self.fn = fn

    def on_step_end(self, step, loss):
        self.fn(step, loss)


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs per optimizer, computed once."""
    cache = {}

    def get(optimizer: str):
        if optimizer not in cache:
            out = tmp_path_factory.mktemp(f"ref_{optimizer}")
            model = ToyModel()
            summary = train(model, _images(), _cfg(optimizer=optimizer), out)
            cache[optimizer] = (model, out, summary)
        return cache[optimizer]

    return get


@pytest.mark.parametrize(("sig", "optimizer"), [(signal.SIGTERM, "adamw"), (signal.SIGUSR1, "lars")])
def test_resume_after_signal_is_bitwise_identical(tmp_path, reference, caplog, sig, optimizer):
    ref_model, ref_out, ref_summary = reference(optimizer)
    assert ref_summary["steps"] == 15 and ref_summary["resumed_from_step"] is None
    k = 7

    def send(step, loss):
        if step == k:
            os.kill(os.getpid(), sig)

    before = signal.getsignal(sig)
    with pytest.raises(Preempted) as info:
        train(ToyModel(), _images(), _cfg(optimizer=optimizer), tmp_path, hooks=Hook(send))
    assert info.value.step == k
    assert signal.getsignal(sig) is before
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == k and ckpt["config"]["optimizer"] == optimizer
    assert not (tmp_path / "metrics.json").exists()

    resumed = ToyModel(init_seed=123)  # different init: the weights must come from the checkpoint
    with caplog.at_level(logging.WARNING, logger="splicer.train"):
        summary = train(resumed, _images(), _cfg(optimizer=optimizer), tmp_path)
    assert "resuming" in caplog.text and f"step {k}" in caplog.text
    assert summary["resumed_from_step"] == k and summary["steps"] == 15
    _assert_same_weights(resumed, ref_model)
    assert (tmp_path / "metrics.csv").read_text() == (ref_out / "metrics.csv").read_text()
    assert summary["final_loss"] == ref_summary["final_loss"]


def test_resume_after_crash_truncates_metrics_csv(tmp_path, reference):
    """A hard crash at step 6 leaves checkpoint step 4 and CSV rows 1..6; the resumed run drops rows 5-6."""
    ref_model, ref_out, _ = reference("adamw")

    def crash(step, loss):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(ToyModel(), _images(), _cfg(), tmp_path, hooks=crash)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
    assert (tmp_path / "metrics.csv").read_text().splitlines()[-1].startswith("6,")
    resumed = ToyModel(init_seed=7)
    assert train(resumed, _images(), _cfg(), tmp_path)["resumed_from_step"] == 4
    _assert_same_weights(resumed, ref_model)
    assert (tmp_path / "metrics.csv").read_text() == (ref_out / "metrics.csv").read_text()


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    snapshot = {}

    def grab(step, loss):  # the hook runs before the periodic checkpoint of its step
        if step == 5:
            snapshot["bytes"] = (tmp_path / "checkpoint.pt").read_bytes()

    before = signal.getsignal(signal.SIGTERM)
    expected = r"non-finite loss nan at step 6; last good checkpoint kept at .*checkpoint\.pt"
    with pytest.raises(NonFiniteLossError, match=expected):
        train(ToyModel(nan_at_call=6), _images(), _cfg(), tmp_path, hooks=[Hook(grab)])
    assert signal.getsignal(signal.SIGTERM) is before
    path = tmp_path / "checkpoint.pt"
    assert path.read_bytes() == snapshot["bytes"]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 4
    ToyModel().load_state_dict(ckpt["model"])
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "encoder.pt").exists()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,lr,loss") and rows[-1].startswith("5,")


def test_nan_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"inf|nan") as info:
        train(ToyModel(nan_at_call=1), _images(), _cfg(), tmp_path)
    assert "step 1" in str(info.value) and "not written yet" in str(info.value)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_checkpoints_metrics_and_encoder_written(tmp_path):
    seen = []

    def record(step, loss):
        path = tmp_path / "checkpoint.pt"
        if path.exists():
            seen.append(torch.load(path, weights_only=True)["step"])

    masks = (np.random.default_rng(1).random((N, 3, S, S)) > 0.5).astype(np.uint8)
    model = ToyModel(expect_masks=3)
    summary = train(
        model, _images(np.uint16), _cfg(checkpoint_every=4, log_every=2), tmp_path, masks=masks, hooks=record
    )
    assert sorted(set(seen)) == [4, 8, 12]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 15
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    keys = {"steps", "epochs", "final_loss", "images_per_s", "wall_s", "device", "processes", "resumed_from_step"}
    keys.add("precision")
    assert set(metrics) == keys and metrics["processes"] == 1
    assert metrics == summary
    assert metrics["steps"] == 15 and metrics["epochs"] == 3 and metrics["device"] == "cpu"
    assert np.isfinite(metrics["final_loss"]) and metrics["images_per_s"] > 0
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,lr,loss,mse,var"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [2, 4, 6, 8, 10, 12, 14, 15]
    encoder = load_encoder(tmp_path / "encoder.pt")
    _assert_same_weights(encoder, model.primary_encoder)
    # Calling again on a finished run resumes at the end and changes nothing.
    again = train(
        ToyModel(expect_masks=3), _images(np.uint16), _cfg(checkpoint_every=4, log_every=2), tmp_path, masks=masks
    )
    assert again["steps"] == 15 and again["final_loss"] == summary["final_loss"]


def test_max_steps_and_resume_config_mismatch(tmp_path):
    summary = train(ToyModel(), _images(), _cfg(max_steps=3), tmp_path)
    assert summary["steps"] == 3
    with pytest.raises(ValueError, match=r"lr=0\.01.*lr=0\.02"):
        train(ToyModel(), _images(), _cfg(max_steps=3, lr=2e-2), tmp_path)
    with pytest.raises(ValueError, match="batch_size=8 but this run has batch_size=4"):
        train(ToyModel(), _images(), _cfg(max_steps=3, batch_size=4), tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3


def test_signal_handlers_restored(tmp_path):
    def custom(signum, frame):
        pass

    old = signal.signal(signal.SIGUSR1, custom)
    try:
        before_term = signal.getsignal(signal.SIGTERM)
        train(ToyModel(), _images(), _cfg(max_steps=2), tmp_path)
        assert signal.getsignal(signal.SIGUSR1) is custom
        assert signal.getsignal(signal.SIGTERM) is before_term
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_train_config_from_dict():
    cfg = TrainConfig.from_dict({"epochs": 2, "optimizer": "LARS"})
    assert cfg.epochs == 2 and cfg.optimizer == "lars" and cfg.batch_size == 256
    with pytest.raises(ValueError, match="bogus_key"):
        TrainConfig.from_dict({"epochs": 2, "bogus_key": 1})
    with pytest.raises(ValueError, match="'adamx'"):
        TrainConfig(optimizer="adamx")


def test_warmup_cosine_schedule():
    total, warm, base, low = 100, 10, 1.0, 0.1
    lrs = [warmup_cosine(s, total, warm, base, low) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(base / warm) and lrs[0] > 0
    assert lrs[warm - 1] == pytest.approx(base) and max(lrs) == pytest.approx(base)
    assert all(a < b for a, b in itertools.pairwise(lrs[:warm]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[warm:]))
    assert lrs[total] == pytest.approx(low) and low < lrs[total - 1] < low + 1e-3
    assert warmup_cosine(5, 10, 0, 2.0, 0.0) == pytest.approx(1.0)  # no warm-up: half-way cosine


def test_lars_trust_ratio_and_quadratic():
    p = nn.Parameter(torch.ones(2, 2))
    opt = LARS([p], lr=1.0, momentum=0.0, weight_decay=0.0)
    p.grad = torch.full((2, 2), 2.0)
    opt.step()
    # trust = eta * ||p|| / ||g|| = 0.02 * 2 / 4 = 0.01 (< 1 after clipping by lr=1) -> p - 0.01 * g
    assert torch.allclose(p, torch.full((2, 2), 0.98))

    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    target_w, target_b = torch.randn(4, 4), torch.randn(4)

    def loss_fn():
        return ((model.weight - target_w) ** 2).sum() + ((model.bias - target_b) ** 2).sum()

    cfg = types.SimpleNamespace(optimizer="lars", lr=0.5, weight_decay=0.0, momentum=0.9)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, LARS)
    start = float(loss_fn().detach())
    for _ in range(100):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert float(loss_fn().detach()) < 0.05 * start


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_build_optimizer_excludes_bias_and_norm_from_decay(name):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, _cfg(optimizer=name, weight_decay=0.05))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(model[0].weight)] == 0.05
    for p in (model[0].bias, model[1].weight, model[1].bias):
        assert decay[id(p)] == 0.0
    assert len(decay) == 4


def test_build_optimizer_unknown_name():
    with pytest.raises(ValueError, match="'adam'"):
        build_optimizer(nn.Linear(2, 2), types.SimpleNamespace(optimizer="adam", lr=1e-3, weight_decay=0.0))


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="float32"):
        train(ToyModel(), _images().astype(np.float32), _cfg(), tmp_path)
    with pytest.raises(ValueError, match="batch_size=64"):
        train(ToyModel(), _images(), _cfg(batch_size=64), tmp_path)
    with pytest.raises(ValueError, match="masks"):
        train(ToyModel(), _images(), _cfg(), tmp_path, masks=np.zeros((N, 1, 4, 4), np.uint8))
    assert not Path(tmp_path / "checkpoint.pt").exists()


class _AutocastProbe(ToyModel):
    """Records whether the forward pass ran under CPU bf16 autocast."""

    seen: list[bool]

    def training_loss(self, x, masks, generator):
        self.seen = [*getattr(self, "seen", []), torch.is_autocast_enabled("cpu")]
        return super().training_loss(x, masks, generator)


@pytest.mark.parametrize(("cpu_amp", "native", "expected"), [(False, True, False), (True, False, True)])
def test_cpu_amp_reaches_the_step(tmp_path, monkeypatch, cpu_amp, native, expected):
    import splicer.train as T

    monkeypatch.setattr(T, "cpu_has_native_bf16", lambda: native)
    model = _AutocastProbe()
    summary = train(model, _images(), _cfg(epochs=1, cpu_amp=cpu_amp), tmp_path)
    assert model.seen == [expected] * 5 and np.isfinite(summary["final_loss"])
    assert summary["precision"] == ("bf16 autocast" if expected else "fp32")
    encoder = torch.load(tmp_path / "encoder.pt", weights_only=True)["encoder_state"]
    assert all(t.dtype in (torch.float32, torch.int64) for t in encoder.values())  # weights stay fp32


def test_cpu_amp_auto_follows_the_cpu_and_cuda_follows_amp(monkeypatch):
    import splicer.train as T

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(T, "cpu_has_native_bf16", lambda native=native: native)
        assert T.use_autocast(_cfg(cpu_amp="auto"), cpu) is native
        assert T.use_autocast(_cfg(cpu_amp="auto", amp=False), cuda) is False
        assert T.use_autocast(_cfg(cpu_amp=False, amp=True), cuda) is True
    assert isinstance(T.cpu_has_native_bf16(), bool)
    with pytest.raises(ValueError, match="cpu_amp must be true, false or 'auto', got 'yes'"):
        _cfg(cpu_amp="yes")
    assert TrainConfig.from_dict({"cpu_amp": "auto"}).cpu_amp == "auto"
