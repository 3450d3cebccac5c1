"""Data-parallel training with ``torch.distributed``: launch, process group, gradient-correct collectives.

One training run on N processes (one per GPU, or N CPU processes with the gloo backend), started the standard
way:

* **torchrun** on one node (``torchrun --standalone --nproc-per-node N -m splicer.cli pretrain ...``), or
* **srun** under SLURM, one task per GPU; the rendezvous (address, port, rank, world size) comes from SLURM's
  environment (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``, the step's node list).

``splicer pretrain`` starts either by itself when the run config asks for ``train.devices`` x ``train.nodes`` > 1
processes (:func:`launch_command`). Inside the processes, :func:`initialized` opens the process group (NCCL on
CUDA, gloo on CPU) and :class:`Group` is what :mod:`splicer.train` asks: rank, world size, the rank's slice of a
global batch, the reductions every rank must agree on.

What makes N processes train exactly the run one process would (same global batch, same loss, same gradients):

* the epoch order and the global batches do not depend on N; rank r takes rows ``[r*n, (r+1)*n)`` of every
  global batch of ``N * n`` images (:meth:`Group.shard`);
* the augmentation of those rows is the one a single process draws for them: the per-step generator is a
  :class:`ShardedGenerator`, which draws the random numbers of the *global* batch and keeps the rank's rows
  (:mod:`splicer.augment` asks it for :meth:`ShardedGenerator.global_rows`);
* batch normalisation uses the statistics of the global batch (:func:`convert_sync_batchnorm`: torch's
  ``SyncBatchNorm`` on CUDA, :class:`GlooSyncBatchNorm` on CPU, where torch's has no kernel);
* losses that couple samples see the global batch through :func:`gather`, an ``all_gather`` whose backward sums
  the gradients of every rank's loss and returns each rank its own rows (solo-learn's ``GatherLayer``, lightly's
  ``gather``): VICReg's variance and covariance, NT-Xent's negatives (:mod:`splicer.losses`);
* gradients are averaged over ranks by ``DistributedDataParallel``.

The gradient contract: the global loss is the *mean over ranks* of the rank losses. A loss computed on the
gathered global batch is the same on every rank (its mean is itself); a loss that is a mean over local samples
(NT-Xent's local anchors, cross-entropy) averages to the global mean. Both give, after DDP's averaging, the
gradient of the global loss.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = [
    "LAUNCHED",
    "GlooSyncBatchNorm",
    "Group",
    "LaunchEnv",
    "ShardedGenerator",
    "all_reduce_sum",
    "convert_sync_batchnorm",
    "expand_hostlist",
    "gather",
    "initialized",
    "launch_command",
    "launch_env",
]

LAUNCHED = "SPLICER_LAUNCHED"  # set by launch_command's launchers: a launched process never launches again
DEFAULT_TIMEOUT_S = 1800.0  # a collective waiting longer than this (a dead peer) raises instead of hanging


# ------------------------------------------------------------------------------------------------ environment


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in a multi-process launch, read from the launcher's environment."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" (or any env:// launcher) or "slurm"


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a SLURM host list (``"gpu[01-03,07],login1"``) into host names, zero padding kept."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", hostlist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not m:
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for item in ranges.split(","):
            lo, sep, hi = item.partition("-")
            if not sep:
                hosts.append(f"{prefix}{lo}{suffix}")
                continue
            width = len(lo)
            hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
    return hosts


def _slurm_port(environ: Mapping[str, str]) -> int:
    """A rendezvous port every task of one SLURM step derives alike: 20000-39999 from the job and step ids."""
    job = int(re.sub(r"\D", "", environ.get("SLURM_JOB_ID", "0")) or 0)
    step = int(re.sub(r"\D", "", environ.get("SLURM_STEP_ID", "0")) or 0)
    return 20000 + (job * 31 + step) % 20000


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """The launch this process belongs to, or ``None`` when it runs alone.

    torchrun (and any launcher of the ``env://`` convention) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``. A task of an ``srun`` step has ``SLURM_PROCID``, ``SLURM_LOCALID`` and
    ``SLURM_STEP_NUM_TASKS`` (which a batch script does not have: a script started by ``sbatch --ntasks 4`` is one
    process, not rank 0 of 4); the address is the step's first node, the port :func:`_slurm_port` unless
    ``MASTER_ADDR`` / ``MASTER_PORT`` are set. A world of one is ``None``.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        if world <= 1:
            return None
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise ValueError(f"RANK/WORLD_SIZE are set but {', '.join(missing)} is not: cannot rendezvous")
        return LaunchEnv(
            int(env["RANK"]),
            world,
            int(env.get("LOCAL_RANK", 0)),
            env["MASTER_ADDR"],
            int(env["MASTER_PORT"]),
            "torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        if world <= 1:
            return None
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        addr = env.get("MASTER_ADDR") or (expand_hostlist(nodes)[0] if nodes else "")
        if not addr:
            raise ValueError("a SLURM step of several tasks without SLURM_STEP_NODELIST or MASTER_ADDR")
        port = int(env.get("MASTER_PORT") or _slurm_port(env))
        return LaunchEnv(int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", 0)), addr, port, "slurm")
    return None


def launch_command(
    argv: Sequence[str],
    devices: int,
    nodes: int = 1,
    *,
    cpus_per_task: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str] | None:
    """The command that runs ``python -m splicer.cli *argv`` as ``devices x nodes`` processes, or ``None``.

    ``None`` when one process is wanted or this process already is one of a launch (torchrun / srun
    environment, or :data:`LAUNCHED`). Inside a SLURM allocation (``SLURM_JOB_ID``): ``srun`` with one task per
    device, ``devices`` tasks per node (the tasks see the allocation's GPUs and each picks the one of its local
    rank); elsewhere ``torchrun --standalone`` (one node only: several nodes need SLURM or a torchrun per node).
    """
    env = os.environ if environ is None else environ
    for name, value in (("devices", devices), ("nodes", nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"train.{name} must be a positive int, got {value!r}")
    world = devices * nodes
    if world == 1 or env.get(LAUNCHED) or launch_env(env) is not None:
        return None
    python = [sys.executable, "-m", "splicer.cli", *argv]
    if env.get("SLURM_JOB_ID"):
        srun = shutil.which("srun") or "srun"
        cmd = [srun, f"--ntasks={world}", f"--nodes={nodes}", f"--ntasks-per-node={devices}", "--kill-on-bad-exit=1"]
        if cpus_per_task:
            cmd.append(f"--cpus-per-task={cpus_per_task}")
        return [*cmd, *python]
    if nodes > 1:
        raise ValueError(
            f"train.nodes={nodes}: several nodes need SLURM (srun) or one torchrun per node started by you; "
            "outside SLURM set train.nodes to 1"
        )
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}", *python[1:]]


def exec_launch(cmd: Sequence[str]) -> int:
    """Run a launcher command (``srun`` / ``torchrun``) to its end and return its exit status.

    SIGTERM, SIGUSR1 and SIGINT reaching this process are passed on: ``srun`` forwards them to every task;
    torchrun's agent forwards SIGTERM to its workers but dies of SIGUSR1, so SIGUSR1 goes to it as SIGTERM (the
    trainer treats both as pre-emption). When the ranks were pre-empted that way the status is 143, as for one
    process (torchrun itself reports a failed worker as 1)."""
    import signal

    env = {**os.environ, LAUNCHED: "1"}
    torchrun = "torch.distributed.run" in cmd
    log.warning("launching %s", " ".join(cmd))
    proc = subprocess.Popen(list(cmd), env=env)
    preempted = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal preempted
        preempted = preempted or signum != getattr(signal, "SIGINT", None)
        if torchrun and signum == getattr(signal, "SIGUSR1", None):
            signum = signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {}
    try:
        for name in ("SIGTERM", "SIGUSR1", "SIGINT"):
            if hasattr(signal, name):
                sig = getattr(signal, name)
                previous[sig] = signal.signal(sig, forward)
    except ValueError:  # not the main thread: the launcher gets no forwarded signals
        pass
    try:
        rc = proc.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if rc < 0:
        rc = 128 - rc  # killed by signal s: 128 + s, as a shell reports it
    return 143 if preempted and rc != 0 and torchrun else rc


# --------------------------------------------------------------------------------------------- process group


@dataclass(frozen=True)
class Group:
    """The processes training one run: this process's ``rank`` among ``world_size`` (1 when alone)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Group:
        """The default process group when one is initialised, else a group of one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``cuda`` without an index is this process's GPU (set by :func:`initialized`)."""
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return device

    def local_batch(self, batch_size: int) -> int:
        """Images per rank of a global batch of ``batch_size``; it must split evenly."""
        if batch_size % self.world_size:
            raise ValueError(
                f"train.batch_size={batch_size} does not split evenly over {self.world_size} processes; "
                f"use a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    def shard(self, idx: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch's indices."""
        n = self.local_batch(idx.shape[0])
        return idx[self.rank * n : (self.rank + 1) * n]

    def generator(self, device: torch.device, seed: int, local_batch: int) -> torch.Generator:
        """The augmentation generator of one step, seeded with ``seed``: a plain one for a single process, a
        :class:`ShardedGenerator` (the global batch's draws, this rank's rows) for several."""
        if not self.distributed:
            gen = torch.Generator(device=device)
        else:
            gen = ShardedGenerator(device, local_batch, local_batch * self.world_size, self.rank * local_batch)
        gen.manual_seed(seed)
        return gen

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (one all-reduce; a single process gets its own flag back)."""
        if not self.distributed:
            return flag
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        value = torch.tensor(1.0 if flag else 0.0, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def agree(
        self, loss: Tensor, metrics: Mapping[str, Tensor], signalled: bool
    ) -> tuple[float, dict[str, Tensor], bool]:
        """The global batch's loss and metrics (means over ranks) and whether any rank was signalled, in one
        all-reduce; a single process gets its own values back."""
        if not self.distributed:
            return float(loss.detach()), dict(metrics), signalled
        names = list(metrics)
        values = [loss.detach().float().reshape(()), *(metrics[k].detach().float().reshape(()) for k in names)]
        vec = torch.stack([*values, torch.ones((), device=loss.device) * float(signalled)])
        dist.all_reduce(vec)
        out = vec.tolist()
        means = {k: vec[i + 1] / self.world_size for i, k in enumerate(names)}
        return out[0] / self.world_size, means, out[-1] > 0

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Batch normalisation on the global batch and losses that gather it; a no-op for one process."""
        if not self.distributed:
            return model
        model = convert_sync_batchnorm(model, device)
        for module in model.modules():
            if hasattr(module, "gather_distributed"):
                module.gather_distributed = True
        return model

    def wrap(self, model: nn.Module, device: torch.device) -> Any:
        """A callable ``(x, masks, generator, **extra) -> (loss, metrics)``: ``model.training_loss``, through
        ``DistributedDataParallel`` (gradients averaged over ranks) when there are several processes."""
        if not self.distributed:
            return model.training_loss
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # no buffer broadcast per forward: synchronised batch norm keeps the running statistics equal on every rank
        # (recent torch names the option forward_sync_buffers and deprecates broadcast_buffers)
        params = inspect.signature(DistributedDataParallel).parameters
        key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
        return DistributedDataParallel(_TrainingLoss(model), device_ids=ids, **{key: False})


class _TrainingLoss(nn.Module):
    """``forward`` = the model's ``training_loss``: what DDP needs to see to synchronise gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, masks: Tensor | None, generator: torch.Generator, **extra: Any) -> Any:
        return self.model.training_loss(x, masks, generator, **extra)


@contextlib.contextmanager
def initialized(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Group]:
    """Open the process group of this process's launch (NCCL for CUDA, gloo for CPU) and close it on exit.

    Alone (no launch environment) or with a group already open, nothing is opened. On CUDA each process uses the
    GPU of its local rank (the only one it sees when SLURM binds one per task).
    """
    env = launch_env()
    if env is None or (dist.is_available() and dist.is_initialized()):
        yield Group.current()
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; cannot train on several processes")
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    backend = "nccl" if cuda else "gloo"
    log.info(
        "rank %d of %d (%s, %s) rendezvous at %s:%d",
        env.rank,
        env.world_size,
        env.launcher,
        backend,
        env.master_addr,
        env.master_port,
    )
    dist.init_process_group(
        backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        yield Group.current()
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- collectives


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _Gather(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient of the gathered tensor and keeps this rank's rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()
        world = dist.get_world_size()
        if dist.get_backend() == "nccl":
            out = x.new_empty((world * x.shape[0], *x.shape[1:]))
            dist.all_gather_into_tensor(out, x)
            return out
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        world, rank = dist.get_world_size(), dist.get_rank()
        if dist.get_backend() == "nccl":
            out = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad)
            return out
        dist.all_reduce(grad)  # gloo has no reduce_scatter
        return grad.chunk(world)[rank]


def gather(x: Tensor) -> Tensor:
    """Rows of ``x`` from every rank, concatenated in rank order (the global batch); gradient-correct (see the
    module docstring). ``x`` itself when not distributed."""
    return _Gather.apply(x) if _active() else x


def gather_many(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """:func:`gather` of several (N, D_i) tensors in one collective (``None`` passes through)."""
    present = [t for t in tensors if t is not None]
    if not present or not _active():
        return tensors
    dtype = present[0].dtype
    for t in present[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    both = gather(torch.cat([t.to(dtype) for t in present], dim=1))
    parts = iter(both.split([t.shape[1] for t in present], dim=1))
    return tuple(None if t is None else next(parts).to(t.dtype) for t in tensors)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the incoming gradients over ranks too (every rank's loss uses the sum)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: Tensor) -> Tensor:
    """Gradient-correct sum of ``x`` over ranks (``x`` itself when not distributed)."""
    return _AllReduceSum.apply(x) if _active() else x


# ------------------------------------------------------------------------------------------ sharded generator


class ShardedGenerator(torch.Generator):
    """A ``torch.Generator`` for one rank's rows of a global batch.

    :mod:`splicer.augment` draws its per-sample random numbers for a batch of ``m = B * local`` rows (B blocks of
    the rank's ``local`` images: the views or components stacked along the batch). With this generator it draws
    them for the global ``B * global_`` rows, exactly as one process training the global batch does, and keeps
    the rank's rows ``b * global_ + offset + i`` (:meth:`global_rows`), so every rank augments its images as the
    single process would and the generator's stream advances identically.
    """

    def __new__(cls, device: torch.device | str, local: int, global_: int, offset: int) -> ShardedGenerator:
        return super().__new__(cls, device)

    def __init__(self, device: torch.device | str, local: int, global_: int, offset: int) -> None:
        if not 0 <= offset <= global_ - local or local < 1:
            raise ValueError(f"rows {offset}..{offset + local} do not lie in a global batch of {global_}")
        self.local, self.global_, self.offset = local, global_, offset

    def global_rows(self, m: int) -> tuple[int, Tensor]:
        """For a local batch of ``m`` rows: the global number of rows to draw and which of them are this rank's."""
        if m % self.local:
            raise ValueError(f"a batch of {m} rows is not a stack of blocks of {self.local} (this rank's images)")
        blocks = m // self.local
        start = torch.arange(blocks, device=self.device) * self.global_ + self.offset
        rows = (start[:, None] + torch.arange(self.local, device=self.device)[None, :]).reshape(-1)
        return blocks * self.global_, rows


# ---------------------------------------------------------------------------------------------- batch norm


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation with the statistics of the global batch, for CPU tensors (torch's ``SyncBatchNorm``
    has only GPU kernels). Two gradient-correct all-reduces per layer: the sum, then the sum of squared
    deviations (a two-pass variance, as precise as a single process's). Equal batch sizes per rank are assumed
    (:meth:`Group.local_batch` guarantees them). Outside training, or alone, it is ``F.batch_norm``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and _active()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        count = input.numel() // input.shape[1] * dist.get_world_size()
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        mean = all_reduce_sum(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.pow(2).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * (count / max(count - 1, 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm*d`` of ``module`` synchronised over ranks: torch's ``SyncBatchNorm`` on CUDA, else
    :class:`GlooSyncBatchNorm`. Parameters and buffers are kept (same names: checkpoints stay compatible)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine)
        out.track_running_stats = module.track_running_stats
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, device)
        if new is not child:
            setattr(module, name, new)
    return module
