"""Pre-training loop: reproducible, resumable, preemption-safe.

:func:`train` drives any model implementing ``training_loss(x, masks, generator) -> (loss, metrics)`` and
``primary_encoder`` (see :mod:`splicer.methods`). Everything random is derived from ``cfg.seed`` and the step:

* the sample order of epoch ``e`` comes from a CPU ``torch.Generator`` seeded with ``seed * 1000003 + e``;
* the augmentation generator of global step ``s`` is a ``torch.Generator`` on the training device seeded from
  ``(seed, s)``;

so no RNG state is checkpointed and a run resumed from ``checkpoint.pt`` on the CPU ends with weights
bitwise equal to an uninterrupted one. SIGTERM / SIGUSR1 (SLURM preemption) and SIGINT (Ctrl-C) finish the
current step, write a checkpoint and raise :class:`Preempted` (a second Ctrl-C stops at once, the last checkpoint
kept). A ``checkpoint.pt`` that cannot be read (truncated, corrupt) is moved aside to
``checkpoint.corrupt-<time>.pt`` and training restarts from step 0, with a warning. Model initialisation (seeding
the weights) is the caller's job.

Several processes (an open ``torch.distributed`` process group: :mod:`splicer.distributed`) train one run
data-parallel: every rank takes its slice of the same global batches (``batch_size`` is the global batch), the
losses and batch statistics see the global batch, rank 0 writes every file, every rank resumes from the same
checkpoint, and a signal reaching any rank stops all of them after the same step (they agree on it in the
step's all-reduce). The number of processes does not change the trajectory, so a run may resume on another
number of processes. The step itself (eager, or one CUDA graph on a single GPU) is :mod:`splicer.step`.

Step numbering: ``step`` in ``metrics.csv``, hooks, checkpoints and messages is the number of optimiser steps
completed (1-based); a checkpoint at step ``s`` holds the weights after ``s`` updates.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import logging
import math
import os
import signal
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from splicer.data.format import value_scale
from splicer.distributed import Group
from splicer.encoders import save_encoder
from splicer.fileio import write_atomic, write_json
from splicer.optim import OPTIMIZERS, build_optimizer, warmup_cosine
from splicer.step import MODES, eager_state_dict, make_step

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
ENCODER = "encoder.pt"
# Config keys whose change would alter the trajectory; a resume with different values is refused.
RESULT_KEYS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "warmup_epochs",
    "min_lr_ratio",
    "seed",
    "max_steps",
)
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))


class Preempted(RuntimeError):
    """Training stopped by SIGTERM/SIGUSR1/SIGINT (``signum``) after writing a checkpoint at ``step``; rerun to
    resume."""

    def __init__(self, step: int, path: str | os.PathLike[str] | None = None, signum: int | None = None) -> None:
        self.step = step
        self.path = path
        self.signum = signum
        name = signal.Signals(signum).name if signum is not None else "a signal"
        super().__init__(
            f"training stopped by {name}; checkpoint written at step {step}"
            + (f" to {path}" if path is not None else "")
            + "; rerun the same command to resume"
        )


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; raised before the backward pass, nothing was written for that step."""


@dataclass
class TrainConfig:
    """Optimisation settings for :func:`train`.

    Defaults: AdamW (the paper cites Adam) with lr 1e-3 (Adam's default) and weight decay 1e-4; ``"lars"``
    reproduces solo-learn's CIFAR recipes (use lr ~0.3 * batch_size / 256, weight decay 1e-4) and ``"sgd"`` is
    SGD with momentum. 10 warm-up epochs then cosine decay to ``lr * min_lr_ratio`` (solo-learn's
    ``warmup_cosine`` scheduler, min lr 0). ``warmup_epochs`` may be fractional; ``checkpoint_every`` and
    ``log_every`` count optimiser steps (0 disables periodic checkpoints; one is always written at the end).
    ``amp`` (bf16 autocast) applies on CUDA; ``cpu_amp`` (``false`` | ``true`` | ``auto``) applies it on the CPU:
    ``auto`` only where the CPU has native bf16 instructions (AVX512-BF16 or AMX: 1.4x for a demo MNIST-CIFAR run,
    README "Time budget"), never on CPUs that would emulate bf16 (slower than fp32). Under autocast the
    convolutions and matrix products run in bf16 (the losses' too, as on CUDA: their inputs are cast to fp32, their
    matmuls are not); weights, optimiser state, the saved encoder and the probes stay fp32. ``metrics.json`` says
    which precision a run trained in. ``channels_last`` applies everywhere (it also speeds up convolutions on CPU:
    about 1.3x for the demo ResNet). ``max_steps`` caps the run (and the
    schedule length) below ``epochs * (N // batch_size)``.

    ``devices`` x ``nodes`` is the number of processes ``splicer pretrain`` launches for the run (one per GPU;
    :mod:`splicer.distributed`, sized on SLURM by :mod:`splicer.cluster`); ``batch_size`` stays the global batch.
    ``cuda_graph`` (``auto`` | ``on`` | ``off``): replay each step from a CUDA graph (:mod:`splicer.step`); ``auto``
    does on one CUDA process and never on the CPU or with several processes. The default is ``off`` until
    ``benchmarks/cuda_check.sh`` has compared graph and eager steps on a real GPU (none has been lent yet).
    """

    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 10
    min_lr_ratio: float = 0.0
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_amp: str | bool = False
    channels_last: bool = True
    log_every: int = 10
    progress: bool = True
    max_steps: int | None = None
    devices: int = 1
    nodes: int = 1
    cuda_graph: str | bool = "off"  # opt in with "auto" (see the docstring)

    def __post_init__(self) -> None:
        self.optimizer = str(self.optimizer).lower()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"invalid device {self.device!r}; expected 'auto', 'cpu' or 'cuda'")
        for key in ("epochs", "batch_size", "log_every"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        for key in ("lr", "weight_decay", "momentum", "warmup_epochs", "min_lr_ratio", "checkpoint_every"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps!r}")
        for key in ("devices", "nodes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        if not isinstance(self.cpu_amp, bool) and str(self.cpu_amp).lower() != "auto":
            raise ValueError(f"cpu_amp must be true, false or 'auto', got {self.cpu_amp!r}")
        if not isinstance(self.cuda_graph, bool) and str(self.cuda_graph).lower() not in MODES:
            raise ValueError(f"cuda_graph must be one of {', '.join(MODES)} (or true/false), got {self.cuda_graph!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        from splicer.config import coerce_fields

        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig key(s): {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**coerce_fields(cls, d, "train"))


# --------------------------------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    """Map ``"auto"`` to CUDA when available, else CPU; refuse ``"cuda"`` without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as oneDNN's fast bf16 kernels need."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume emulation
        return False


def use_autocast(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast for this run: ``amp`` on CUDA; ``cpu_amp`` on the CPU (``auto``: native bf16 only)."""
    if device.type == "cuda":
        return bool(cfg.amp)
    if isinstance(cfg.cpu_amp, bool):
        return cfg.cpu_amp
    return cpu_has_native_bf16()


def step_seed(seed: int, step: int) -> int:
    """Seed of the augmentation generator for global ``step`` (stable hash of ``(seed, step)``)."""
    digest = hashlib.blake2b(f"splicer-aug:{seed}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Permutation of ``range(n)`` for ``epoch``: CPU generator seeded with ``seed * 1000003 + epoch``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed * 1000003 + epoch)
    return torch.randperm(n, generator=gen)


def _hold(array: np.ndarray, device: torch.device, name: str) -> tuple[torch.Tensor, float]:
    """Wrap ``array`` as a tensor (no copy on CPU), moved to ``device`` once if it fits; (data, scale)."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{name} must be uint8 or uint16, got dtype {array.dtype}")
    scale = value_scale(array.dtype)
    with warnings.catch_warnings():  # read-only memmaps: we never write through the tensor
        warnings.simplefilter("ignore", UserWarning)
        data = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Indexing uint16 tensors is not supported by every CUDA kernel: keep them as int32 on the GPU.
        nbytes = data.numel() * (4 if data.dtype == torch.uint16 else data.element_size())
        if nbytes < 0.4 * free:
            data = (data.to(torch.int32) if data.dtype == torch.uint16 else data).to(device)
        else:
            log.info("%s (%.1f GiB) kept in host memory; batches are copied per step", name, nbytes / 2**30)
    return data, scale


def _batch(data: torch.Tensor, scale: float, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Gather rows ``idx`` and convert to float32 in [0, 1] on ``device`` (uint16 is int32 on a GPU)."""
    raw = data[idx.to(data.device)].to(device, non_blocking=True)
    return raw.to(torch.float32).div_(scale)


def _batches(
    n: int, batch_size: int, seed: int, start_step: int, total_steps: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(epoch, indices)`` for global steps ``start_step .. total_steps - 1`` (drop_last batches)."""
    per_epoch = n // batch_size
    for step in range(start_step, total_steps):
        epoch, b = divmod(step, per_epoch)
        if step == start_step or b == 0:
            order = epoch_order(n, seed, epoch)
        yield epoch, order[b * batch_size : (b + 1) * batch_size]


def _save_atomic(obj: Any, path: Path) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())

    write_atomic(path, save)


def _hook_list(hooks: Any) -> list[Any]:
    if hooks is None:
        return []
    items = list(hooks) if isinstance(hooks, list | tuple) else [hooks]
    for h in items:
        if not (hasattr(h, "on_step_end") or hasattr(h, "on_epoch_end") or callable(h)):
            raise TypeError(f"hook {h!r} has no on_step_end(step, loss) or on_epoch_end(epoch, step), nor is callable")
    return items


def _call(hooks: list[Any], event: str, *args: Any) -> None:
    for h in hooks:
        fn = getattr(h, event, None)
        if fn is None and event == "on_step_end" and callable(h) and not hasattr(h, "on_epoch_end"):
            fn = h
        if fn is not None:
            fn(*args)


@contextlib.contextmanager
def _preemption_flag() -> Iterator[dict[str, int | None]]:
    """Install SIGTERM/SIGUSR1 handlers that only record the signal; restore the previous ones on exit."""
    flag: dict[str, int | None] = {"signal": None}

    def handler(signum: int, frame: Any) -> None:
        if signum == flag["signal"] == signal.SIGINT:  # a second Ctrl-C: stop now (the last checkpoint is kept)
            raise KeyboardInterrupt
        flag["signal"] = signum

    previous = {}
    try:
        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        log.warning("train() is not running in the main thread; SIGTERM/SIGUSR1/SIGINT are not intercepted")
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _CsvLog:
    """Append-only metrics.csv whose rows after ``keep_step`` are dropped on open."""

    def __init__(self, path: Path, keep_step: int) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if keep_step > 0 and path.exists():
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or []) or None
                rows = [r for r in reader if int(r["step"]) <= keep_step]
            if self.columns:
                self._rewrite(rows)
        elif path.exists():
            path.unlink()

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        assert self.columns is not None
        columns = self.columns

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)

        write_atomic(self.path, write)

    def append(self, row: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
            self._rewrite([])
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore", restval="").writerow(row)


def _summary_writer(out_dir: Path) -> Any:
    if importlib.util.find_spec("tensorboard") is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def load_error_reason(err: BaseException) -> str:
    """What went wrong loading a file, for a message: torch's own text may advise ``weights_only=False``, which
    would run code from the file, so that advice is never repeated."""
    first = str(err).strip().split("\n")[0]
    if "weights_only" in str(err):
        first = "it holds objects other than tensors, which are not loaded"
    return f"{type(err).__name__}: {first}"


def _set_aside_corrupt(path: Path, err: BaseException) -> None:
    """Move an unreadable checkpoint to ``checkpoint.corrupt-<time>.pt`` (kept for inspection, never read)."""
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    while (aside := path.with_name(f"{path.stem}.corrupt-{stamp}{f'-{n}' if n else ''}{path.suffix}")).exists():
        n += 1
    os.replace(path, aside)
    log.warning(
        "%s cannot be read (%s): truncated or corrupt; moved it to %s and starting again from step 0",
        path,
        load_error_reason(err),
        aside.name,
    )


def _load_checkpoint(path: Path, cfg: TrainConfig, n_images: int, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` when it cannot be read (it is then set aside, see
    :func:`_set_aside_corrupt`); one written with other result-changing settings is a ValueError."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "step"} <= set(ckpt):
            raise ValueError("not a training checkpoint (no model, optimizer and step)")
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        _set_aside_corrupt(path, err)
        return None
    saved = ckpt.get("config", {})
    current = asdict(cfg)
    for key in RESULT_KEYS:
        if key in saved and saved[key] != current[key]:
            raise ValueError(
                f"{path} was written with {key}={saved[key]!r} but this run has {key}={current[key]!r}; "
                f"restore {key} or use a fresh out_dir"
            )
    if "n_images" in ckpt and ckpt["n_images"] != n_images:
        raise ValueError(f"{path} was written for {ckpt['n_images']} images but images has {n_images}")
    return ckpt


# ----------------------------------------------------------------------------------------------------- train


def train(
    model: nn.Module,
    images: np.ndarray,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    masks: np.ndarray | None = None,
    hooks: Any = None,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``images`` (N, C, H, W) uint8|uint16; returns the ``metrics.json`` summary.

    Writes ``checkpoint.pt`` (every ``cfg.checkpoint_every`` steps and at the end), ``metrics.csv`` (every
    ``cfg.log_every`` steps and the last), ``metrics.json`` and ``encoder.pt`` into ``out_dir``; resumes from
    ``checkpoint.pt`` when present. ``masks`` (N, M, H, W) 0/1 are passed to the model as float; ``labels`` (N,),
    when given, reach ``training_loss`` as ``labels=`` (a supervised model). ``hooks``: an object with
    ``on_step_end(step, loss)`` and/or ``on_epoch_end(epoch, step)`` (after an epoch's last step), a callable
    (called after every step), or a list of these; a hook with ``state_dict()`` / ``load_state_dict()`` is saved in
    and restored from the checkpoint. Raises :class:`Preempted` after SIGTERM/SIGUSR1 and
    :class:`NonFiniteLossError` on a NaN/inf loss.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    n = int(images.shape[0])
    if masks is not None and (masks.ndim != 4 or masks.shape[0] != n or masks.shape[2:] != images.shape[2:]):
        raise ValueError(f"masks must be (N, M, H, W) matching images {images.shape}, got {masks.shape}")
    if images.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"images must be uint8 or uint16, got dtype {images.dtype}")
    if masks is not None and masks.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"masks must be uint8 (0/1) or bool, got dtype {masks.dtype}")
    if labels is not None and np.shape(labels) != (n,):
        raise ValueError(f"labels must have shape ({n},) like images, got {np.shape(labels)}")
    hooks = _hook_list(hooks)
    stateful = [h for h in hooks if hasattr(h, "state_dict") and hasattr(h, "load_state_dict")]
    group = Group.current()  # one process, or the ranks of a torch.distributed launch
    group.local_batch(cfg.batch_size)  # the global batch must split evenly over the ranks
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the number of images ({n})")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup_steps = min(total_steps, round(cfg.warmup_epochs * steps_per_epoch))
    min_lr = cfg.lr * cfg.min_lr_ratio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    device = group.device(resolve_device(cfg.device))
    cuda = device.type == "cuda"
    use_amp = use_autocast(cfg, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    model.to(device)
    if memory_format is torch.channels_last:
        model.to(memory_format=torch.channels_last)
    group.prepare(model, device)  # several processes: batch norm and losses on the global batch
    model.train()
    optimizer = build_optimizer(model, cfg)

    start_step = 0
    ckpt = _load_checkpoint(ckpt_path, cfg, n, device) if ckpt_path.exists() else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for h, state in zip(stateful, ckpt.get("hooks", []), strict=False):
            h.load_state_dict(state)
        start_step = int(ckpt["step"])
        del ckpt
        log.warning("resuming from %s at step %d of %d", ckpt_path, start_step, total_steps)
    resumed_from = start_step if start_step > 0 else None

    def save_checkpoint(step: int) -> None:
        if not group.writer:
            return
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": eager_state_dict(optimizer),
                "step": step,
                "config": asdict(cfg),
                "n_images": n,
                "hooks": [h.state_dict() for h in stateful],
            },
            ckpt_path,
        )

    data, scale = _hold(images, device, "images")
    mask_data = None
    if masks is not None:
        mask_data = torch.from_numpy(np.ascontiguousarray(masks).view(np.uint8))
        if cuda and mask_data.numel() < 0.4 * torch.cuda.mem_get_info(device)[0]:
            mask_data = mask_data.to(device)

    label_data = None
    if labels is not None:
        label_data = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(device)
    run_step = make_step(model, optimizer, device, use_amp, group, cfg.cuda_graph)
    csv_log = _CsvLog(out / METRICS_CSV, start_step) if group.writer else None
    writer = _summary_writer(out) if group.writer else None
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start_step, disable=not (cfg.progress and group.writer), unit="step")
    step = start_step
    last_loss = math.nan
    t0 = time.perf_counter()
    with _preemption_flag() as flag:  # kept installed until the final outputs are written
        try:
            for epoch, idx in _batches(n, cfg.batch_size, cfg.seed, start_step, total_steps):
                idx = group.shard(idx)  # this rank's rows of the global batch
                x = _batch(data, scale, idx, device).contiguous(memory_format=memory_format)
                m = None
                if mask_data is not None:
                    m = mask_data[idx.to(mask_data.device)].to(device, non_blocking=True).float()
                lr = warmup_cosine(step, total_steps, warmup_steps, cfg.lr, min_lr)
                extra = {} if label_data is None else {"labels": label_data[idx.to(label_data.device)]}
                result = run_step(x, m, extra, step_seed(cfg.seed, step), lr, flag["signal"] is not None)
                loss_value, metrics = result.loss, result.metrics
                if not math.isfinite(loss_value):  # nothing is written for this step
                    kept = f"kept at {ckpt_path}" if ckpt_path.exists() else "not written yet (none on disk)"
                    raise NonFiniteLossError(
                        f"non-finite loss {loss_value} at step {step + 1}; last good checkpoint {kept}"
                    )
                step += 1
                last_loss = loss_value
                bar.update(1)
                if csv_log is not None and (step % cfg.log_every == 0 or step == total_steps):
                    row = {"step": step, "epoch": epoch, "lr": lr, "loss": loss_value}
                    row.update({k: float(v) for k, v in metrics.items()})
                    csv_log.append(row)
                    bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.3g}")
                    if writer is not None:
                        for k, v in row.items():
                            if k != "step":
                                writer.add_scalar(f"train/{k}", v, step)
                _call(hooks, "on_step_end", step, loss_value)
                if step % steps_per_epoch == 0:
                    _call(hooks, "on_epoch_end", epoch, step)
                if result.stop if group.distributed else flag["signal"] is not None:
                    save_checkpoint(step)
                    group.barrier()  # every rank leaves after rank 0 has written the checkpoint
                    log.warning(
                        "signal %s received: checkpoint written at step %d", flag["signal"] or "(another rank's)", step
                    )
                    raise Preempted(step, ckpt_path, flag["signal"])
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                    save_checkpoint(step)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        wall = time.perf_counter() - t0
        steps_run = step - start_step

        save_checkpoint(step)
        if math.isnan(last_loss):  # nothing left to run (already finished): recover the last logged loss
            last_loss = _last_logged_loss(out / METRICS_CSV)
        if group.writer:
            save_encoder(model.primary_encoder, out / ENCODER)
        summary = {
            "steps": step,
            "epochs": step / steps_per_epoch,
            "final_loss": last_loss if math.isfinite(last_loss) else None,
            "images_per_s": steps_run * cfg.batch_size / wall if wall > 0 and steps_run else 0.0,
            "wall_s": wall,
            "device": str(device),
            "precision": "bf16 autocast" if use_amp else "fp32",  # cpu_amp: auto depends on the machine
            "processes": group.world_size,
            "resumed_from_step": resumed_from,
        }
        if group.writer:
            write_json(out / METRICS_JSON, summary)
        group.barrier()  # the run's files exist when any rank returns
        if flag["signal"] is not None:
            log.warning("signal %s received after the last step; the run is complete", flag["signal"])
    return summary


def _last_logged_loss(path: Path) -> float:
    if not path.exists():
        return math.nan
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["loss"]) if rows else math.nan
