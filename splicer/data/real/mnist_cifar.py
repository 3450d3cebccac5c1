"""MNIST-CIFAR (Shah et al. 2020, "The pitfalls of simplicity bias in neural networks") from the upstream MNIST
idx files and the CIFAR-10 python tarball.

Each image is (3, 64, 32) uint8: an MNIST digit (28x28, zero-padded 2 px to 32x32, grey repeated to R, G, B) on
top (rows 0-32) and a CIFAR-10 image below (rows 32-64). Class 0 = digit 0 + automobile (CIFAR label 1), class
1 = digit 1 + truck (CIFAR label 9) (the pairs are the ``mnist_digits`` / ``cifar_classes`` params). Other
digits and CIFAR classes are dropped.

Pairing: within each upstream pool (train, test) and class, the MNIST images and the CIFAR images of that class
are shuffled (seeded) and matched one to one; the larger side's surplus is dropped (each upstream image is used
at most once). The pairs of a pool are then shuffled (seeded), so classes are interleaved within each split.
Splits: ``val`` is carved from the upstream train pairs (``val_fraction``, stratified by class, seeded),
``test`` is the upstream test pairs; each split is a contiguous block.

Datasets (names, channels, classes and splits as the demo family of :func:`splicer.data.demo.make_mnist_cifar`):

* ``pretrain`` -- the train-split pairs (split names ``["train"]``; labels kept, unused by self-supervision);
* ``pretrain_cifar_only`` -- the CIFAR halves (3, 32, 32) of ``pretrain``;
* ``rNONE`` -- both halves agree with the label; train/val/test;
* ``rMNIST`` -- as ``rNONE`` but the MNIST halves are shuffled among the rows of each split, so only the CIFAR
  half predicts the label; ``rCIFAR`` -- the CIFAR halves shuffled instead;
* ``mnist_only`` / ``cifar_only`` -- the (3, 32, 32) halves of ``rNONE`` (``cifar_only``'s train split is also the
  pretraining set of the CIFAR-only ceiling in config/paper.yaml).

Uncapped, ``pretrain`` holds exactly the images of ``rNONE``'s train split. A randomised half is a random
permutation of that half among the rows of one split (seeded), so its images and class balance are unchanged but
its class is independent of the label.

Caps: ``pretrain`` is capped from the train pairs, ``pretrain_cifar_only`` from ``pretrain``'s rows; ``rNONE``
from each split's pairs, and ``rMNIST``, ``rCIFAR``, ``mnist_only``, ``cifar_only`` from ``rNONE``'s rows of
that split -- so with equal caps (e.g. ``"*"``) all evaluation variants hold the same samples, and every cap is
an upper bound on its own dataset. Caps are applied to the pairs (from the labels) before any pixel is cut out.
"""

from __future__ import annotations

import gzip
import importlib
import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.format import save_dataset
from splicer.data.real.common import (
    SPLITS,
    BuildError,
    Caps,
    check_params,
    require,
    split_order,
    stable_rng,
    three_way_split,
)

__all__ = ["CIFAR10_CLASSES", "DEFAULTS", "build_mnist_cifar", "read_cifar_batches", "read_idx"]

KIND = "mnist_cifar"

DEFAULTS: dict[str, Any] = {
    # share of the paired upstream *train* images held out (per class, seeded) as the val split; the paper and
    # Shah et al. 2020 use only train/test, the probe needs a val split to choose its regularisation
    "val_fraction": 0.1,
    # MNIST digit shown for class 0 and for class 1 (Shah et al. 2020: 0 and 1)
    "mnist_digits": [0, 1],
    # CIFAR-10 label shown for class 0 and for class 1 (Shah et al. 2020 and the paper: 1 automobile, 9 truck)
    "cifar_classes": [1, 9],
}

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
"""CIFAR-10 label names (batches.meta ``label_names``), by label."""

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_FILE = "cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
POOLS = ("train", "test")  # upstream pools: train (-> train + val splits) and test (-> test split)
CIFAR_MEMBERS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

MNIST_SIDE, HALF = 28, 32
_PAD = (HALF - MNIST_SIDE) // 2
_IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: ubyte, 3 dims; 0x0801: ubyte, 1 dim


# ------------------------------------------------------------------------------------------------------- readers
def read_idx(path: str | Path, what: str) -> np.ndarray:
    """An MNIST idx ubyte file, gzip-compressed (the download) or not (torchvision's extracted ``MNIST/raw/``):
    ``what`` = "images" -> (N, 28, 28) uint8, "labels" -> (N,) uint8.

    Any problem (bad gzip, truncated data, wrong magic number or dimensions) is a :class:`BuildError` naming it.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise BuildError(path, f"not a readable gzip file ({type(err).__name__}: {err})") from err
    if len(raw) < 4:
        raise BuildError(path, f"idx header truncated ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[what]:
        raise BuildError(
            path,
            f"bad idx magic number {magic} (0x{magic:08x}); expected {_IDX_MAGIC[what]} "
            f"(0x{_IDX_MAGIC[what]:08x}) for an idx ubyte {what} file",
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BuildError(path, f"idx header truncated ({len(raw)} bytes, dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if what == "images" and dims[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise BuildError(path, f"idx dimensions {dims}; expected (N, {MNIST_SIDE}, {MNIST_SIDE}) MNIST images")
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        problem = "truncated" if len(raw) - header < size else "has trailing bytes"
        raise BuildError(
            path, f"idx data {problem}: {len(raw) - header} bytes after the header, dimensions {dims} need {size}"
        )
    return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(dims)


def _numpy_global(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy 2) or ``numpy.core.<module>.<name>`` (numpy 1), without the
    deprecated ``numpy.core`` shim of numpy 2."""
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (no other global is resolved: no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in (
            "numpy",
            "numpy.core.multiarray",
            "numpy._core.multiarray",
            "numpy.core.numeric",
            "numpy._core.numeric",
        ):
            if module == "numpy" and name in ("ndarray", "dtype"):
                return getattr(np, name)
            if module.endswith("multiarray") and name in ("_reconstruct", "scalar"):
                return _numpy_global("multiarray", name)
            if module.endswith("numeric") and name == "_frombuffer":
                return _numpy_global("numeric", name)
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle written by Python 3
            import _codecs

            return _codecs.encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def _get(batch: dict, key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def _parse_batch(raw: bytes, where: str, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, data rows (k, 3072)) of the rows of one pickled batch whose label is in ``keep``."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure of a foreign file
        raise BuildError(where, f"cannot unpickle the CIFAR-10 batch ({type(err).__name__}: {err})") from err
    if not isinstance(batch, dict):
        raise BuildError(where, f"a CIFAR-10 batch must be a dict, got {type(batch).__name__}")
    missing = [k for k in ("data", "labels") if k not in batch and k.encode() not in batch]
    if missing:
        raise BuildError(where, f"CIFAR-10 batch lacks key(s) {[k.encode() for k in missing]}; has {sorted(batch)}")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * HALF**2:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise BuildError(where, f"b'data' must be a uint8 array (N, {3 * HALF**2}), got {desc}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise BuildError(where, f"b'labels' must be a list of integers: {err}") from err
    if labels.shape != (data.shape[0],):
        raise BuildError(where, f"b'labels' has shape {labels.shape} for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise BuildError(where, f"b'labels' must lie in [0, 10), got [{labels.min()}, {labels.max()}]")
    sel = np.flatnonzero(np.isin(labels, keep))
    return labels[sel], np.ascontiguousarray(data[sel])


def read_cifar_batches(path: str | Path, keep: list[int] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The CIFAR-10 python tarball in one pass, or torchvision's extracted ``cifar-10-batches-py/`` folder:
    ``{"train": (labels, rows), "test": (labels, rows)}`` with the rows (k, 3072) uint8 (R, G, B planes of 32x32)
    of the labels in ``keep`` (all when None), batches in order.

    The pickles are read with a restricted unpickler (plain containers and numpy arrays only). A missing,
    unreadable or malformed member is a :class:`BuildError` naming ``<archive>:<member>`` (or the batch file).
    """
    path = Path(path)
    keep_arr = np.arange(len(CIFAR10_CLASSES)) if keep is None else np.asarray(keep)
    wanted = {f"{CIFAR_DIR}/{m}": (pool, m) for pool, members in CIFAR_MEMBERS.items() for m in members}
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if path.is_dir():
        for name, (_, member) in wanted.items():
            batch = path / member
            try:
                raw = batch.read_bytes()
            except OSError as err:
                raise BuildError(batch, f"cannot be read ({err}); expected torchvision's {CIFAR_DIR}/{member}") from err
            found[name] = _parse_batch(raw, str(batch), keep_arr)
        return _pools(found)
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name not in wanted or member.name in found:
                    continue
                where = f"{path}:{member.name}"
                fh = tar.extractfile(member)
                if fh is None:
                    raise BuildError(where, "is not a regular file")
                raw = fh.read()
                if len(raw) != member.size:
                    raise BuildError(where, f"truncated: {len(raw)} of {member.size} bytes")
                found[member.name] = _parse_batch(raw, where, keep_arr)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise BuildError(path, f"not a readable .tar.gz ({type(err).__name__}: {err})") from err
    if missing := [name for name in wanted if name not in found]:
        raise BuildError(f"{path}:{missing[0]}", f"missing from the archive (missing members: {missing})")
    return _pools(found)


def _pools(found: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The batches of each upstream pool, concatenated in order."""
    out = {}
    for pool, members in CIFAR_MEMBERS.items():
        parts = [found[f"{CIFAR_DIR}/{m}"] for m in members]
        out[pool] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


# ------------------------------------------------------------------------------------------------------- params
def _check(params: Mapping) -> dict[str, Any]:
    p = check_params(KIND, params, DEFAULTS)
    if not 0.0 < float(p["val_fraction"]) < 1.0:
        raise ValueError(
            f"datasets entry of kind {KIND!r}: params.val_fraction must be in (0, 1), got {p['val_fraction']!r}"
        )
    for key, top in (("mnist_digits", 10), ("cifar_classes", len(CIFAR10_CLASSES))):
        v = list(p[key])
        if (
            len(v) != 2
            or len(set(v)) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < top for x in v)
        ):
            raise ValueError(
                f"datasets entry of kind {KIND!r}: params.{key} must be two different integers in "
                f"[0, {top}), got {p[key]!r}"
            )
        p[key] = v
    return p


# ------------------------------------------------------------------------------------------------------ pairing
def _pair(
    mnist_labels: np.ndarray, cifar_labels: np.ndarray, p: dict, seed: int, pool: str, files: dict[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(MNIST index, CIFAR index, label) of every pair of one upstream pool, shuffled; plus counts."""
    m_idx, c_idx, labels = [], [], []
    counts: dict[str, Any] = {}
    for c, (digit, cifar) in enumerate(zip(p["mnist_digits"], p["cifar_classes"], strict=True)):
        ms, cs = np.flatnonzero(mnist_labels == digit), np.flatnonzero(cifar_labels == cifar)
        if ms.size == 0:
            raise BuildError(files["mnist"], f"no MNIST digit {digit} in the {pool} labels (class {c})")
        if cs.size == 0:
            raise BuildError(
                files["cifar"],
                f"no CIFAR-10 {CIFAR10_CLASSES[cifar]} (label {cifar}) in the {pool} batches (class {c})",
            )
        rng = stable_rng(seed, KIND, "pair", pool, str(c))
        k = min(ms.size, cs.size)
        m_idx.append(rng.permutation(ms)[:k])
        c_idx.append(rng.permutation(cs)[:k])
        labels.append(np.full(k, c, np.int64))
        counts[str(c)] = {"mnist": int(ms.size), "cifar": int(cs.size), "pairs": int(k)}
    m, cc, y = np.concatenate(m_idx), np.concatenate(c_idx), np.concatenate(labels)
    order = stable_rng(seed, KIND, "order", pool).permutation(y.size)
    return m[order], cc[order], y[order], counts


# ------------------------------------------------------------------------------------------------------- build
def build_mnist_cifar(out: Path, files: Mapping[str, Path], params: Mapping, caps: Caps, seed: int) -> dict[str, Path]:
    """Build the MNIST-CIFAR datasets (see the module docstring) into ``out``; returns ``{name: path}``."""
    p = _check(params)
    out = Path(out)
    paths = {name: require(files, name, KIND) for pair in MNIST_FILES.values() for name in pair}
    paths[CIFAR_FILE] = require(files, CIFAR_FILE, KIND, folder_ok=True)  # or cifar-10-batches-py/, in place

    # labels first; pixels are only cut out for the rows that survive the caps
    mnist_labels = {pool: read_idx(paths[lab], "labels") for pool, (_, lab) in MNIST_FILES.items()}
    cifar = read_cifar_batches(paths[CIFAR_FILE], keep=p["cifar_classes"])
    parts: dict[str, list[np.ndarray]] = {"m": [], "c": [], "y": [], "pool": [], "split": []}
    upstream = {}
    for code, pool in enumerate(POOLS):
        names = {"mnist": str(paths[MNIST_FILES[pool][1]]), "cifar": str(paths[CIFAR_FILE])}
        m, c, labels, upstream[pool] = _pair(mnist_labels[pool], cifar[pool][0], p, seed, pool, names)
        if pool == "train":
            f = float(p["val_fraction"])
            codes = three_way_split(labels.size, [1.0 - f, f, 0.0], seed, f"{KIND}/val", labels)
        else:
            codes = np.full(labels.size, SPLITS.index("test"), np.uint8)
        for key, arr in zip(parts, (m, c, labels, np.full(labels.size, code, np.uint8), codes), strict=True):
            parts[key].append(arr)
    order = split_order(np.concatenate(parts["split"]))
    src_m, src_c, y, pool_of, split = (np.concatenate(parts[k])[order] for k in parts)

    base = {s: np.flatnonzero(split == k) for k, s in enumerate(SPLITS)}
    rows: dict[str, dict[str, np.ndarray]] = {}
    rows["pretrain"] = {"train": caps.apply(base["train"], "pretrain", "train", seed)}
    rows["pretrain_cifar_only"] = {"train": caps.apply(rows["pretrain"]["train"], "pretrain_cifar_only", "train", seed)}
    rows["rNONE"] = {s: caps.apply(base[s], "rNONE", s, seed) for s in SPLITS}
    for name in ("rMNIST", "rCIFAR", "mnist_only", "cifar_only"):
        rows[name] = {s: caps.apply(rows["rNONE"][s], name, s, seed) for s in SPLITS}

    mnist_images = {}
    for pool in POOLS:
        img_file, lab_file = (paths[n] for n in MNIST_FILES[pool])
        mnist_images[pool] = read_idx(img_file, "images")
        if mnist_images[pool].shape[0] != mnist_labels[pool].shape[0]:
            raise BuildError(
                img_file,
                f"{mnist_images[pool].shape[0]} images but {lab_file.name} has {mnist_labels[pool].shape[0]} labels",
            )

    def mnist_half(r: np.ndarray) -> np.ndarray:
        """(n, 3, 32, 32): the MNIST digits of rows ``r``, zero-padded and repeated to R, G, B."""
        digits = np.zeros((r.size, HALF, HALF), np.uint8)
        for code, pool in enumerate(POOLS):
            sel = pool_of[r] == code
            digits[sel, _PAD : _PAD + MNIST_SIDE, _PAD : _PAD + MNIST_SIDE] = mnist_images[pool][src_m[r[sel]]]
        return np.repeat(digits[:, None], 3, axis=1)

    def cifar_half(r: np.ndarray) -> np.ndarray:
        """(n, 3, 32, 32): the CIFAR images of rows ``r`` (R, G, B planes of 32x32)."""
        half = np.zeros((r.size, 3 * HALF * HALF), np.uint8)
        for code, pool in enumerate(POOLS):
            sel = pool_of[r] == code
            half[sel] = cifar[pool][1][src_c[r[sel]]]
        return half.reshape(-1, 3, HALF, HALF)

    classes = ["0", "1"]
    meaning = {
        str(c): f"digit {d} / {CIFAR10_CLASSES[k]}"
        for c, (d, k) in enumerate(zip(p["mnist_digits"], p["cifar_classes"], strict=True))
    }
    regions = {"mnist": {"rows": [0, HALF], "cols": [0, HALF]}, "cifar": {"rows": [HALF, 2 * HALF], "cols": [0, HALF]}}
    base_info = {
        "family": KIND,
        "source": "MNIST + CIFAR-10 (Shah et al. 2020 MNIST-CIFAR)",
        "seed": int(seed),
        "half_size": HALF,
        "regions": regions,
        "class_meaning": meaning,
        "mnist_digits": p["mnist_digits"],
        "cifar_classes": p["cifar_classes"],
        "val_fraction": float(p["val_fraction"]),
        "pairing": "per pool and class, shuffled MNIST and CIFAR images matched one to one (surplus dropped)",
        "upstream": upstream,
        "caps": caps.limits,
        "splits_from": {
            "train": "upstream train pairs",
            "val": "carved from the upstream train pairs",
            "test": "upstream test pairs",
        },
    }
    half_info = {k: v for k, v in base_info.items() if k != "regions"}
    rgb = ["R", "G", "B"]
    written: dict[str, Path] = {}

    def save(name: str, images: np.ndarray, r: dict[str, np.ndarray], info: dict) -> None:
        split_names = list(r)
        codes = np.concatenate([np.full(r[s].size, k, np.uint8) for k, s in enumerate(split_names)])
        labels = np.concatenate([y[r[s]] for s in split_names])
        meta = {
            "name": name,
            "channel_names": rgb,
            "class_names": classes,
            "split_names": split_names,
            "mask_names": [],
            "info": {**info, "counts": {s: int(r[s].size) for s in split_names}},
        }
        written[name] = save_dataset(out / name, images, labels, codes, meta)

    def flat(r: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate(list(r.values()))

    r = rows["pretrain"]
    save(
        "pretrain",
        np.concatenate([mnist_half(flat(r)), cifar_half(flat(r))], 2),
        r,
        {**base_info, "randomised": None, "pool": "the train split's pairs"},
    )
    r = rows["pretrain_cifar_only"]
    save("pretrain_cifar_only", cifar_half(flat(r)), r, {**half_info, "randomised": None, "component": "cifar"})

    for name, randomised in (("rNONE", None), ("rMNIST", "mnist"), ("rCIFAR", "cifar")):
        r = rows[name]
        top_rows, bottom_rows, agree = [], [], {}
        for s in SPLITS:
            shuffled = r[s][stable_rng(seed, KIND, "randomise", name, s).permutation(r[s].size)]
            top_rows.append(shuffled if randomised == "mnist" else r[s])
            bottom_rows.append(shuffled if randomised == "cifar" else r[s])
            if randomised:
                agree[s] = float(np.mean(y[shuffled] == y[r[s]])) if r[s].size else None
        info = {**base_info, "randomised": randomised}
        if randomised:
            info["randomisation"] = (
                f"the {randomised.upper()} halves are shuffled among the rows of each split, so "
                f"their class is independent of the label"
            )
            info["randomised_half_agrees_with_label"] = agree
        top, bottom = mnist_half(np.concatenate(top_rows)), cifar_half(np.concatenate(bottom_rows))
        save(name, np.concatenate([top, bottom], 2), r, info)
    save("mnist_only", mnist_half(flat(rows["mnist_only"])), rows["mnist_only"], {**half_info, "component": "mnist"})
    save("cifar_only", cifar_half(flat(rows["cifar_only"])), rows["cifar_only"], {**half_info, "component": "cifar"})
    return written
