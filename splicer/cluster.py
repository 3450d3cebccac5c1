"""Cluster resources of the heavy rules (pretrain, supervised, evaluate) and the job-side pre-emption set-up.

The rule files (workflow/rules/*.smk) declare ``gpu``, ``cpus_per_task``, ``mem_mb`` and ``runtime`` through
these functions; the SLURM executor plugin turns them into ``--gpus``, ``--cpus-per-task``, ``--mem`` and
``-t``. Partitions, accounts, QoS and constraints are site settings: they live in the profile
(``slurm/config.yaml``), never here. A site overrides any value with the profile's ``set-resources``.

Sizes come from each dataset kind's ``size`` (:data:`splicer.registry.KINDS`), rough numbers (pretraining
images, image size, channels, bytes per value, images embedded by ``evaluate``); a config entry's ``params``
(``n_pretrain``, ``size`` / ``crop_size`` / ``patch_size``), ``source.size`` (MedMNIST) and ``caps`` refine them.
Run times
are ESTIMATES from an assumed throughput (:data:`IMAGES_PER_S_32PX`, a ResNet-18 two-view SSL step on one
data-centre GPU, not measured here) times :data:`SAFETY`. They need not be tight: a job reaching its limit
gets SIGUSR1 five minutes before (profile: ``--signal=USR1@300``), checkpoints, fails, and its resubmission
(profile ``retries``) resumes from the checkpoint with ``attempt`` times the time limit.

A pretraining run whose run config asks for ``train.devices`` x ``train.nodes`` > 1 processes is one job with one
task per GPU (:func:`launch`): ``gpu`` = the processes, ``tasks`` (and ``tasks_per_gpu: 1`` on GPUs), ``nodes``, and
``mpi: srun``, which tells the executor plugin to run the job's Snakemake in the batch step (not inside an
``srun`` of one task), so that the trainer can start its own ``srun`` step of all tasks (:mod:`splicer.distributed`).
Each task gets ``cpus_per_task`` CPUs; memory and time limits account for the processes.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Mapping

from splicer.data.vocab import HYPERSPECTRAL_BANDS, MULTIPLEX_CHANNELS
from splicer.pipeline.grid import Run, experiment_runs, run_config
from splicer.pipeline.paths import split_ref
from splicer.registry import KINDS, SizeHint

__all__ = [
    "cpus_per_task",
    "export_environment",
    "gpus",
    "ignore_preemption_signal_in_job",
    "launch",
    "mem_mb",
    "processes",
    "runtime",
    "segment_gpu",
    "segment_runtime",
    "size_hint",
    "world",
]


DEMO_CHANNELS = {"multiplex": len(MULTIPLEX_CHANNELS), "hyperspectral": len(HYPERSPECTRAL_BANDS)}

# Assumed SSL step throughput at 32x32 px, ResNet-18, one GPU. Measured on one H100 (benchmarks/cuda_check.sh,
# 32x16 px): Baseline 9 985 img/s, SpliCER with one component + view 5 007 img/s; 2 000 leaves room for older
# GPUs, more components and slower input pipelines.
IMAGES_PER_S_32PX = 2_000.0
SAFETY = 2.0  # multiplies every time estimate
CPU_SLOWDOWN = 20.0  # device: cpu configs (the demo)
MIN_RUNTIME = 30  # minutes
MAX_RUNTIME = 24 * 60  # a common wall-time limit; longer trainings continue in resubmitted jobs
GPU_HOST_MB = 8_000  # host memory of a CUDA process (context, libraries) before any data
CPU_HOST_MB = 2_000
PROBE_S_PER_IMAGE = 0.005  # logistic-regression probe with its C search, per embedded image (CPU)
SCALING = 0.9  # assumed data-parallel efficiency per extra process (an estimate, not measured here)
EMBED_DIM = 2_048  # feature width kept in memory by `evaluate` (float32)


def size_hint(config: Mapping, data: str) -> SizeHint:
    """The :class:`SizeHint` of ``datasets.<data>``: the kind's hint, refined by its ``params`` and ``caps``."""
    spec = config["datasets"][data]
    kind = spec["kind"]
    base = KINDS[kind].size if kind in KINDS else KINDS["folder"].size
    params = spec.get("params") or {}
    source = spec.get("source") or {}
    images, eval_images = int(params.get("n_pretrain", base.images)), base.eval_images
    height, width, channels = base.height, base.width, base.channels
    if kind == "demo":
        per_split = sum(int(params.get(k, d)) for k, d in (("n_train", 600), ("n_val", 200), ("n_test", 600)))
        eval_images = 3 * per_split
        channels = DEMO_CHANNELS.get(spec.get("family", ""), 3)
        if "half_size" in params:
            height = width = 2 * int(params["half_size"])
    side = next((params[k] for k in ("size", "crop_size", "patch_size") if k in params), source.get("size"))
    if isinstance(side, list | tuple) and len(side) == 2:  # a folder entry's [H, W]
        height, width = (int(v) for v in side)
    elif side is not None:
        height = width = int(side)
    caps = spec.get("caps") or {}
    everything = caps.get("*")
    pretrain_cap = min((int(v) for k, v in caps.items() if k in ("*", "pretrain", "pretrain/train")), default=None)
    if pretrain_cap is not None:
        images = min(images, pretrain_cap)
    if everything is not None:
        eval_images = min(eval_images, 3 * int(everything))
    return SizeHint(images, height, width, channels, base.bytes_per_value, eval_images)


def gpus(config: Mapping) -> int:
    """GPUs a training/embedding job asks the scheduler for (none on CPU configs)."""
    return 0 if config.get("device", "auto") == "cpu" else 1


def processes(config: Mapping, run: Run) -> tuple[int, int]:
    """(devices per node, nodes) of one pretraining run: ``train.devices`` and ``train.nodes`` of its run config."""
    train = run_config(config, run)["train"]
    devices, nodes = train.get("devices", 1), train.get("nodes", 1)
    for name, value in (("devices", devices), ("nodes", nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"run {run.path}: train.{name} must be a positive int, got {value!r}")
    return devices, nodes


def world(config: Mapping, run: Run) -> int:
    """The number of processes of one pretraining run."""
    devices, nodes = processes(config, run)
    return devices * nodes


def launch(config: Mapping, run: Run) -> dict[str, int | str | None]:
    """SLURM resources of one pretraining job: ``gpu`` (one per process on GPU configs) and, for several
    processes, ``tasks``, ``tasks_per_gpu``, ``nodes`` and ``mpi`` (see the module docstring); ``None`` leaves a
    resource unset (Snakemake drops it), so a one-process job is submitted exactly as before."""
    devices, nodes = processes(config, run)
    n = devices * nodes
    gpu = gpus(config)
    several = n > 1
    return {
        "gpu": gpu * n,
        "tasks": n if several else None,
        "tasks_per_gpu": 1 if several and gpu else None,
        "nodes": nodes if several else None,
        "mpi": "srun" if several else None,
    }


def cpus_per_task(config: Mapping) -> int:
    """CPUs of a training / embedding job: ``threads``, and at least 4 beside a GPU (data loading, probes)."""
    threads = int(config.get("threads", 1))
    return max(threads, 4) if gpus(config) else threads


def _seconds_per_image(hint: SizeHint, config: Mapping) -> float:
    """Estimated seconds of one two-view SSL step per image. Inputs above 64 px get the strided ImageNet stem
    (4x fewer pixels downstream of it, and 4x again by its max-pool); smaller ones keep full resolution."""
    pixels = hint.height * hint.width
    effective = pixels if max(hint.height, hint.width) <= 64 else pixels / 16
    seconds = effective / (32 * 32) / IMAGES_PER_S_32PX
    return seconds * (CPU_SLOWDOWN if not gpus(config) else 1.0)


def _epochs(config: Mapping, experiment: str) -> int:
    runs = experiment_runs(config, experiment)
    return max(int(run_config(config, run)["train"].get("epochs", 1)) for run in runs)


def _hints(config: Mapping, experiment: str) -> tuple[SizeHint, list[SizeHint]]:
    """The experiment's own data entry and every entry its evaluations read."""
    exp = config["experiments"][experiment]
    evals = sorted({split_ref(config, experiment, spec["data"])[0] for spec in exp["evaluate"].values()})
    return size_hint(config, exp["data"]), [size_hint(config, d) for d in evals]


def runtime(config: Mapping, rule: str, experiment: str, attempt: int = 1, world: int = 1) -> int:
    """Time limit (minutes) of one ``pretrain``, ``supervised`` or ``evaluate`` job of ``experiment``.

    ``attempt`` (Snakemake's, 1 for the first submission) multiplies it: a resubmitted pretraining resumes from
    its checkpoint, and a job that ran out of time gets more of it. A pretraining on ``world`` processes takes
    ``1 / (1 + SCALING * (world - 1))`` of one process's time. Clamped to [MIN_RUNTIME, MAX_RUNTIME].
    """
    own, evals = _hints(config, experiment)
    if rule == "pretrain":
        seconds = _epochs(config, experiment) * own.images * _seconds_per_image(own, config)
        seconds /= 1 + SCALING * (max(int(world), 1) - 1)
    elif rule == "supervised":  # one view, the train split (about a third of an evaluation entry), no checkpoint
        seconds = _epochs(config, experiment) * own.eval_images / 3 * _seconds_per_image(own, config) / 2
    elif rule == "evaluate":  # forward passes only (~6x cheaper than an SSL step), then the probes on the CPU
        seconds = sum(h.eval_images * (_seconds_per_image(h, config) / 6 + PROBE_S_PER_IMAGE) for h in evals)
    else:
        raise ValueError(f"no runtime estimate for rule {rule!r}; known: pretrain, supervised, evaluate")
    minutes = MIN_RUNTIME + SAFETY * seconds / 60
    return int(min(max(math.ceil(minutes * max(int(attempt), 1)), MIN_RUNTIME), MAX_RUNTIME))


def mem_mb(config: Mapping, rule: str, experiment: str, devices: int = 1) -> int:
    """Host memory (MB) of one job (per node): each of the node's ``devices`` processes' baseline plus the data
    they map, once (the page cache is shared; plus features for ``evaluate``), rounded up to 1000 MB."""
    own, evals = _hints(config, experiment)
    base = (GPU_HOST_MB if gpus(config) else CPU_HOST_MB) * max(int(devices), 1)
    if rule == "pretrain":
        data = own.images * own.image_bytes
    elif rule == "supervised":
        data = own.eval_images * own.image_bytes
    elif rule == "evaluate":
        data = max((h.eval_images * (h.image_bytes + 2 * EMBED_DIM * 4) for h in evals), default=0)
    else:
        raise ValueError(f"no memory estimate for rule {rule!r}; known: pretrain, supervised, evaluate")
    return int(math.ceil((base + 1.25 * data / 1e6) / 1000) * 1000)


def _pretrained_segmenter(config: Mapping, data: str) -> bool:
    from splicer.segment import PRETRAINED

    return config["datasets"][data]["segment"]["segmenter"] in PRETRAINED


def segment_gpu(config: Mapping, data: str) -> int:
    """GPUs of a ``segment`` job: one for a pretrained network (HoVer-Net, HybridGNet), none for the others."""
    return gpus(config) if _pretrained_segmenter(config, data) else 0


def segment_runtime(config: Mapping, data: str) -> int:
    """Minutes of a ``segment`` job: 720 for a pretrained network, 240 for the classical segmenters."""
    return 720 if _pretrained_segmenter(config, data) else 240


def ignore_preemption_signal_in_job() -> bool:
    """Inside a SLURM job, ignore SIGUSR1 in this (Snakemake) process and so in the shells it starts.

    ``--signal=USR1@300`` (the profile) and ``scancel -s USR1 JOB`` send SIGUSR1 to every process of the job's
    steps: the Snakemake the executor plugin starts with ``srun``, the rule's shell and the trainer. Python and
    bash die on an unhandled SIGUSR1; that would end the step, and slurmstepd then kills what is left of it,
    racing the trainer's checkpoint. Ignored here, the disposition passes through fork/exec to the rule's shell;
    the trainer installs its own handler (:mod:`splicer.train`), checkpoints, exits 143, and the job fails
    cleanly, so that Snakemake resubmits it (``retries``) and training resumes. Outside SLURM (no
    ``SLURM_JOB_ID``) nothing changes. Returns whether the signal is now ignored.
    """
    if "SLURM_JOB_ID" not in os.environ or not hasattr(signal, "SIGUSR1"):
        return False
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return False
    return True


def export_environment(root: str) -> None:
    """Let jobs (local, conda or SLURM, which inherit this environment) find this package and a Python.

    The repository goes on ``PYTHONPATH``; the folder of the interpreter running Snakemake goes on ``PATH`` so
    that ``python`` in a shell rule is this venv's when Snakemake was started without activating it (a conda
    env, when used, is activated in front of it).
    """
    import sys

    def prepend(var: str, entry: str) -> None:
        rest = [p for p in os.environ.get(var, "").split(os.pathsep) if p and p != entry]
        os.environ[var] = os.pathsep.join([entry, *rest])

    prepend("PYTHONPATH", root)
    prepend("PATH", os.path.dirname(sys.executable))
