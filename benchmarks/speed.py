"""Training-step throughput: splicer's SSLModel vs. a reference loop written the usual way, side by side.

For each configuration (baseline: two views; SpliCER with K = 2 and K = 4 channel-subset components) this
script times

* **ours**: :class:`splicer.methods.SSLModel` (preset built with :func:`build_pairing`, fused component
  encoders) with :class:`splicer.augment.BatchAugment` on the batch's device and splicer's ``vicreg`` loss;
  the uint8 images sit on the device once and every step indexes a batch from them (as
  :func:`splicer.train.train` does), channels_last, bf16 autocast on CUDA;
* **reference**: per-sample ``torchvision.transforms.v2`` augmentation in ``DataLoader`` workers, a plain
  ``nn.Module`` that runs the primary encoder + projector and then loops over K separate (unfused) branch
  encoders + projectors, and ``lightly.loss.VICRegLoss`` per registered pair, summed;

with the same encoder, projector sizes, batch, augmentation settings, optimiser (AdamW) and number of steps,
alternately in one process. Warm-up steps (and DataLoader worker start-up) are not timed. Ours steps through
:func:`splicer.step.make_step`, as the trainer does: ``--step auto`` replays the whole step from a CUDA graph on
a GPU (eager on the CPU), ``--step eager`` never does. It prints images/s (primary images per second; best round,
median round alongside), the ratio ours/reference, the K/baseline step-cost ratio of both, the model FLOPs of one
step (forward + backward, counted once by ``torch.utils.flop_counter``; the same work for both implementations)
as achieved TFLOP/s and as a share of the device's dense bf16 peak (:data:`BF16_PEAK_TFLOPS`, or
``--peak-tflops``), and a PASS/MISS line per target (plus a warning when rounds disagree, i.e. other processes
compete for the cores); ``--json PATH`` writes the same numbers. A benchmark, not a test: a missed target never
fails the process.

Run: ``python benchmarks/speed.py [--threads N] [--json out.json]`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2 as v2
from lightly.loss import VICRegLoss as LightlyVICRegLoss
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from splicer.augment import AugmentConfig, BatchAugment
from splicer.components import ChannelComponent, Component
from splicer.distributed import Group
from splicer.encoders import build_encoder
from splicer.heads import Projector
from splicer.methods import SSLModel, build_pairing
from splicer.step import GraphStep, make_step

# Augmentation shared by both implementations.
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
P_HFLIP = 0.5
P_JITTER = 0.8
BRIGHTNESS = 0.4
CONTRAST = 0.4
P_NOISE = 0.5
NOISE_STD = 0.05
LR = 1e-3

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

TARGET_SPEEDUP = {"cpu": 1.3, "cuda": 3.0}  # ours / reference, every configuration
TARGET_COST = 2.5  # step cost of SpliCER K=4 / baseline, ours
TARGET_PEAK = 0.25  # share of the bf16 peak, ours, CUDA, at the paper's image sizes (64 px and up)
COST_K = 4
UNSTABLE_SPREAD = 1.5  # slowest / fastest timed round above which the report warns
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by device-name substring;
# the first match wins (so "H100 PCIe" before "H100").
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("A6000", 155.0),
)


# ------------------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Resolved benchmark settings (device-dependent defaults filled in by :func:`resolve`)."""

    device: str
    threads: int
    n_images: int
    channels: int
    image_size: int
    batch_size: int
    warmup: int
    steps: int
    rounds: int
    workers: int
    encoder: dict[str, Any]
    proj_hidden: list[int]
    embed_dim: int
    ks: list[int]
    amp: bool
    channels_last: bool
    fuse: bool
    ref_amp: bool
    seed: int
    step: str = "auto"
    peak_tflops: float | None = None
    device_name: str = "cpu"
    torch_version: str = field(default_factory=lambda: torch.__version__)
    cpu: str = field(default_factory=platform.processor)
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass
class Round:
    """Seconds per step of one timed round: wall clock and CPU (all processes doing the work)."""

    wall_s: float
    cpu_s: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags; ``None`` defaults are resolved per device."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--n-images", type=int, default=2048, help="synthetic uint8 images held in memory")
    p.add_argument("--channels", type=int, default=4, help="image channels; must divide by every K")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=None, help="default 128 on CPU, 256 on CUDA")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per implementation and configuration")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating reference/ours timed rounds per configuration; best and median round reported",
    )
    p.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (default 2 CPU, 8 CUDA)")
    p.add_argument("--arch", default=None, help="encoder arch (default: 'resnet' on CPU, 'resnet18' on CUDA)")
    p.add_argument("--base-width", type=int, default=16, help="width of arch 'resnet'")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 1, 1], help="blocks per stage of arch 'resnet'")
    p.add_argument("--proj-hidden", type=int, nargs="*", default=None, help="default 256 (CPU), 2048 2048 (CUDA)")
    p.add_argument("--embed-dim", type=int, default=None, help="default 256 (CPU), 2048 (CUDA)")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4], help="SpliCER component counts (default 2 4)")
    p.add_argument("--no-amp", action="store_true", help="ours without bf16 autocast / channels_last on CUDA")
    p.add_argument(
        "--no-channels-last",
        action="store_true",
        help="ours without channels_last (splicer.train uses it on every device by default)",
    )
    p.add_argument(
        "--fuse",
        choices=["auto", "yes", "no"],
        default="auto",
        help="FusedEncoders for the component encoders: auto = on CUDA only (the library default)",
    )
    p.add_argument("--ref-amp", action="store_true", help="give the reference bf16 autocast + channels_last too")
    p.add_argument(
        "--step",
        choices=["auto", "eager", "graph"],
        default="auto",
        help="ours: auto = one CUDA graph per step on a GPU, eager on the CPU (the trainer's default)",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: looked up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> Settings:
    """Fill device-dependent defaults and validate."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {device} requested but CUDA is not available")
    arch = args.arch or ("resnet18" if cuda else "resnet")
    encoder: dict[str, Any] = {"arch": arch}
    if arch == "resnet":
        encoder.update(base_width=args.base_width, blocks=list(args.blocks))
    s = Settings(
        device=device,
        threads=args.threads or os.cpu_count() or 1,
        n_images=args.n_images,
        channels=args.channels,
        image_size=args.image_size,
        batch_size=args.batch_size or (256 if cuda else 128),
        warmup=args.warmup,
        steps=args.steps,
        rounds=args.rounds,
        workers=args.workers if args.workers is not None else (8 if cuda else 2),
        encoder=encoder,
        proj_hidden=list(args.proj_hidden) if args.proj_hidden is not None else ([2048, 2048] if cuda else [256]),
        embed_dim=args.embed_dim or (2048 if cuda else 256),
        ks=list(args.ks),
        amp=cuda and not args.no_amp,
        channels_last=not args.no_channels_last,
        fuse={"auto": cuda, "yes": True, "no": False}[args.fuse],
        ref_amp=cuda and args.ref_amp,
        seed=args.seed,
        step={"auto": "auto", "eager": "off", "graph": "on"}[args.step],
        peak_tflops=args.peak_tflops if args.peak_tflops is not None else (peak_tflops(device) if cuda else None),
        device_name=torch.cuda.get_device_name(torch.device(device)) if cuda else platform.processor() or "cpu",
    )
    for k in s.ks:
        if k < 1 or s.channels % k or s.embed_dim % k:
            raise SystemExit(f"K={k} must divide --channels ({s.channels}) and the embedding size ({s.embed_dim})")
    if s.batch_size < 2 or s.batch_size > s.n_images:
        raise SystemExit(f"--batch-size must be in [2, --n-images={s.n_images}], got {s.batch_size}")
    if min(s.warmup, s.steps, s.rounds) < 0 or s.steps < 1 or s.rounds < 1:
        raise SystemExit("--steps and --rounds must be >= 1, --warmup >= 0")
    return s


def peak_tflops(device: str) -> float | None:
    """The dense bf16 peak of a CUDA device from :data:`BF16_PEAK_TFLOPS`, or ``None`` when unknown."""
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def channel_groups(channels: int, k: int) -> list[tuple[int, ...]]:
    """K equal contiguous channel subsets: the components of a SpliCER configuration."""
    per = channels // k
    return [tuple(range(i * per, (i + 1) * per)) for i in range(k)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if enabled else nullcontext()


# ------------------------------------------------------------------------------------------------------ ours


def build_ours(s: Settings, k: int) -> SSLModel:
    """SSLModel of the baseline (``k == 0``) or SpliCER with ``k`` channel-subset components."""
    cfg = AugmentConfig(
        crop_scale=CROP_SCALE,
        crop_ratio=CROP_RATIO,
        p_hflip=P_HFLIP,
        p_jitter=P_JITTER,
        brightness=BRIGHTNESS,
        contrast=CONTRAST,
        saturation=0.0,
        hue=0.0,
        p_noise=P_NOISE,
        noise_std=NOISE_STD,
    )
    components: dict[str, Component] = {}
    if k == 0:
        pairing = build_pairing("baseline", ["view"], "vicreg", s.embed_dim)
    else:
        components = {f"c{i}": ChannelComponent(g) for i, g in enumerate(channel_groups(s.channels, k))}
        pairing = build_pairing("splicer", list(components), "vicreg", s.embed_dim)
    shape = (s.channels, s.image_size, s.image_size)
    return SSLModel(pairing, components, shape, s.encoder, s.proj_hidden, augment=BatchAugment(cfg), fuse=s.fuse)


def count_flops(model: nn.Module, x: Tensor, amp: bool) -> int:
    """Model FLOPs (matmuls and convolutions, forward + backward) of one training step on batch ``x``."""
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator(device=x.device).manual_seed(0)
    with FlopCounterMode(display=False) as counter, _autocast(x.device, amp):
        loss, _ = model.training_loss(x, None, gen)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


class OursRunner:
    """One step = index a batch from the device-resident uint8 images, then the trainer's step
    (:func:`splicer.step.make_step`: ``training_loss``, backward, AdamW; a CUDA graph replay with ``--step auto``
    on a GPU)."""

    def __init__(self, model: SSLModel, images: Tensor, s: Settings) -> None:
        self.device = torch.device(s.device)
        self.channels_last = s.channels_last
        self.model = model.to(self.device).train()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR)
        self.images = images.to(self.device)
        self.batch_size, self.amp, self.seed = s.batch_size, s.amp, s.seed
        self.order_gen = torch.Generator().manual_seed(s.seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.count = 0
        self.flops = count_flops(self.model, self._batch(), self.amp)
        self.run = make_step(self.model, self.opt, self.device, self.amp, Group(), s.step)

    @property
    def mode(self) -> str:
        """How ours stepped: ``graph``, ``eager``, or ``eager (capture failed: ...)``."""
        if not isinstance(self.run, GraphStep):
            return "eager"
        return "graph" if self.run.failed is None else f"eager (capture failed: {self.run.failed[:200]})"

    def _batch(self) -> Tensor:
        x = self.images[self._indices().to(self.device)].float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _indices(self) -> Tensor:
        if self.order.numel() < self.batch_size:  # new epoch (drop_last)
            self.order = torch.randperm(self.images.shape[0], generator=self.order_gen)
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return idx

    def step(self) -> float:
        x = self._batch()
        self.count += 1
        return self.run(x, None, {}, self.seed * 1_000_003 + self.count, LR).loss


# ------------------------------------------------------------------------------------------------- reference


class ChannelJitter(nn.Module):
    """Per-sample brightness then contrast jitter of one (C, H, W) float image, factors drawn per channel.

    ``v2.ColorJitter`` only accepts 1 or 3 channels; this is the small transform users write for C channels.
    """

    def __init__(self, brightness: float, contrast: float) -> None:
        super().__init__()
        self.brightness, self.contrast = brightness, contrast

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[-3]
        b = torch.empty(c, 1, 1).uniform_(max(0.0, 1 - self.brightness), 1 + self.brightness)
        x = (x * b).clamp(0.0, 1.0)
        f = torch.empty(c, 1, 1).uniform_(max(0.0, 1 - self.contrast), 1 + self.contrast)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0.0, 1.0)


def reference_transform(size: int) -> v2.Compose:
    """Per-sample torchvision v2 pipeline: crop and flip on uint8, then float, jitter, noise."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
            v2.RandomHorizontalFlip(P_HFLIP),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomApply([ChannelJitter(BRIGHTNESS, CONTRAST)], p=P_JITTER),
            v2.RandomApply([v2.GaussianNoise(mean=0.0, sigma=NOISE_STD, clip=True)], p=P_NOISE),
        ]
    )


class ReferenceViews(Dataset):
    """Baseline: two augmented views per image; SpliCER: the augmented image plus each augmented component."""

    def __init__(self, images: Tensor, groups: list[tuple[int, ...]] | None, transform: Callable) -> None:
        self.images, self.groups, self.transform = images, groups, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        x = self.images[i]
        if self.groups is None:
            return self.transform(x), self.transform(x)
        return (self.transform(x), *(self.transform(x[list(g)]) for g in self.groups))


class ReferenceModel(nn.Module):
    """Primary encoder + projector and a Python loop over K separate branch encoders + projectors."""

    def __init__(self, s: Settings, k: int) -> None:
        super().__init__()
        self.k = k
        self.encoder = build_encoder(in_channels=s.channels, image_size=s.image_size, **s.encoder)
        self.projector = Projector(self.encoder.out_dim, s.proj_hidden, s.embed_dim)
        c = s.channels // max(k, 1)
        self.branch_encoders = nn.ModuleList(
            build_encoder(in_channels=c, image_size=s.image_size, **s.encoder) for _ in range(k)
        )
        self.branch_projectors = nn.ModuleList(
            Projector(e.out_dim, s.proj_hidden, s.embed_dim // k) for e in self.branch_encoders
        )
        self.criterion = LightlyVICRegLoss()

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        if self.k == 0:  # baseline, as in lightly's examples: one forward per view
            z_a = self.projector(self.encoder(views[0]))
            z_b = self.projector(self.encoder(views[1]))
            return self.criterion(z_a.float(), z_b.float())
        chunks = self.projector(self.encoder(views[0])).float().chunk(self.k, dim=1)
        loss = torch.zeros((), device=views[0].device)
        for chunk, enc, proj, view in zip(chunks, self.branch_encoders, self.branch_projectors, views[1:], strict=True):
            loss = loss + self.criterion(chunk, proj(enc(view)).float())
        return loss


class ReferenceRunner:
    """One step = next DataLoader batch, copy to the device, forward, lightly VICReg, backward, AdamW."""

    def __init__(self, model: ReferenceModel, images: Tensor, s: Settings, k: int) -> None:
        self.device = torch.device(s.device)
        self.amp = s.ref_amp
        self.model = model.to(self.device).train()
        if self.amp:
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR)
        groups = channel_groups(s.channels, k) if k else None
        dataset = ReferenceViews(images, groups, reference_transform(s.image_size))
        sampler = RandomSampler(dataset, num_samples=1 << 40, generator=torch.Generator().manual_seed(s.seed))
        cuda = self.device.type == "cuda"
        self.loader = DataLoader(
            dataset,
            batch_size=s.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=s.workers,
            persistent_workers=s.workers > 0,
            pin_memory=cuda,
        )
        self.it = iter(self.loader)
        self.queue_depth = 2 * s.workers  # batches the workers prefetch (DataLoader's prefetch_factor=2)

    def step(self) -> float:
        views = [v.to(self.device, non_blocking=True) for v in next(self.it)]
        if self.amp:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with _autocast(self.device, self.amp):
            loss = self.model(views)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def worker_cpu_s(self) -> float:
        """CPU seconds used so far by the DataLoader worker processes (0 without workers or /proc)."""
        total = 0
        for w in getattr(self.it, "_workers", []):
            try:
                fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
            except (OSError, IndexError, ValueError, TypeError):
                pass
        return total / _CLK_TCK

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until the workers stop using CPU (their prefetch queue is full), so they do not slow ours."""
        if not getattr(self.it, "_workers", None):
            return
        if not Path("/proc/self/stat").exists():
            time.sleep(2.0)
            return
        deadline, prev = time.monotonic() + timeout, self.worker_cpu_s()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            cur = self.worker_cpu_s()
            if cur == prev:
                return
            prev = cur

    def close(self) -> None:
        """Stop the persistent workers."""
        shutdown = getattr(self.it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del self.it, self.loader


# ------------------------------------------------------------------------------------------------------- run


def _time(step: Callable[[], float], n: int, device: torch.device, extra_cpu: Callable[[], float]) -> Round:
    """Wall and CPU (this process + ``extra_cpu()``, e.g. DataLoader workers) seconds per step over ``n`` steps."""
    _sync(device)
    c0, t0 = time.process_time() + extra_cpu(), time.perf_counter()
    for _ in range(n):
        loss = step()
    _sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() + extra_cpu() - c0
    if not math.isfinite(loss):
        print(f"warning: non-finite loss {loss}", file=sys.stderr)
    return Round(wall / n, cpu / n)


def run_config(s: Settings, images: Tensor, k: int) -> tuple[dict[str, list[Round]], int, str]:
    """Warm up both implementations, then ``rounds`` x (reference, ours); per-step times of every round.

    The reference is timed in steady state: its DataLoader queue is drained by untimed steps before each timed
    round (batches prefetched while ours ran would be free otherwise), and its workers are idle before ours is
    timed (so they do not take CPU from ours).
    """
    device = torch.device(s.device)
    torch.manual_seed(s.seed)
    ours = OursRunner(build_ours(s, k), images, s)
    torch.manual_seed(s.seed)
    ref = ReferenceRunner(ReferenceModel(s, k), images, s, k)
    times: dict[str, list[Round]] = {"ours": [], "reference": []}
    flops = ours.flops
    try:
        for _ in range(s.warmup):
            ours.step()
        for _ in range(max(s.warmup, ref.queue_depth + 1)):  # worker start-up and the first prefetch: untimed
            ref.step()
        for r in range(s.rounds):
            if r:
                for _ in range(ref.queue_depth):
                    ref.step()
            times["reference"].append(_time(ref.step, s.steps, device, ref.worker_cpu_s))
            ref.wait_idle()
            times["ours"].append(_time(ours.step, s.steps, device, lambda: 0.0))
    finally:
        ref.close()
    return times, flops, ours.mode


def _name(k: int) -> str:
    return "baseline" if k == 0 else f"splicer K={k}"


def benchmark(s: Settings) -> dict[str, Any]:
    """Run every configuration; returns the results as a JSON-able dict."""
    torch.set_num_threads(s.threads)
    gen = torch.Generator().manual_seed(s.seed)
    images = torch.randint(
        0, 256, (s.n_images, s.channels, s.image_size, s.image_size), generator=gen, dtype=torch.uint8
    )
    load_before = _loadavg()
    rows = []
    for k in [0, *s.ks]:
        times, flops, mode = run_config(s, images, k)
        for impl, rounds in times.items():
            walls = [r.wall_s for r in rounds]
            tflops = flops / min(walls) / 1e12
            rows.append(
                {
                    "config": _name(k),
                    "k": k,
                    "impl": impl,
                    "step": mode if impl == "ours" else "eager",
                    "flops_per_step": flops,
                    "tflops": tflops,
                    "peak_fraction": tflops / s.peak_tflops if s.peak_tflops else None,
                    "step_s": min(walls),
                    "images_per_s": s.batch_size / min(walls),
                    "median_step_s": statistics.median(walls),
                    "median_images_per_s": s.batch_size / statistics.median(walls),
                    "cpu_s_per_step": statistics.median(r.cpu_s for r in rounds),
                    "spread": max(walls) / min(walls),
                    "rounds": [asdict(r) for r in rounds],
                }
            )
        gc.collect()
    ips = {(r["k"], r["impl"]): r["images_per_s"] for r in rows}
    med = {(r["k"], r["impl"]): r["median_images_per_s"] for r in rows}
    speedup = {_name(k): ips[k, "ours"] / ips[k, "reference"] for k in [0, *s.ks]}
    median_speedup = {_name(k): med[k, "ours"] / med[k, "reference"] for k in [0, *s.ks]}
    cost = {f"K={k}/baseline": {impl: ips[0, impl] / ips[k, impl] for impl in ("ours", "reference")} for k in s.ks}
    kind = "cuda" if s.device.startswith("cuda") else "cpu"
    targets = [
        {
            "target": f"ours/reference >= {TARGET_SPEEDUP[kind]} ({name})",
            "value": v,
            "passed": v >= TARGET_SPEEDUP[kind],
        }
        for name, v in speedup.items()
    ]
    if COST_K in s.ks:
        v = cost[f"K={COST_K}/baseline"]["ours"]
        targets.append(
            {"target": f"ours step cost K={COST_K}/baseline <= {TARGET_COST}", "value": v, "passed": v <= TARGET_COST}
        )
    if kind == "cuda" and s.peak_tflops and s.image_size >= 64:
        for r in rows:
            if r["impl"] == "ours":
                v = r["peak_fraction"]
                target = f"ours >= {TARGET_PEAK:.0%} of bf16 peak at {s.image_size} px ({r['config']})"
                targets.append({"target": target, "value": v, "passed": v >= TARGET_PEAK})
    return {
        "settings": asdict(s),
        "results": rows,
        "speedup": speedup,
        "median_speedup": median_speedup,
        "step_cost": cost,
        "targets": targets,
        "loadavg": {"before": load_before, "after": _loadavg()},
    }


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages (other processes competing for the cores), where the OS reports them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def report(out: dict[str, Any]) -> str:
    """Human-readable table of :func:`benchmark`'s output."""
    s = out["settings"]
    enc = ", ".join(f"{k}={v}" for k, v in s["encoder"].items())
    ref_threads = f"{s['workers']} DataLoader workers x 1 thread" if s["workers"] else "no workers (main process)"
    lines = [
        f"device {s['device']} | main-process threads {s['threads']} (of {s['cpu_count']} cores) | "
        f"reference data: {ref_threads} | torch {s['torch_version']}",
        f"encoder {enc} | projector {s['proj_hidden']} -> {s['embed_dim']} | images {s['n_images']}x{s['channels']}x"
        f"{s['image_size']}x{s['image_size']} uint8 | batch {s['batch_size']}",
        f"{s['warmup']} warm-up + {s['rounds']} alternating rounds x {s['steps']} timed steps | "
        f"ours: bf16 autocast={s['amp']} channels_last={s['channels_last']} fused={s['fuse']} "
        f"cuda_graph={s['step']} | reference: bf16 autocast + channels_last={s['ref_amp']}",
        f"device {s['device_name']} | bf16 peak "
        + (f"{s['peak_tflops']:.0f} TFLOP/s" if s["peak_tflops"] else "unknown (--peak-tflops)"),
        f"load average before {out['loadavg']['before']}, after {out['loadavg']['after']}",
        "img/s: best round (least disturbed by other processes); median: median round; "
        "CPU s/step: all processes of the implementation (reference: main + workers)",
        "",
        f"{'configuration':<14}{'ours img/s':>11}{'ref img/s':>11}{'ours/ref':>10}{'median ours':>13}"
        f"{'median ref':>12}{'ours/ref':>10}{'CPU s/step ours':>17}{'ref':>7}",
    ]
    by = {(r["config"], r["impl"]): r for r in out["results"]}
    for name, ratio in out["speedup"].items():
        o, r = by[name, "ours"], by[name, "reference"]
        lines.append(
            f"{name:<14}{o['images_per_s']:>11.1f}{r['images_per_s']:>11.1f}{ratio:>9.2f}x"
            f"{o['median_images_per_s']:>13.1f}{r['median_images_per_s']:>12.1f}{out['median_speedup'][name]:>9.2f}x"
            f"{o['cpu_s_per_step']:>17.2f}{r['cpu_s_per_step']:>7.2f}"
        )
    lines += [
        "",
        f"{'configuration':<14}{'ours step':>22}{'GFLOP/step':>12}{'TFLOP/s ours':>14}{'ref':>7}{'% peak':>8}",
    ]
    for name in out["speedup"]:
        o, r = by[name, "ours"], by[name, "reference"]
        share = f"{100 * o['peak_fraction']:.1f}%" if o["peak_fraction"] is not None else "-"
        lines.append(
            f"{name:<14}{o['step'][:22]:>22}{o['flops_per_step'] / 1e9:>12.1f}{o['tflops']:>14.2f}"
            f"{r['tflops']:>7.2f}{share:>8}"
        )
    lines.append("")
    for name, c in out["step_cost"].items():
        lines.append(f"step cost {name} (best rounds): ours {c['ours']:.2f}x, reference {c['reference']:.2f}x")
    unstable = [
        f"{r['config']} {r['impl']} {r['spread']:.1f}x" for r in out["results"] if r["spread"] > UNSTABLE_SPREAD
    ]
    if unstable:
        lines += [
            "",
            f"WARNING: unstable timings, slowest/fastest round: {', '.join(unstable)}. Other processes are "
            "competing for the cores; with several intra-op threads that stalls whole steps. Rerun on an idle "
            "machine, with more --rounds, or with --threads 1.",
        ]
    lines.append("")
    for t in out["targets"]:
        lines.append(f"{'PASS' if t['passed'] else 'MISS'}  {t['target']}: {t['value']:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: run, print the table, optionally write JSON; returns the results dict."""
    args = parse_args(argv)
    out = benchmark(resolve(args))
    print(report(out), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
