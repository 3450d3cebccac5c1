"""Deterministic generators of the embedded demo data (small CPU-sized analogues of the paper's datasets).

Every family is built so that a *simple* feature (high variance, first order, easy to learn) and a *complex*
feature (low variance or second order) both carry label information, which is the situation SpliCER targets.
Each generator writes datasets in the :mod:`splicer.data.format` layout under ``out_dir`` and returns
``{dataset_name: path}``. Randomness comes from ``numpy.random.default_rng([seed, crc32(family/dataset)])``, so
the same seed gives byte-identical arrays and each dataset's stream is independent of the others.

Families (see each function for the design): ``mnist_cifar`` (MNIST-CIFAR simplicity-bias benchmark),
``multiplex`` (Orion-CRC-like single-cell crops), ``hyperspectral`` (EuroSAT-like 13-band patches),
``histology`` (NCT/Camelyon-like H&E tiles with nuclei masks), ``xray`` (ChestMNIST/PneumoniaMNIST-like
radiographs with lung masks).
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.format import save_dataset

__all__ = [
    "DEMO_FAMILIES",
    "HYPERSPECTRAL_BANDS",
    "MULTIPLEX_CHANNELS",
    "make_demo",
    "make_histology",
    "make_hyperspectral",
    "make_mnist_cifar",
    "make_multiplex",
    "make_xray",
]

SPLITS = ["train", "val", "test"]


# ================================================================================================ helpers
def _rng(seed: int, family: str, dataset: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(f"{family}/{dataset}".encode())])


def _check_params(seed: int, **params: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    for key, value in params.items():
        minimum = 8 if "size" in key else 1
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"parameter {key!r} must be an int >= {minimum}, got {value!r}")


def _split_codes(counts: Sequence[int]) -> np.ndarray:
    """Contiguous split blocks (train, then val, then test) so that ``select`` keeps memory-mapped views."""
    return np.repeat(np.arange(len(counts), dtype=np.uint8), counts)


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _balanced_splits(rng: np.random.Generator, counts: Sequence[int], k: int) -> np.ndarray:
    """Labels balanced (to within one) over ``k`` classes inside every split block."""
    return np.concatenate([_balanced(rng, n, k) for n in counts]).astype(np.int64)


def _natural(rng: np.random.Generator, n: int, probs: Sequence[float]) -> np.ndarray:
    return rng.choice(len(probs), size=n, p=np.asarray(probs) / np.sum(probs)).astype(np.int64)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _u16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 65535.0), 0, 65535).astype(np.uint16)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (rows, cols), shape (1, H, W) each."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return yy[None], xx[None]


def _save(out_dir: Path, name: str, images: np.ndarray, labels: np.ndarray, split: np.ndarray, *,
          channel_names: Sequence[str], class_names: Sequence[str], split_names: Sequence[str],
          info: dict[str, Any], masks: np.ndarray | None = None,
          mask_names: Sequence[str] = ()) -> Path:
    meta = {"name": name, "channel_names": list(channel_names), "class_names": list(class_names),
            "split_names": list(split_names), "mask_names": list(mask_names), "info": info}
    return save_dataset(out_dir / name, images, labels, split, meta, masks=masks)


def _bilinear(src: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``src`` (N, h, w) at float pixel-index coordinates ``ys, xs`` (N, H, W); zero outside."""
    n, h, w = src.shape
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    wy, wx = ys - y0, xs - x0
    idx = np.arange(n)[:, None, None]
    out = np.zeros(ys.shape)
    for dy, fy in ((0, 1.0 - wy), (1, wy)):
        for dx, fx in ((0, 1.0 - wx), (1, wx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            out += fy * fx * inside * src[idx, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    return out


def _band_noise(rng: np.random.Generator, n: int, size: int, angle: np.ndarray, freq: np.ndarray,
                sigma_r: float | np.ndarray, sigma_t: float | np.ndarray) -> np.ndarray:
    """Unit-variance Gabor-like noise (N, S, S): white noise band-passed around wave vector ``freq`` (cycles
    per pixel) at ``angle`` (radians, 0 = intensity varies along columns -> vertical stripes)."""
    fy = np.fft.fftfreq(size)[None, :, None]
    fx = np.fft.fftfreq(size)[None, None, :]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    along, across = fx * c + fy * s, -fx * s + fy * c
    sr = np.broadcast_to(np.asarray(sigma_r, dtype=np.float64), (n,))[:, None, None]
    st = np.broadcast_to(np.asarray(sigma_t, dtype=np.float64), (n,))[:, None, None]
    gain = np.exp(-((np.abs(along) - freq[:, None, None]) ** 2) / (2 * sr**2) - across**2 / (2 * st**2))
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * gain).real
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-12)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, sigma_f: float) -> np.ndarray:
    """Unit-variance isotropic low-pass Gaussian noise (N, S, S) with frequency cut-off ``sigma_f``."""
    f = np.fft.fftfreq(size)
    gain = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * sigma_f**2))[None]
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * gain).real
    field -= field.mean(axis=(1, 2), keepdims=True)
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-12)


def _ellipse_dist(yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, a: np.ndarray,
                  b: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Normalised elliptical radius (1 on the boundary) for per-sample ellipses; params shaped (N,)."""
    cy, cx, a, b, theta = (np.asarray(v, dtype=np.float64)[:, None, None] for v in (cy, cx, a, b, theta))
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(theta), np.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


# =========================================================================================== MNIST-CIFAR
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
    yy, xx = _grid(size)
    py, px = yy - size / 2 - shift[0], xx - size / 2 - shift[1]
    c, s = np.cos(rot), np.sin(rot)
    sy, sx = (c * py - s * px) / scale + 3.5, (s * py + c * px) / scale + 3.5
    return np.clip(1.25 * _bilinear(src, sy, sx), 0.0, 1.0)


def _render_textures(rng: np.random.Generator, classes: np.ndarray, size: int,
                     orientation_sd: float = 0.4, clutter_max: float = 0.3,
                     contrast_min: float = 0.6) -> np.ndarray:
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
    field = _band_noise(rng, n, size, angle, freq, 0.05, rng.uniform(0.03, 0.07, n))
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


def make_mnist_cifar(out_dir: str | Path, seed: int = 0, n_pretrain: int = 2000, n_train: int = 600,
                     n_val: int = 200, n_test: int = 600, half_size: int = 16) -> dict[str, Path]:
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
    _check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, half_size=half_size)
    out, family, s = Path(out_dir), "mnist_cifar", half_size
    pools = _digit_pools()
    classes = ["0", "1"]
    regions = {"mnist": {"rows": [0, s], "cols": [0, s]}, "cifar": {"rows": [s, 2 * s], "cols": [0, s]}}
    base_info = {"family": family, "seed": int(seed), "half_size": s, "regions": regions,
                 "class_meaning": {"0": "digit 0 / horizontal texture", "1": "digit 1 / vertical texture"}}
    rgb = ["R", "G", "B"]
    paths: dict[str, Path] = {}

    def grey3(d: np.ndarray) -> np.ndarray:
        return np.repeat(d[:, None], 3, axis=1)

    rng = _rng(seed, family, "pretrain")
    y = _balanced(rng, n_pretrain, 2)
    img = np.concatenate([grey3(_render_digits(rng, pools["pretrain"], y, s)), _render_textures(rng, y, s)], 2)
    paths["pretrain"] = _save(out, "pretrain", _u8(img), y, _split_codes([n_pretrain]), channel_names=rgb,
                              class_names=classes, split_names=["train"],
                              info={**base_info, "randomised": None, "digit_pool": "pretrain"})
    # the texture halves of the pretraining images: self-supervised training on the complex half alone (ceiling)
    paths["pretrain_cifar_only"] = _save(out, "pretrain_cifar_only", _u8(img[:, :, s:]), y, _split_codes([n_pretrain]),
                                         channel_names=rgb, class_names=classes, split_names=["train"],
                                         info={**base_info, "randomised": None, "component": "cifar"})

    rng = _rng(seed, family, "eval")
    counts = [n_train, n_val, n_test]
    y = _balanced_splits(rng, counts, 2)
    y_rand_digit, y_rand_tex = rng.integers(0, 2, (2, len(y)))
    digits, digits_rand = np.zeros((2, len(y), s, s))
    for pool_name, rows in (("train", slice(0, n_train)), ("heldout", slice(n_train, len(y)))):
        digits[rows] = _render_digits(rng, pools[pool_name], y[rows], s)
        digits_rand[rows] = _render_digits(rng, pools[pool_name], y_rand_digit[rows], s)
    tex, tex_rand = _render_textures(rng, y, s), _render_textures(rng, y_rand_tex, s)
    digits, digits_rand = _u8(grey3(digits)), _u8(grey3(digits_rand))
    tex, tex_rand = _u8(tex), _u8(tex_rand)
    split = _split_codes(counts)
    info = {**base_info, "digit_pool": "train pool for train, held-out pool for val/test"}
    for name, top, bottom, randomised in (("rNONE", digits, tex, None), ("rMNIST", digits_rand, tex, "mnist"),
                                          ("rCIFAR", digits, tex_rand, "cifar")):
        paths[name] = _save(out, name, np.concatenate([top, bottom], 2), y, split, channel_names=rgb,
                            class_names=classes, split_names=SPLITS, info={**info, "randomised": randomised})
    half_info = {k: v for k, v in info.items() if k != "regions"}
    paths["mnist_only"] = _save(out, "mnist_only", digits, y, split, channel_names=rgb, class_names=classes,
                                split_names=SPLITS, info={**half_info, "component": "mnist"})
    paths["cifar_only"] = _save(out, "cifar_only", tex, y, split, channel_names=rgb, class_names=classes,
                                split_names=SPLITS, info={**half_info, "component": "cifar"})
    return paths


# ============================================================================================== multiplex
MULTIPLEX_CHANNELS = ["Hoechst", "AF1", "CD31", "CD45", "CD68", "Argo550", "CD4", "FOXP3", "CD8a", "CD45RO",
                      "CD20", "PD-L1", "CD3e", "CD163", "E-cadherin", "PD-1", "Ki67", "Pan-CK", "SMA"]
CELL_TYPES = ["tumour", "stromal", "endothelial", "macrophage", "B cell", "T cell"]
T_SUBTYPES = ["CD4 helper T", "CD8 cytotoxic T", "FOXP3 regulatory T"]
# fine types: the five non-T coarse types, then the three T-cell subtypes
_FINE_TYPES = CELL_TYPES[:5] + T_SUBTYPES
_FINE_TO_COARSE = np.array([0, 1, 2, 3, 4, 5, 5, 5])
_NATURAL_FINE = [0.36, 0.2, 0.08, 0.1, 0.06, 0.1, 0.07, 0.03]  # tissue-like, imbalanced
_T_NATURAL = [0.5, 0.35, 0.15]
_COMPARTMENT = {  # where each marker sits: n = nucleus, c = cytoplasm, m = membrane, w = whole cell
    "Hoechst": "n", "AF1": "w", "CD31": "m", "CD45": "m", "CD68": "c", "Argo550": "w", "CD4": "m",
    "FOXP3": "n", "CD8a": "m", "CD45RO": "m", "CD20": "m", "PD-L1": "m", "CD3e": "m", "CD163": "m",
    "E-cadherin": "m", "PD-1": "m", "Ki67": "n", "Pan-CK": "c", "SMA": "c"}
# (marker, fine types expressing it, probability of expression, (low, high) level); bright coarse-type markers
# have levels ~0.4-1, the T-subtype markers CD4/CD8a/FOXP3 are dim (~0.1) on a noisy background.
_EXPRESSION = [
    ("CD31", (2,), 1.0, (0.45, 1.0)), ("CD45", (3, 4, 5, 6, 7), 1.0, (0.35, 0.9)),
    ("CD68", (3,), 1.0, (0.5, 1.0)), ("CD163", (3,), 0.7, (0.3, 0.8)), ("CD20", (4,), 1.0, (0.5, 1.0)),
    ("CD3e", (5, 6, 7), 1.0, (0.45, 0.9)), ("CD45RO", (5, 6, 7), 0.5, (0.25, 0.6)),
    ("PD-1", (5, 6, 7), 0.3, (0.2, 0.5)), ("PD-L1", (0, 3), 0.3, (0.2, 0.5)),
    ("E-cadherin", (0,), 1.0, (0.4, 1.0)), ("Pan-CK", (0,), 1.0, (0.5, 1.0)), ("SMA", (1,), 1.0, (0.45, 1.0)),
    ("SMA", (2,), 0.3, (0.15, 0.35)), ("Ki67", (0,), 0.5, (0.3, 0.8)),
    ("Ki67", (1, 2, 3, 4, 5, 6, 7), 0.1, (0.3, 0.8)),
    ("CD4", (5, 7), 1.0, (0.06, 0.11)), ("CD4", (3,), 0.5, (0.02, 0.05)), ("CD8a", (6,), 1.0, (0.06, 0.11)),
    ("FOXP3", (7,), 1.0, (0.08, 0.14)),
]
_DIM = ("CD4", "FOXP3", "CD8a")


def _cell_geometry(rng: np.random.Generator, fine: np.ndarray, size: int, cy: np.ndarray,
                   cx: np.ndarray) -> dict[str, np.ndarray]:
    """Soft compartment maps (N, S, S) for one cell per sample centred at (cy, cx)."""
    n, k = len(fine), size / 16.0
    # nucleus radius: large tumour cells, thin stromal cells, small lymphocytes (B, T), medium otherwise
    tumour, stromal, endothelial, lymphocyte = fine == 0, fine == 1, fine == 2, fine >= 4
    r_nuc = k * np.select([tumour, stromal, lymphocyte],
                          [rng.uniform(2.6, 3.4, n), rng.uniform(1.6, 2.2, n), rng.uniform(1.8, 2.3, n)],
                          rng.uniform(2.2, 2.9, n))
    aspect = np.select([stromal, endothelial], [rng.uniform(2.0, 3.0, n), rng.uniform(1.5, 2.2, n)],
                       rng.uniform(1.0, 1.3, n))
    grow = np.where(lymphocyte, rng.uniform(1.3, 1.5, n), rng.uniform(1.5, 1.9, n))
    theta = rng.uniform(0.0, np.pi, n)
    yy, xx = _grid(size)
    d_nuc = _ellipse_dist(yy, xx, cy, cx, r_nuc * np.sqrt(aspect), r_nuc / np.sqrt(aspect), theta)
    d_cell = _ellipse_dist(yy, xx, cy, cx, grow * r_nuc * np.sqrt(aspect), grow * r_nuc / np.sqrt(aspect), theta)
    r_cell = (grow * r_nuc)[:, None, None]
    nucleus = _sigmoid((1.0 - d_nuc) * 3.0 * r_nuc[:, None, None])
    cell = _sigmoid((1.0 - d_cell) * 3.0 * r_cell)
    membrane = np.exp(-(((d_cell - 0.92) * r_cell) ** 2) / (2 * (0.7 * k) ** 2))
    return {"n": nucleus, "c": np.clip(cell - nucleus, 0.0, 1.0), "m": membrane, "w": cell}


def _render_cells(rng: np.random.Generator, fine: np.ndarray, size: int, cy: np.ndarray,
                  cx: np.ndarray) -> np.ndarray:
    """Marker intensities (N, 19, S, S) of one cell per sample (no background)."""
    n = len(fine)
    maps = _cell_geometry(rng, fine, size, cy, cx)
    level = np.zeros((n, len(MULTIPLEX_CHANNELS)))
    ch = {name: i for i, name in enumerate(MULTIPLEX_CHANNELS)}
    level[:, ch["Hoechst"]] = rng.uniform(0.45, 1.0, n)
    level[:, ch["AF1"]] = rng.lognormal(np.log(0.08), 0.6, n)
    level[:, ch["Argo550"]] = rng.lognormal(np.log(0.05), 0.6, n)
    for marker, types, prob, (lo, hi) in _EXPRESSION:
        on = np.isin(fine, types) & (rng.random(n) < prob)
        level[:, ch[marker]] = np.where(on, rng.uniform(lo, hi, n), level[:, ch[marker]])
    img = np.empty((n, len(MULTIPLEX_CHANNELS), size, size))
    for name, i in ch.items():
        img[:, i] = level[:, i, None, None] * maps[_COMPARTMENT[name]]
    chromatin = 1.0 + 0.25 * rng.standard_normal((n, size, size))
    img[:, ch["Hoechst"]] *= chromatin
    img[:, ch["Ki67"]] *= np.clip(1.0 + 0.8 * rng.standard_normal((n, size, size)), 0.0, None)
    return img


def _render_crops(rng: np.random.Generator, fine: np.ndarray, size: int) -> np.ndarray:
    """Single-cell crops (N, 19, S, S) uint8: focal cell near the centre, 0-2 partly visible neighbours of
    random type, per-channel background and noise."""
    n = len(fine)
    centre = size / 2 + rng.uniform(-1.0, 1.0, (2, n)) * size / 16
    img = _render_cells(rng, fine, size, centre[0], centre[1])
    for _ in range(2):
        present = rng.random(n) < 0.6
        angle, radius = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.6, 0.8, n) * size
        neighbour = _render_cells(rng, _natural(rng, n, _NATURAL_FINE), size,
                                  size / 2 + radius * np.sin(angle), size / 2 + radius * np.cos(angle))
        img += present[:, None, None, None] * neighbour
    background = rng.uniform(0.01, 0.05, (n, len(MULTIPLEX_CHANNELS), 1, 1))
    dim = [MULTIPLEX_CHANNELS.index(c) for c in _DIM]
    background[:, dim] = rng.normal(0.02, 0.002, (n, len(dim), 1, 1))  # dim channels: flat, low variance
    noise = rng.normal(0.0, 1.0, img.shape) * 0.02
    return _u8(img + background + noise)


def make_multiplex(out_dir: str | Path, seed: int = 0, n_pretrain: int = 2000, n_train: int = 600,
                   n_val: int = 200, n_test: int = 600, size: int = 16) -> dict[str, Path]:
    """Orion-CRC-like single-cell crops: (19, size, size) uint8, channels :data:`MULTIPLEX_CHANNELS`.

    A cell is an elliptical nucleus (Hoechst, chromatin noise; FOXP3/Ki67 nuclear) inside a cell body with
    cytoplasmic (Pan-CK, CD68, SMA) and membrane-ring (CD markers, E-cadherin) compartments. Bright, high
    variance markers decide the coarse type (tumour: Pan-CK/E-cadherin, stromal: elongated SMA, endothelial:
    CD31, macrophage: CD68/CD163/CD45, B: CD20/CD45, T: CD3e/CD45); the T-cell subtype is decided only by the
    dim (~0.1 vs 0.02 background, noise sd 0.02) CD4, CD8a and FOXP3 channels (Treg = CD4+FOXP3+).

    Datasets: ``pretrain`` (natural imbalanced fine-type distribution, labels = 8 fine types),
    ``cell_types`` (6 coarse types balanced per split; T subtypes in natural proportion) and ``t_cells``
    (3 subtypes balanced per split), both with train/val/test.
    """
    _check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    out, family = Path(out_dir), "multiplex"
    counts = [n_train, n_val, n_test]
    groups = {"nuclear": ["Hoechst", "FOXP3", "Ki67"], "dim_t_subtype": list(_DIM),
              "coarse_type": ["Pan-CK", "E-cadherin", "SMA", "CD31", "CD45", "CD68", "CD163", "CD20", "CD3e"]}
    info = {"family": family, "seed": int(seed), "channel_groups": groups, "dim_channels": list(_DIM)}
    paths: dict[str, Path] = {}

    rng = _rng(seed, family, "pretrain")
    fine = _natural(rng, n_pretrain, _NATURAL_FINE)
    paths["pretrain"] = _save(out, "pretrain", _render_crops(rng, fine, size), fine, _split_codes([n_pretrain]),
                              channel_names=MULTIPLEX_CHANNELS, class_names=_FINE_TYPES, split_names=["train"],
                              info={**info, "distribution": dict(zip(_FINE_TYPES, _NATURAL_FINE, strict=True))})

    rng = _rng(seed, family, "cell_types")
    coarse = _balanced_splits(rng, counts, len(CELL_TYPES))
    fine = np.where(coarse == 5, 5 + _natural(rng, len(coarse), _T_NATURAL), coarse)
    paths["cell_types"] = _save(out, "cell_types", _render_crops(rng, fine, size), coarse, _split_codes(counts),
                                channel_names=MULTIPLEX_CHANNELS, class_names=CELL_TYPES, split_names=SPLITS,
                                info=info)

    rng = _rng(seed, family, "t_cells")
    sub = _balanced_splits(rng, counts, len(T_SUBTYPES))
    paths["t_cells"] = _save(out, "t_cells", _render_crops(rng, 5 + sub, size), sub, _split_codes(counts),
                             channel_names=MULTIPLEX_CHANNELS, class_names=T_SUBTYPES, split_names=SPLITS,
                             info=info)
    return paths


# ========================================================================================== hyperspectral
HYPERSPECTRAL_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B08A", "B09", "B10", "B11",
                       "B12"]
_RGB_BANDS = ["B04", "B03", "B02"]
_BAND_RES = {"B01": 4, "B09": 4, "B10": 4, "B05": 2, "B06": 2, "B07": 2, "B08A": 2, "B11": 2, "B12": 2}
# endmember reflectance spectra in band order; pairs (veg_a, veg_b) and (dense, sparse) share B02-B04
_SPECTRA = {
    "soil": [0.08, 0.10, 0.14, 0.18, 0.20, 0.22, 0.24, 0.26, 0.27, 0.12, 0.005, 0.32, 0.28],
    "crop_a": [0.03, 0.045, 0.08, 0.05, 0.10, 0.21, 0.26, 0.28, 0.29, 0.10, 0.005, 0.22, 0.12],
    "crop_b": [0.03, 0.045, 0.08, 0.05, 0.11, 0.26, 0.32, 0.35, 0.36, 0.12, 0.005, 0.19, 0.09],
    "dense": [0.025, 0.03, 0.055, 0.03, 0.09, 0.25, 0.31, 0.34, 0.35, 0.12, 0.004, 0.16, 0.07],
    "sparse": [0.025, 0.03, 0.055, 0.03, 0.08, 0.20, 0.25, 0.27, 0.28, 0.10, 0.004, 0.20, 0.10],
    "roof": [0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.19, 0.10, 0.005, 0.22, 0.20],
    "asphalt": [0.06, 0.06, 0.07, 0.07, 0.08, 0.09, 0.09, 0.10, 0.10, 0.05, 0.003, 0.11, 0.10],
    "water": [0.07, 0.06, 0.05, 0.03, 0.02, 0.015, 0.01, 0.01, 0.01, 0.005, 0.002, 0.005, 0.003],
    "turbid": [0.08, 0.07, 0.07, 0.05, 0.04, 0.02, 0.015, 0.015, 0.012, 0.006, 0.002, 0.006, 0.004],
}
# class: (pattern, endmember where pattern ~ 1, endmember where ~ 0)
_LAND_CLASSES = [("AnnualCrop", "stripes", "crop_a", "soil"), ("PermanentCrop", "stripes", "crop_b", "soil"),
                 ("Forest", "blobs", "dense", "dense"), ("HerbaceousVegetation", "blobs", "sparse", "sparse"),
                 ("Residential", "grid", "roof", "asphalt"), ("SeaLake", "smooth", "water", "turbid")]


def _land_pattern(rng: np.random.Generator, kind: str, n: int, size: int) -> np.ndarray:
    """Spatial mixing map t (N, S, S) in [0, 1] for a land-use texture family."""
    yy, xx = _grid(size)
    if kind == "stripes":  # field rows at a random orientation and pitch
        ang, freq, phase = rng.uniform(0, np.pi, n), rng.uniform(0.12, 0.25, n), rng.uniform(0, 2 * np.pi, n)
        u = xx * np.cos(ang)[:, None, None] + yy * np.sin(ang)[:, None, None]
        wave = np.sin(2 * np.pi * freq[:, None, None] * u + phase[:, None, None])
        return _sigmoid(4.0 * wave + 0.8 * rng.standard_normal((n, size, size)))
    if kind == "blobs":  # canopy clumps with shadows
        return _sigmoid(2.5 * _smooth_noise(rng, n, size, 0.12))
    if kind == "grid":  # building blocks between streets
        fy, fx = rng.uniform(0.15, 0.3, (2, n))[:, :, None, None]
        py, px = rng.uniform(0, 2 * np.pi, (2, n))[:, :, None, None]
        blocks = (np.sin(2 * np.pi * fy * yy + py) > -0.3) & (np.sin(2 * np.pi * fx * xx + px) > -0.3)
        return 0.15 + 0.7 * blocks + 0.15 * rng.random((n, size, size))
    return 0.5 + 0.25 * _smooth_noise(rng, n, size, 0.05)  # smooth water


def _block_blur(x: np.ndarray, factor: int) -> np.ndarray:
    """Simulate a coarser ground sampling distance: block-average by ``factor`` then repeat (N, S, S)."""
    n, h, w = x.shape
    if h % factor or w % factor:
        return x
    blocks = x.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return np.repeat(np.repeat(blocks, factor, axis=1), factor, axis=2)


def _render_land(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Reflectance patches (N, 13, S, S) as uint16 (reflectance * 65535)."""
    n, n_bands = len(labels), len(HYPERSPECTRAL_BANDS)
    t = np.zeros((n, size, size))
    hi, lo = np.zeros((n, n_bands)), np.zeros((n, n_bands))
    for c, (_, pattern, e_hi, e_lo) in enumerate(_LAND_CLASSES):
        sel = np.flatnonzero(labels == c)
        t[sel] = _land_pattern(rng, pattern, sel.size, size)
        hi[sel], lo[sel] = _SPECTRA[e_hi], _SPECTRA[e_lo]
    # forest vs herbaceous: brightness contrast (shadows) within the same endmember
    shadow = np.isin(labels, (2, 3))[:, None]
    lo = np.where(shadow, lo * 0.55, lo)
    spectral_jitter = 1.0 + 0.06 * rng.standard_normal((n, n_bands))
    brightness = rng.uniform(0.8, 1.2, (n, 1))
    hi, lo = hi * spectral_jitter * brightness, lo * spectral_jitter * brightness
    img = t[:, None] * hi[:, :, None, None] + (1.0 - t[:, None]) * lo[:, :, None, None]
    haze = rng.uniform(0.0, 0.04, (n, 1, 1, 1)) * np.linspace(1.0, 0.1, n_bands)[None, :, None, None]
    img = img + haze + rng.normal(0.0, 0.004, img.shape)
    for b, factor in _BAND_RES.items():
        i = HYPERSPECTRAL_BANDS.index(b)
        img[:, i] = _block_blur(img[:, i], factor)
    return _u16(img)


def make_hyperspectral(out_dir: str | Path, seed: int = 0, n_pretrain: int = 2000, n_train: int = 600,
                       n_val: int = 200, n_test: int = 600, size: int = 16) -> dict[str, Path]:
    """EuroSAT-like 13-band Sentinel-2 patches (13, size, size) uint16 = reflectance * 65535, bands in
    :data:`HYPERSPECTRAL_BANDS` order; 60 m (B01, B09, B10) and 20 m bands are block-averaged by 4 and 2.

    Six land-use classes mix two endmember spectra with a class texture (stripes, blobs, street grid,
    smooth water). RGB texture/colour separates four groups; AnnualCrop vs PermanentCrop and Forest vs
    HerbaceousVegetation share their visible (B02-B04) spectra and differ only in red-edge/NIR/SWIR
    (B05-B08A, B11, B12), so an RGB-only model cannot separate those pairs.

    Datasets: ``pretrain`` (uniform classes), ``bands13`` (balanced train/val/test) and ``rgb`` (the same
    samples restricted to B04, B03, B02 = R, G, B).
    """
    _check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    out, family = Path(out_dir), "hyperspectral"
    counts = [n_train, n_val, n_test]
    classes = [c[0] for c in _LAND_CLASSES]
    groups = {"rgb": _RGB_BANDS, "red_edge_nir": ["B05", "B06", "B07", "B08", "B08A"],
              "swir": ["B11", "B12"], "atmosphere": ["B01", "B09", "B10"]}
    info = {"family": family, "seed": int(seed), "band_order": HYPERSPECTRAL_BANDS, "scale": 65535,
            "units": "reflectance * 65535", "channel_groups": groups,
            "rgb_confusable_pairs": [["AnnualCrop", "PermanentCrop"], ["Forest", "HerbaceousVegetation"]]}
    paths: dict[str, Path] = {}

    rng = _rng(seed, family, "pretrain")
    y = _natural(rng, n_pretrain, [1.0] * len(classes))
    paths["pretrain"] = _save(out, "pretrain", _render_land(rng, y, size), y, _split_codes([n_pretrain]),
                              channel_names=HYPERSPECTRAL_BANDS, class_names=classes, split_names=["train"],
                              info=info)
    rng = _rng(seed, family, "eval")
    y = _balanced_splits(rng, counts, len(classes))
    img = _render_land(rng, y, size)
    split = _split_codes(counts)
    paths["bands13"] = _save(out, "bands13", img, y, split, channel_names=HYPERSPECTRAL_BANDS,
                             class_names=classes, split_names=SPLITS, info=info)
    rgb_idx = [HYPERSPECTRAL_BANDS.index(b) for b in _RGB_BANDS]
    paths["rgb"] = _save(out, "rgb", img[:, rgb_idx], y, split, channel_names=_RGB_BANDS, class_names=classes,
                         split_names=SPLITS, info={**info, "channel_order": "R,G,B"})
    return paths


# ============================================================================================== histology
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])
# per-"hospital" stain vectors (unnormalised OD per unit stain) and illumination; hospital 3 is held out
_HOSPITALS = [  # (haematoxylin OD offset, eosin OD offset, illumination RGB)
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ((0.05, -0.05, 0.05), (0.05, -0.06, 0.0), (0.98, 0.97, 1.0)),
    ((-0.05, 0.03, 0.08), (-0.02, 0.0, 0.08), (1.0, 0.98, 0.96)),
    ((0.15, 0.15, -0.12), (0.25, -0.25, 0.15), (0.92, 0.95, 1.0)),
]
HISTOLOGY_CLASSES = ["fibrous/small-nuclei", "fibrous/large-nuclei", "loose/small-nuclei", "loose/large-nuclei"]


def _render_nuclei(rng: np.random.Generator, large: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin density (N, S, S) and binary nuclei mask of many small round (``large`` False) or fewer
    large elongated, irregular, vesicular nuclei; both kinds have the same darkness distribution and about
    the same expected area fraction. Each nucleus is drawn in a local window (vectorised over samples)."""
    n, k = len(large), size / 32.0
    half = int(np.ceil(5.5 * k)) + 1
    side = size + 2 * half
    offsets = np.arange(2 * half) - half + 1
    canvas = np.zeros(n * side * side, dtype=np.float32)
    mask = np.zeros(n * side * side, dtype=bool)
    count = np.where(large, rng.integers(4, 9, n), rng.integers(11, 21, n))
    for j in range(int(count.max())):
        sel = np.flatnonzero(j < count)
        m, big = sel.size, large[sel][:, None, None]
        cy, cx = rng.uniform(0, size, (2, m))
        a = k * np.where(big, rng.uniform(2.4, 3.4, (m, 1, 1)), rng.uniform(1.2, 1.7, (m, 1, 1)))
        b = k * np.where(big, rng.uniform(1.3, 1.9, (m, 1, 1)), rng.uniform(1.1, 1.6, (m, 1, 1)))
        theta, phase = rng.uniform(0, np.pi, (2, m, 1, 1))
        rows = np.floor(cy).astype(np.int64)[:, None, None] + offsets[None, :, None]
        cols = np.floor(cx).astype(np.int64)[:, None, None] + offsets[None, None, :]
        dy = (rows + 0.5 - cy[:, None, None]).astype(np.float32)
        dx = (cols + 0.5 - cx[:, None, None]).astype(np.float32)
        c, s = np.cos(theta), np.sin(theta)
        u, v = dx * c + dy * s, dy * c - dx * s
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        # irregular outline: radius modulated by 1 + w sin(3 angle + phase), angle in the nucleus frame
        r = np.sqrt(u**2 + v**2) + 1e-6
        cos_t, sin_t = u / r, v / r
        sin3 = (3 * sin_t - 4 * sin_t**3) * np.cos(3 * phase) + (4 * cos_t**3 - 3 * cos_t) * np.sin(3 * phase)
        d = d / (1.0 + np.where(big, 0.12, 0.03) * sin3)
        blob = _sigmoid((1.0 - d) * 2.5 * b) * rng.uniform(0.8, 1.2, (m, 1, 1))
        flat = (sel[:, None, None] * side + rows + half) * side + cols + half
        canvas[flat] = np.maximum(canvas[flat], blob)
        mask[flat] |= d < 1.0
    inner = (slice(None), slice(half, half + size), slice(half, half + size))
    vesicular = np.where(large[:, None, None], 0.75 + 0.35 * rng.random((n, size, size)), 1.0)
    return canvas.reshape(n, side, side)[inner] * vesicular, mask.reshape(n, side, side)[inner]


def _render_tissue(rng: np.random.Generator, stroma: np.ndarray, nuclei: np.ndarray, hospital: np.ndarray,
                   size: int) -> tuple[np.ndarray, np.ndarray]:
    """H&E tiles (N, 3, S, S) uint8 and nuclei masks (N, 1, S, S) uint8 via a Beer-Lambert stain model."""
    n = len(stroma)
    fibrous = (stroma == 0)[:, None, None]
    streaks = _band_noise(rng, n, size, rng.uniform(0, np.pi, n), rng.uniform(0.1, 0.2, n), 0.04, 0.02)
    loose = _smooth_noise(rng, n, size, 0.1)
    e_fib = rng.uniform(0.45, 0.75, (n, 1, 1)) * (0.75 + 0.25 * np.tanh(streaks))
    e_loose = rng.uniform(0.18, 0.32, (n, 1, 1)) * _sigmoid(3.0 * (loose + 0.3))
    eosin = np.where(fibrous, e_fib, e_loose)
    hema, mask = _render_nuclei(rng, nuclei == 1, size)
    hema += 0.06
    od = np.zeros((n, 3, size, size))
    illum = np.zeros((n, 3, 1, 1))
    for h_id, (dh, de, light) in enumerate(_HOSPITALS):
        sel = hospital == h_id
        h_vec, e_vec = _HEMATOXYLIN + np.asarray(dh), _EOSIN + np.asarray(de)
        jitter = 1.0 + 0.05 * rng.standard_normal((int(sel.sum()), 2, 1, 1, 1))
        od[sel] = (hema[sel, None] * h_vec[None, :, None, None] * jitter[:, 0]
                   + eosin[sel, None] * e_vec[None, :, None, None] * jitter[:, 1])
        illum[sel] = np.asarray(light)[None, :, None, None]
    rgb = illum * np.exp(-1.3 * od) + rng.normal(0.0, 0.015, od.shape)
    return _u8(rgb), mask[:, None].astype(np.uint8)


def make_histology(out_dir: str | Path, seed: int = 0, n_pretrain: int = 2000, n_train: int = 600,
                   n_val: int = 200, n_test: int = 600, size: int = 32) -> dict[str, Path]:
    """NCT/Camelyon-like H&E tiles (3, size, size) uint8 with the true nuclei mask (masks.npy, "nuclei").

    Haematoxylin/eosin concentration maps are rendered through a Beer-Lambert stain model with per-"hospital"
    stain vectors. Class = stroma type x nucleus type: stroma (simple, high variance: colour and texture) is
    dense fibrous pink with oriented streaks or pale loose tissue with gaps; nuclei (complex) are many small
    round or fewer large elongated irregular vesicular ones, with matched darkness and expected area fraction,
    so mean colour says little about the nucleus type.

    Datasets: ``pretrain`` (hospitals 0-2, 4 classes uniform), ``eval`` (4 classes balanced, train/val/test,
    hospitals 0-2) and ``shift`` (Camelyon-like: label = large "tumour" vs small "normal" nuclei with random
    stroma; train/val from hospitals 0-2, test from held-out hospital 3 with a different stain).
    """
    _check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    out, family = Path(out_dir), "histology"
    counts = [n_train, n_val, n_test]
    info = {"family": family, "seed": int(seed), "factors": {"stroma": ["fibrous", "loose"],
            "nuclei": ["small-round", "large-elongated"]}, "label_rule": "label = 2 * stroma + nuclei"}
    common = {"channel_names": ["R", "G", "B"], "mask_names": ["nuclei"]}
    paths: dict[str, Path] = {}

    rng = _rng(seed, family, "pretrain")
    y = _natural(rng, n_pretrain, [1.0] * 4)
    img, masks = _render_tissue(rng, y // 2, y % 2, rng.integers(0, 3, n_pretrain), size)
    paths["pretrain"] = _save(out, "pretrain", img, y, _split_codes([n_pretrain]), masks=masks,
                              class_names=HISTOLOGY_CLASSES, split_names=["train"], info=info, **common)
    rng = _rng(seed, family, "eval")
    y = _balanced_splits(rng, counts, 4)
    img, masks = _render_tissue(rng, y // 2, y % 2, rng.integers(0, 3, len(y)), size)
    paths["eval"] = _save(out, "eval", img, y, _split_codes(counts), masks=masks, class_names=HISTOLOGY_CLASSES,
                          split_names=SPLITS, info=info, **common)
    rng = _rng(seed, family, "shift")
    y = _balanced_splits(rng, counts, 2)
    hospital = np.concatenate([rng.integers(0, 3, n_train + n_val), np.full(n_test, 3)])
    img, masks = _render_tissue(rng, rng.integers(0, 2, len(y)), y, hospital, size)
    paths["shift"] = _save(out, "shift", img, y, _split_codes(counts), masks=masks, class_names=["normal", "tumour"],
                           split_names=SPLITS, info={**info, "label_rule": "label = nuclei factor",
                                                     "test_hospital": 3, "train_hospitals": [0, 1, 2]}, **common)
    return paths


# =================================================================================================== x-ray
def _render_xray(rng: np.random.Generator, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chest radiographs (N, 1, S, S) uint8 and lung masks (N, 1, S, S) uint8."""
    n = len(labels)
    yy, xx = _grid(size)
    v, u = 2 * yy / size - 1, 2 * xx / size - 1  # normalised coordinates in [-1, 1]
    body = _ellipse_dist(v, u, rng.normal(0.12, 0.04, n), rng.normal(0, 0.04, n), rng.uniform(0.8, 0.92, n),
                         rng.uniform(1.0, 1.15, n), rng.normal(0, 0.05, n))
    img = 0.08 + 0.45 * _sigmoid((1 - body) * 12)
    lung_soft, mask = np.zeros((n, size, size)), np.zeros((n, size, size), dtype=bool)
    centres = []
    lung_y = rng.normal(-0.05, 0.04, n)
    for side in (-1, 1):
        cy, cx = lung_y + rng.normal(0, 0.02, n), side * rng.uniform(0.34, 0.42, n)
        a, b = rng.uniform(0.22, 0.28, n), rng.uniform(0.48, 0.58, n)
        d = _ellipse_dist(v, u, cy, cx, a, b, side * rng.uniform(0.0, 0.15, n))
        lung_soft = np.maximum(lung_soft, _sigmoid((1 - d) * 10))
        mask |= d < 1.0
        centres.append((cy, cx, a, b))
    img -= 0.22 * lung_soft
    img += 0.12 * np.exp(-(u / rng.uniform(0.08, 0.12, (n, 1, 1))) ** 2) * (body < 1)  # spine / mediastinum
    heart = _ellipse_dist(v, u, rng.normal(0.35, 0.04, n), rng.normal(-0.12, 0.03, n), rng.uniform(0.2, 0.26, n),
                          rng.uniform(0.16, 0.22, n), rng.normal(0.3, 0.1, n))
    img += 0.1 * _sigmoid((1 - heart) * 8)
    rib_f, rib_p = rng.uniform(3.5, 4.5, (n, 1, 1)), rng.uniform(0, 2 * np.pi, (n, 1, 1))
    ribs = _sigmoid(8 * (np.sin(2 * np.pi * rib_f * (v + 0.35 * u**2) + rib_p) - 0.5))
    img += 0.06 * ribs * (body < 1)
    # pneumonia: 1-2 subtle opacities inside one lung (the complex feature)
    sick = labels == 1
    for blob in range(2):
        side = rng.integers(0, 2, n)
        cy, cx, a, b = (np.where(side == 0, left, right) for left, right in zip(*centres, strict=True))
        r, phi = 0.65 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
        by, bx = cy + r * b * np.sin(phi), cx + r * a * np.cos(phi)
        sd = rng.uniform(0.1, 0.18, (n, 1, 1))
        amp = rng.uniform(0.08, 0.15, (n, 1, 1)) * (sick & ((blob == 0) | (rng.random(n) < 0.5)))[:, None, None]
        img += amp * lung_soft * np.exp(-((v - by[:, None, None]) ** 2 + (u - bx[:, None, None]) ** 2) / (2 * sd**2))
    # exposure (the simple feature) is only weakly related to the label
    gain = rng.normal(1.0, 0.1, (n, 1, 1)) + 0.03 * (2 * sick - 1)[:, None, None]
    img = img * gain + rng.normal(0.0, 0.015, img.shape)
    return _u8(img)[:, None], mask[:, None].astype(np.uint8)


def make_xray(out_dir: str | Path, seed: int = 0, n_pretrain: int = 2000, n_train: int = 600,
              n_val: int = 200, n_test: int = 600, size: int = 32,
              pretrain_prevalence: float = 0.3) -> dict[str, Path]:
    """ChestMNIST/PneumoniaMNIST-like radiographs (1, size, size) uint8 with the true lung mask ("lungs").

    Body outline, two darker lung ellipses, spine/mediastinum, heart shadow and curved ribs, with random
    geometry. Pneumonia (label 1) adds 1-2 subtle Gaussian opacities (+0.08-0.15 on a ~0.3 lung) inside the
    lungs (complex); exposure gain is only weakly correlated with the label (simple).

    Datasets: ``pretrain`` (ChestMNIST analogue, ``pretrain_prevalence`` pneumonia) and ``pneumonia``
    (balanced train/val/test).
    """
    _check_params(seed, n_pretrain=n_pretrain, n_train=n_train, n_val=n_val, n_test=n_test, size=size)
    if not 0.0 <= pretrain_prevalence <= 1.0:
        raise ValueError(f"parameter 'pretrain_prevalence' must be in [0, 1], got {pretrain_prevalence!r}")
    out, family = Path(out_dir), "xray"
    info = {"family": family, "seed": int(seed)}
    common = {"channel_names": ["X-ray"], "class_names": ["normal", "pneumonia"], "mask_names": ["lungs"]}
    paths: dict[str, Path] = {}
    rng = _rng(seed, family, "pretrain")
    y = (rng.random(n_pretrain) < pretrain_prevalence).astype(np.int64)
    img, masks = _render_xray(rng, y, size)
    paths["pretrain"] = _save(out, "pretrain", img, y, _split_codes([n_pretrain]), masks=masks,
                              split_names=["train"], info={**info, "prevalence": pretrain_prevalence}, **common)
    rng = _rng(seed, family, "pneumonia")
    counts = [n_train, n_val, n_test]
    y = _balanced_splits(rng, counts, 2)
    img, masks = _render_xray(rng, y, size)
    paths["pneumonia"] = _save(out, "pneumonia", img, y, _split_codes(counts), masks=masks, split_names=SPLITS,
                               info=info, **common)
    return paths


# ================================================================================================ registry
DEMO_FAMILIES: dict[str, Callable[..., dict[str, Path]]] = {
    "mnist_cifar": make_mnist_cifar,
    "multiplex": make_multiplex,
    "hyperspectral": make_hyperspectral,
    "histology": make_histology,
    "xray": make_xray,
}


def make_demo(family: str, out_dir: str | Path, seed: int = 0, **params: Any) -> dict[str, Path]:
    """Build one demo family; unknown families or parameters raise ``ValueError`` naming them."""
    if family not in DEMO_FAMILIES:
        raise ValueError(f"unknown demo family {family!r}; known: {sorted(DEMO_FAMILIES)}")
    fn = DEMO_FAMILIES[family]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("out_dir", "seed")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for demo family {family!r}; allowed: {allowed}")
    return fn(out_dir, seed, **params)
