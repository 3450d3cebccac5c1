"""MNIST-CIFAR analogue (Fig. 2): a handwritten digit on top (simple) over an oriented grey texture (complex)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.demo.common import (
    balanced,
    balanced_splits,
    band_noise,
    bilinear,
    check_params,
    grid,
    rng_for,
    save,
    split_codes,
    to_u8,
)
from splicer.data.vocab import SPLITS
from splicer.registry import Layout

__all__ = ["DATASETS", "layout", "make_mnist_cifar"]

DATASETS = ("pretrain", "pretrain_cifar_only", "rNONE", "rMNIST", "rCIFAR", "mnist_only", "cifar_only")
"""The datasets :func:`make_mnist_cifar` writes."""


def _digit_pools() -> dict[str, list[np.ndarray]]:
    """sklearn's 8x8 digits 0 and 1 (values 0..16 -> [0, 1]), split per class into disjoint pools by index:
    first half -> pretraining, third quarter -> evaluation train, last quarter -> evaluation val/test."""
    from sklearn.datasets import load_digits

    digits = load_digits(n_class=2)
    images = digits.images.astype(np.float64) / 16.0
    pools: dict[str, list[np.ndarray]] = {"pretrain": [], "train": [], "heldout": []}
    for c in (0, 1):
        idx = np.flatnonzero(digits.target == c)
        half, three_q = len(idx) // 2, (3 * len(idx)) // 4
        pools["pretrain"].append(images[idx[:half]])
        pools["train"].append(images[idx[half:three_q]])
        pools["heldout"].append(images[idx[three_q:]])
    return pools


def _render_digits(rng: np.random.Generator, pool: list[np.ndarray], classes: np.ndarray, size: int) -> np.ndarray:
    """White-on-black digits (N, size, size) in [0, 1]: random pool member, scale, rotation and shift."""
    n = len(classes)
    src = np.zeros((n, 8, 8))
    for c in (0, 1):
        sel = np.flatnonzero(classes == c)
        src[sel] = pool[c][rng.integers(0, len(pool[c]), sel.size)]
    scale = rng.uniform(0.78, 0.9, n)[:, None, None] * size / 8.0
    rot = rng.uniform(-0.12, 0.12, n)[:, None, None]
    shift = rng.uniform(-0.04, 0.04, (2, n))[:, :, None, None] * size
    yy, xx = grid(size)
    py, px = yy - size / 2 - shift[0], xx - size / 2 - shift[1]
    c, s = np.cos(rot), np.sin(rot)
    sy, sx = (c * py - s * px) / scale + 3.5, (s * py + c * px) / scale + 3.5
    return np.clip(1.25 * bilinear(src, sy, sx), 0.0, 1.0)


def _render_textures(
    rng: np.random.Generator,
    classes: np.ndarray,
    size: int,
    orientation_sd: float = 0.4,
    clutter_max: float = 0.3,
    contrast_min: float = 0.6,
) -> np.ndarray:
    """Grey Gabor-noise textures (N, 3, size, size) in [0, 1]; class 0 = horizontal-ish stripes, class 1 =
    vertical-ish. Orientation ~ class centre + N(0, orientation_sd rad) so the classes overlap (an ideal
    orientation detector is right ~95% of the time); random frequency, band width, isotropic clutter, two
    random grey levels, contrast and pixel noise. The class is invisible to first-order (pixel-linear) models.
    The defaults are set so that self-supervised training on the texture alone learns it (a linear probe of a
    demo-sized VICReg encoder reaches ~0.87 after 12 epochs), while a model seeing both halves still leans on
    the digit. Measured on the way there: with orientation_sd 0.55, clutter 0.8, contrast 0.3 the SSL ceiling
    was ~0.55 (out of SSL's reach); with two random RGB colours per texture, colour was an easier label-free
    feature that VICReg learned instead of orientation, and SpliCER's texture branch had nothing to pass on."""
    n = len(classes)
    angle = np.where(classes == 0, np.pi / 2, 0.0) + rng.normal(0.0, orientation_sd, n)
    freq = rng.uniform(0.12, 0.3, n)
    field = band_noise(rng, n, size, angle, freq, 0.05, rng.uniform(0.03, 0.07, n))
    clutter = rng.uniform(0.0, clutter_max, (n, 1, 1))
    field = (field + clutter * rng.standard_normal((n, size, size))) / np.sqrt(1.0 + clutter**2)
    contrast = rng.uniform(contrast_min, 1.0, (n, 1, 1, 1))
    t = 0.5 + 0.5 * contrast * np.tanh(field)[:, None]
    c0, c1 = rng.uniform(0.0, 1.0, (2, n, 3, 1, 1))
    # grey levels, not colours: random RGB colours were an easier, label-free feature of the texture half that
    # every VICReg objective learned instead of the orientation (the texture branch then had nothing to pass on)
    c0, c1 = c0.mean(1, keepdims=True), c1.mean(1, keepdims=True)
    img = c0 * (1.0 - t) + c1 * t + rng.normal(0.0, 0.04, (n, 3, size, size))
    return np.clip(img, 0.0, 1.0)


def make_mnist_cifar(
    out_dir: str | Path,
    seed: int = 0,
    n_pretrain: int = 2000,
    n_train: int = 600,
    n_val: int = 200,
    n_test: int = 600,
    half_size: int = 16,
) -> dict[str, Path]:
    """MNIST-CIFAR analogue: (3, 2*half, half) images, digit half on top (rows [0, half)), texture half below.

    * digit half ("MNIST", simple): real handwritten 0/1 from ``sklearn.datasets.load_digits`` upsampled
      bilinearly with random scale/rotation/shift, grey replicated to RGB; label 0 <-> digit 0, 1 <-> digit 1.
      Pretraining, evaluation-train and evaluation-val/test draw from disjoint sample pools (by index; ~90,
      ~45 and ~45 per class; sklearn gives no writer ids), reused many times with random geometry.
    * texture half ("CIFAR", complex): class-conditional oriented colour Gabor noise (see
      :func:`_render_textures`), learnable by SSL alone but harder than the digit.

    Datasets: ``pretrain`` (balanced labels, both halves agree; one split "train"); ``rNONE``, ``rMNIST``
    (digit of a random class), ``rCIFAR`` (texture of a random class), built from the same samples and
    balanced within train/val/test; ``mnist_only`` and ``cifar_only`` ((3, half, half) halves of rNONE);
    ``pretrain_cifar_only`` (the texture halves of ``pretrain``, for the self-supervised ceiling).
    """
    check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, half_size=half_size)
    out, family, s = Path(out_dir), "mnist_cifar", half_size
    pools = _digit_pools()
    classes = ["0", "1"]
    regions = {"mnist": {"rows": [0, s], "cols": [0, s]}, "cifar": {"rows": [s, 2 * s], "cols": [0, s]}}
    base_info = {
        "family": family,
        "seed": int(seed),
        "half_size": s,
        "regions": regions,
        "class_meaning": {"0": "digit 0 / horizontal texture", "1": "digit 1 / vertical texture"},
    }
    rgb = ["R", "G", "B"]
    paths: dict[str, Path] = {}

    def grey3(d: np.ndarray) -> np.ndarray:
        return np.repeat(d[:, None], 3, axis=1)

    rng = rng_for(seed, family, "pretrain")
    y = balanced(rng, n_pretrain, 2)
    img = np.concatenate([grey3(_render_digits(rng, pools["pretrain"], y, s)), _render_textures(rng, y, s)], 2)
    paths["pretrain"] = save(
        out,
        "pretrain",
        to_u8(img),
        y,
        split_codes([n_pretrain]),
        channel_names=rgb,
        class_names=classes,
        split_names=["train"],
        info={**base_info, "randomised": None, "digit_pool": "pretrain"},
    )
    # the texture halves of the pretraining images: self-supervised training on the complex half alone (ceiling)
    paths["pretrain_cifar_only"] = save(
        out,
        "pretrain_cifar_only",
        to_u8(img[:, :, s:]),
        y,
        split_codes([n_pretrain]),
        channel_names=rgb,
        class_names=classes,
        split_names=["train"],
        info={**base_info, "randomised": None, "component": "cifar"},
    )

    rng = rng_for(seed, family, "eval")
    counts = [n_train, n_val, n_test]
    y = balanced_splits(rng, counts, 2)
    y_rand_digit, y_rand_tex = rng.integers(0, 2, (2, len(y)))
    digits, digits_rand = np.zeros((2, len(y), s, s))
    for pool_name, rows in (("train", slice(0, n_train)), ("heldout", slice(n_train, len(y)))):
        digits[rows] = _render_digits(rng, pools[pool_name], y[rows], s)
        digits_rand[rows] = _render_digits(rng, pools[pool_name], y_rand_digit[rows], s)
    tex, tex_rand = _render_textures(rng, y, s), _render_textures(rng, y_rand_tex, s)
    digits, digits_rand = to_u8(grey3(digits)), to_u8(grey3(digits_rand))
    tex, tex_rand = to_u8(tex), to_u8(tex_rand)
    split = split_codes(counts)
    info = {**base_info, "digit_pool": "train pool for train, held-out pool for val/test"}
    for name, top, bottom, randomised in (
        ("rNONE", digits, tex, None),
        ("rMNIST", digits_rand, tex, "mnist"),
        ("rCIFAR", digits, tex_rand, "cifar"),
    ):
        paths[name] = save(
            out,
            name,
            np.concatenate([top, bottom], 2),
            y,
            split,
            channel_names=rgb,
            class_names=classes,
            split_names=SPLITS,
            info={**info, "randomised": randomised},
        )
    half_info = {k: v for k, v in info.items() if k != "regions"}
    paths["mnist_only"] = save(
        out,
        "mnist_only",
        digits,
        y,
        split,
        channel_names=rgb,
        class_names=classes,
        split_names=SPLITS,
        info={**half_info, "component": "mnist"},
    )
    paths["cifar_only"] = save(
        out,
        "cifar_only",
        tex,
        y,
        split,
        channel_names=rgb,
        class_names=classes,
        split_names=SPLITS,
        info={**half_info, "component": "cifar"},
    )
    return paths


def layout(params: Mapping[str, Any]) -> dict[str, Layout]:
    """What :func:`make_mnist_cifar` writes with ``params`` (declared, not generated): RGB, no masks, the whole
    images (2 * half_size, half_size) and the halves (half_size, half_size)."""
    s = params.get("half_size", inspect.signature(make_mnist_cifar).parameters["half_size"].default)
    whole, half = Layout(("R", "G", "B"), (), (2 * s, s)), Layout(("R", "G", "B"), (), (s, s))
    halves = ("pretrain_cifar_only", "mnist_only", "cifar_only")
    return {name: half if name in halves else whole for name in DATASETS}
