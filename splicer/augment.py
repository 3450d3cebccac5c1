"""Batched, GPU-friendly image augmentations for joint-embedding SSL.

Everything operates on a whole batch ``x`` of shape (N, C, H, W), float in [0, 1], with tensor ops on
``x.device``: no PIL and no Python loop over samples. All per-sample random parameters come from a single
``torch.rand`` call on the supplied ``torch.Generator`` (plus one ``torch.randn`` for the noise field when
noise is enabled), so the same generator seed always reproduces the same views.

Pipeline (fixed order): random resized crop -> horizontal flip -> vertical flip -> random 90° rotation ->
colour/intensity jitter -> random grayscale -> Gaussian noise -> solarize -> clamp to [0, 1].

The geometric steps (crop, flips, rotation) are composed into one affine matrix per sample and applied with a
single ``F.affine_grid`` + ``F.grid_sample`` (bilinear, ``align_corners=False``, border padding).

Defaults follow the SimCLR / solo-learn CIFAR recipe (RandomResizedCrop scale (0.2, 1.0); ColorJitter
(0.4, 0.4, 0.2, 0.1) with p=0.8; horizontal flip p=0.5). Known deviations from torchvision:

* crop boxes are continuous (sub-pixel offsets and sizes, no rounding to integer pixels) and resampling has no
  antialiasing (only matters when ``out_size`` is smaller than the crop);
* ``crop_ratio_mode: relative`` (not in torchvision) reads ``crop_ratio`` relative to the image's own aspect:
  the crop's width/height is drawn from ``(W/H) * crop_ratio``, so a crop of a 64x32 (H x W) MNIST-CIFAR image
  can span both halves at full height, as a 3/4-4/3 crop of a square image spans it. The default,
  ``absolute``, is torchvision's: the crop's width/height itself lies in ``crop_ratio``, which on a 64x32 image
  caps a crop at ~43 of the 64 rows;
* the jitter sub-operations run in a fixed order (brightness, contrast, saturation, hue) instead of a random
  permutation per call;
* for C != 3 (single-channel, multiplex, hyperspectral) brightness and contrast factors are drawn per sample
  *and per channel*, contrast blends each channel with its own mean; saturation, hue and grayscale are RGB-only
  and are ignored when C != 3;
* ``p_rot90`` gates a rotation by k·90° with k uniform in {0, 1, 2, 3} (albumentations ``RandomRotate90``
  semantics, so p=1 gives all four orientations equally often). When the output is not square only k in
  {0, 2} is used, because a 90° rotation would change the shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CROP_RATIO_MODES", "AugmentConfig", "BatchAugment"]

CROP_RATIO_MODES = ("absolute", "relative")
"""How ``crop_ratio`` is read: as the crop's width/height, or relative to the image's own width/height."""

_N_CROP_TRIES = 10  # torchvision RandomResizedCrop.get_params makes 10 attempts before falling back
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision.rgb_to_grayscale
_SOLARIZE_THRESHOLD = 0.5
_PROB_FIELDS = ("p_hflip", "p_vflip", "p_rot90", "p_jitter", "p_grayscale", "p_noise", "p_solarize")


@dataclass
class AugmentConfig:
    """Augmentation hyper-parameters (defaults: SimCLR / solo-learn CIFAR-style).

    ``out_size`` (None = same as the input, an int for a square output, or (H, W)) sets the crop output size.
    ``crop_ratio_mode``: ``"absolute"`` (torchvision: the crop's width/height lies in ``crop_ratio``) or
    ``"relative"`` (it lies in ``(W/H) * crop_ratio``, relative to the image's own aspect).
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_ratio_mode: str = "absolute"
    p_hflip: float = 0.5
    p_vflip: float = 0.0
    p_rot90: float = 0.0
    p_jitter: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    p_grayscale: float = 0.0
    p_noise: float = 0.0
    noise_std: float = 0.05
    p_solarize: float = 0.0
    out_size: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.crop_scale = _pair("crop_scale", self.crop_scale)
        self.crop_ratio = _pair("crop_ratio", self.crop_ratio)
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"AugmentConfig.crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi or not math.isfinite(hi):
            raise ValueError(f"AugmentConfig.crop_ratio must satisfy 0 < min <= max < inf, got {self.crop_ratio}")
        if self.crop_ratio_mode not in CROP_RATIO_MODES:
            raise ValueError(
                f"AugmentConfig.crop_ratio_mode must be one of {list(CROP_RATIO_MODES)}, got {self.crop_ratio_mode!r}"
            )
        for name in _PROB_FIELDS:
            value = _number(name, getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} is a probability and must be in [0, 1], got {value}")
            setattr(self, name, value)
        for name in ("brightness", "contrast", "saturation", "noise_std"):
            value = _number(name, getattr(self, name))
            if not 0.0 <= value < math.inf:
                raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0, got {value}")
            setattr(self, name, value)
        self.hue = _number("hue", self.hue)
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"AugmentConfig.hue must be in [0, 0.5] (fraction of a full turn), got {self.hue}")
        if self.out_size is not None:
            size = (self.out_size, self.out_size) if isinstance(self.out_size, int) else tuple(self.out_size)
            if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
                raise ValueError(
                    f"AugmentConfig.out_size must be None, a positive int or a pair of positive ints, "
                    f"got {self.out_size!r}"
                )
            self.out_size = (size[0], size[1])

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        """Build from a mapping (e.g. a YAML section); unknown keys raise ``ValueError`` naming them."""
        if not isinstance(d, Mapping):
            raise TypeError(f"AugmentConfig.from_dict expects a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(
                f"unknown AugmentConfig key(s): {', '.join(unknown)} (valid keys: {', '.join(sorted(known))})"
            )
        return cls(**d)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"AugmentConfig.{name} must be a number, got {value!r}")
    return float(value)


def _pair(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"AugmentConfig.{name} must be a pair (min, max), got {value!r}")
    return (_number(name, value[0]), _number(name, value[1]))


class BatchAugment:
    """Callable ``(x (N,C,H,W) float in [0,1], generator) -> augmented batch`` (see module docstring).

    Output has the same shape (or (N, C, *cfg.out_size)), dtype and device as ``x``. Random numbers are drawn
    on ``generator.device`` and moved to ``x.device`` if they differ (use a generator on ``x.device`` to avoid
    copying the noise field).
    """

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else AugmentConfig()

    def __repr__(self) -> str:
        return f"BatchAugment({self.cfg!r})"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise ValueError(f"BatchAugment expects a tensor of shape (N, C, H, W), got {_describe(x)}")
        if not x.is_floating_point():
            raise TypeError(f"BatchAugment expects a floating-point tensor in [0, 1], got dtype {x.dtype}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"BatchAugment needs a torch.Generator, got {type(generator).__name__}")
        cfg = self.cfg
        n, c, h, w = x.shape
        out_h, out_w = cfg.out_size if cfg.out_size is not None else (h, w)
        if n == 0:
            return x.new_empty((0, c, out_h, out_w))
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        rgb = c == 3
        cj = 1 if rgb else c  # brightness/contrast factors: shared for RGB, per channel otherwise

        sizes = [_N_CROP_TRIES, _N_CROP_TRIES, 2, 1, 1, 1, 1, 1, cj, cj, 1, 1, 1, 1, 1]
        u = _draw(torch.rand, (n, sum(sizes)), generator, torch.float32)
        u = u.to(device=x.device, dtype=work.dtype)
        (u_scale, u_ratio, u_off, u_hf, u_vf, u_rot, u_rotk, u_jit, u_b, u_c, u_s, u_h, u_gray, u_noise, u_sol) = (
            u.split(sizes, dim=1)
        )

        out = work
        if not self._geometry_is_identity(h, w, out_h, out_w):
            boxes = _crop_boxes(u_scale, u_ratio, u_off, h, w, cfg.crop_scale, self._aspect_range(h, w))
            k = torch.floor(u_rotk[:, 0] * 4) if out_h == out_w else 2 * torch.floor(u_rotk[:, 0] * 2)
            k = torch.where(u_rot[:, 0] < cfg.p_rot90, k, torch.zeros_like(k))
            theta = _affine_theta(boxes, h, w, u_hf[:, 0] < cfg.p_hflip, u_vf[:, 0] < cfg.p_vflip, k)
            grid = F.affine_grid(theta, [n, c, out_h, out_w], align_corners=False)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)

        if cfg.p_jitter > 0:
            jittered = _jitter(out, u_b, u_c, u_s[:, 0], u_h[:, 0], cfg, rgb)
            out = torch.where(_mask(u_jit, cfg.p_jitter), jittered, out)
        if rgb and cfg.p_grayscale > 0:
            out = torch.where(_mask(u_gray, cfg.p_grayscale), _gray(out).expand_as(out), out)
        if cfg.p_noise > 0 and cfg.noise_std > 0:
            noise = _draw(torch.randn, tuple(out.shape), generator, out.dtype)
            noise = noise.to(out.device)
            out = out + torch.where(_mask(u_noise, cfg.p_noise), cfg.noise_std * noise, torch.zeros_like(noise))
        if cfg.p_solarize > 0:
            flip = _mask(u_sol, cfg.p_solarize) & (out >= _SOLARIZE_THRESHOLD)
            out = torch.where(flip, 1.0 - out, out)
        return out.clamp(0.0, 1.0).to(x.dtype)

    def _aspect_range(self, h: int, w: int) -> tuple[float, float]:
        """The range of crop width/height for an (h, w) image: ``crop_ratio``, times w/h when relative."""
        lo, hi = self.cfg.crop_ratio
        return (lo, hi) if self.cfg.crop_ratio_mode == "absolute" else (lo * w / h, hi * w / h)

    def _geometry_is_identity(self, h: int, w: int, out_h: int, out_w: int) -> bool:
        """True when crop/flip/rotation cannot change the image (skip resampling: exact identity)."""
        cfg = self.cfg
        lo, hi = self._aspect_range(h, w)
        return (
            (out_h, out_w) == (h, w)
            and cfg.p_hflip == cfg.p_vflip == cfg.p_rot90 == 0.0
            and cfg.crop_scale == (1.0, 1.0)
            and lo <= w / h <= hi
        )


def _draw(fn: Any, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``fn(shape)`` (``torch.rand`` / ``torch.randn``) on ``generator``. A generator with ``global_rows`` (a rank's
    :class:`splicer.distributed.ShardedGenerator`) draws the global batch's rows and keeps this rank's, so N
    processes augment their slices exactly as one process augments the whole batch."""
    rows = getattr(generator, "global_rows", None)
    if rows is None:
        return fn(shape, generator=generator, device=generator.device, dtype=dtype)
    total, keep = rows(shape[0])
    return fn((total, *shape[1:]), generator=generator, device=generator.device, dtype=dtype)[keep]


_CONSTANTS: dict[tuple[tuple[float, ...], torch.dtype, torch.device], Tensor] = {}


def _constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small constant tensor, made once per (dtype, device): no host-to-device copy per call, which a CUDA graph
    capture of the step (:mod:`splicer.step`) would refuse."""
    key = (values, dtype, device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return _CONSTANTS[key]


def _describe(x: Any) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _mask(u: Tensor, p: float) -> Tensor:
    """Per-sample Bernoulli(p) from uniforms ``u`` (N, 1) -> bool (N, 1, 1, 1) for broadcasting."""
    return (u < p).view(-1, 1, 1, 1)


def _crop_boxes(
    u_scale: Tensor,
    u_ratio: Tensor,
    u_off: Tensor,
    h: int,
    w: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> Tensor:
    """Vectorised torchvision ``RandomResizedCrop.get_params``: (N, 4) boxes (top, left, height, width) in px.

    Each sample gets ``_N_CROP_TRIES`` (area, log-aspect) proposals; the first one that fits is used, otherwise
    the torchvision fallback (central crop with the aspect clamped to ``ratio``). Boxes are continuous.
    """
    area = float(h * w)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_scale)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    cw = torch.sqrt(target * aspect)
    ch = torch.sqrt(target / aspect)
    tol = 1 + 1e-6  # absorb float rounding, e.g. scale (1, 1) with aspect W/H
    valid = (cw <= w * tol) & (ch <= h * tol)
    # index of the first valid try: score valid tries by descending rank, take the unique max
    rank = torch.arange(_N_CROP_TRIES, 0, -1, device=valid.device, dtype=u_scale.dtype)
    first = (valid * rank).argmax(dim=1, keepdim=True)
    found = valid.any(dim=1)
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = float(w), w / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = h * ratio[1], float(h)
    else:
        fw, fh = float(w), float(h)
    cw = torch.where(found, cw.gather(1, first)[:, 0], fw).clamp(max=w)
    ch = torch.where(found, ch.gather(1, first)[:, 0], fh).clamp(max=h)
    left = torch.where(found, u_off[:, 0] * (w - cw), (w - cw) / 2)
    top = torch.where(found, u_off[:, 1] * (h - ch), (h - ch) / 2)
    return torch.stack([top, left, ch, cw], dim=1)


def _affine_theta(boxes: Tensor, h: int, w: int, hflip: Tensor, vflip: Tensor, k: Tensor) -> Tensor:
    """Per-sample (N, 2, 3) ``affine_grid`` matrices for crop -> hflip -> vflip -> rotate by k·90°.

    In normalised coordinates (align_corners=False, so ±1 are pixel edges) an output point p samples the input
    at A·F·R⁻¹·p, with A the crop box map, F = diag(±1, ±1) the flips and R the rotation.
    """
    top, left, ch, cw = boxes.unbind(1)
    sx, sy = cw / w, ch / h
    tx, ty = (2 * left + cw) / w - 1, (2 * top + ch) / h - 1
    ki = k.long() % 4
    cos = _constant((1.0, 0.0, -1.0, 0.0), boxes.dtype, boxes.device)[ki]
    sin = _constant((0.0, 1.0, 0.0, -1.0), boxes.dtype, boxes.device)[ki]
    fx = 1 - 2 * hflip.to(boxes.dtype)
    fy = 1 - 2 * vflip.to(boxes.dtype)
    row0 = torch.stack([sx * fx * cos, -sx * fx * sin, tx], dim=1)
    row1 = torch.stack([sy * fy * sin, sy * fy * cos, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def _factor(u: Tensor, strength: float) -> Tensor:
    """torchvision jitter factor uniform in [max(0, 1 - s), 1 + s]; (N, K) -> (N, K, 1, 1)."""
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    return (lo + (hi - lo) * u)[:, :, None, None]


def _gray(x: Tensor) -> Tensor:
    """RGB (N, 3, H, W) -> luma (N, 1, H, W)."""
    wts = _constant(_GRAY_WEIGHTS, x.dtype, x.device).view(1, 3, 1, 1)
    return (x * wts).sum(dim=1, keepdim=True)


def _jitter(x: Tensor, u_b: Tensor, u_c: Tensor, u_s: Tensor, u_h: Tensor, cfg: AugmentConfig, rgb: bool) -> Tensor:
    """Brightness, contrast (and for RGB saturation, hue) jitter of the whole batch, each step clamped."""
    out = x
    if cfg.brightness > 0:
        out = (out * _factor(u_b, cfg.brightness)).clamp(0.0, 1.0)
    if cfg.contrast > 0:
        mean = _gray(out).mean(dim=(1, 2, 3), keepdim=True) if rgb else out.mean(dim=(2, 3), keepdim=True)
        f = _factor(u_c, cfg.contrast)
        out = (f * out + (1 - f) * mean).clamp(0.0, 1.0)
    if rgb and cfg.saturation > 0:
        f = _factor(u_s[:, None], cfg.saturation)
        out = (f * out + (1 - f) * _gray(out)).clamp(0.0, 1.0)
    if rgb and cfg.hue > 0:
        shift = (2 * u_h - 1) * cfg.hue
        hue, sat, val = _rgb_to_hsv(out)
        out = _hsv_to_rgb(torch.remainder(hue + shift[:, None, None], 1.0), sat, val)
    return out


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, 3, H, W) RGB -> hue in [0, 1), saturation, value, each (N, H, W)."""
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)
    delta = maxc - x.amin(dim=1)
    ones = torch.ones_like(maxc)
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, ones), torch.zeros_like(maxc))
    d = torch.where(delta > 0, delta, ones)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    return torch.remainder(hue / 6.0, 1.0), sat, maxc


def _hsv_to_rgb(hue: Tensor, sat: Tensor, val: Tensor) -> Tensor:
    """Inverse of :func:`_rgb_to_hsv` via f(n) = V - V·S·clamp(min(k, 4 - k), 0, 1), k = (n + 6H) mod 6."""
    n = _constant((5.0, 3.0, 1.0), hue.dtype, hue.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * hue[:, None], 6.0)
    return val[:, None] - (val * sat)[:, None] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
