"""The segment stage: give every image of a dataset a set of masks from a segmenter chosen in config.

A dataset entry's ``segment`` section (``config.schema.yaml``)::

    segment: {segmenter: hovernet, weights: path/or/null, fallback: classical_nuclei, options: {mpp: 0.5}}

Segmenters (``SEGMENTER_NAMES``):

* ``truth``: the masks a dataset already carries (demo generators know them by construction; the ``folder`` kind
  reads the user's own mask files).
* ``classical_nuclei`` / ``classical_lungs``: weight-free textbook recipes (:mod:`splicer.segmenters`).
* ``hovernet``: HoVer-Net nuclei (TIAToolbox ``hovernet_fast-pannuke``) at the model's 0.25 um/px: images are
  resampled by ``options.mpp / 0.25`` (NCT-CRC-HE: 0.5 um/px, x2) and the masks brought back.
* ``hybridgnet``: HybridGNet lung landmarks at 1024 px, rasterised to polygons and resized back.

The pretrained ones (:mod:`splicer.pretrained_segmenters`) need their package or weights. Without them the stage
stops with an error saying what to install or where to put the weights -- unless the section names a
``fallback`` (a weight-free segmenter): then that one runs, a warning is logged, and ``segmentation.json``
records ``segmenter`` (what ran), ``requested`` and ``fallback_reason``. Only unavailability falls back; a model
that loads but fails while running is an error.

Options (``options``; unknown keys are errors), with defaults:

* ``hovernet``: ``model`` (TIAToolbox pretrained name, ``hovernet_fast-pannuke``), ``mpp`` (the dataset's um/px,
  0.5), ``patch_input`` (network input side; null: from TIAToolbox, else 256), ``threshold`` (0.5,
  on the nucleus probability), ``min_area`` (10 px at model resolution), ``batch_size`` (images per step, 8),
  ``patch_batch`` (patches per forward pass, 16), ``device`` (``auto``).
* ``hybridgnet``: ``loader`` (``package.module:function`` building the model for a state-dict ``weights``),
  ``input_size`` (1024), ``landmarks`` ({right_lung: 44, left_lung: 50, heart: 26}, in output order), ``masks``
  ([lungs]; names among the landmark groups and ``lungs`` = both lungs), ``coords`` (``normalized``/``pixels``),
  ``batch_size`` (4), ``device`` (``auto``).

Masks are computed in chunks of images and, when a cache folder is given (the Snakemake rule gives
``results/<name>/cache/segment``), each chunk is cached as bit-packed arrays under a key of the segmenter, its
version, its output-affecting options and the weights' SHA-256 (``<cache>/<key>/record.json`` says which), and
the chunk's image bytes (``<key>/<hash of the chunk's pixels>.npz``). A rerun -- after an interruption, a
resubmitted cluster job, or a rebuilt but identical dataset -- reuses every cached chunk; another segmenter, other
options or other weights compute afresh. ``device`` and batch sizes are not part of the key. ``truth`` is never
cached (its masks come from the dataset, not from the pixels).

The output dataset links (or copies) the input arrays and adds ``masks.npy`` plus ``segmentation.json``. When the
input already carries masks of the same names (the demo's ground truth), the record holds the segmenter's Dice
against them; it also counts images whose mask is empty (``empty_masks``; their region-of-interest component is
an all-zero image).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splicer.data.format import ImageDataset, array_records, load_dataset
from splicer.fileio import write_atomic
from splicer.segmenters import classical_lungs, classical_nuclei, dice

__all__ = [
    "PRETRAINED",
    "SEGMENTERS",
    "SEGMENTER_NAMES",
    "SegmentSpec",
    "check_segment_jobs",
    "mask_relevant",
    "parse_spec",
    "segment_dataset",
    "segment_manifest",
    "unavailable",
]

log = logging.getLogger(__name__)

SEGMENTER_VERSION = "2"  # of this stage (record and cache layout)
VERSIONS = {"truth": "1", "classical_nuclei": "1", "classical_lungs": "1", "hovernet": "1", "hybridgnet": "1"}
CHUNK = 256  # images per computed (and cached) chunk


def _truth(data: ImageDataset) -> tuple[np.ndarray, list[str]]:
    if data.masks is None:
        raise ValueError(
            f"segmenter 'truth' needs masks stored with the dataset, but {data.path} has no masks.npy; "
            "choose a segmenter that computes masks"
        )
    return np.asarray(data.masks), list(data.mask_names)


SEGMENTERS: dict[str, Callable[[ImageDataset], tuple[np.ndarray, list[str]]]] = {
    "truth": _truth,
    "classical_nuclei": classical_nuclei,
    "classical_lungs": classical_lungs,
}
"""Weight-free segmenters: ``dataset -> (masks (N, M, H, W) uint8, mask names)``."""
PRETRAINED = ("hovernet", "hybridgnet")
SEGMENTER_NAMES = (*SEGMENTERS, *PRETRAINED)

OPTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "hovernet": {
        "model": "hovernet_fast-pannuke",
        "mpp": 0.5,
        "patch_input": None,
        "threshold": 0.5,
        "min_area": 10,
        "batch_size": 8,
        "patch_batch": 16,
        "device": "auto",
    },
    "hybridgnet": {
        "loader": None,
        "source": None,  # a checkout of ngaggion/HybridGNet: builds the model a state-dict weights file loads into
        "input_size": 1024,
        "landmarks": {"right_lung": 44, "left_lung": 50, "heart": 26},
        "masks": ["lungs"],
        "coords": "normalized",
        "batch_size": 4,
        "device": "auto",
    },
}
RUNTIME_OPTIONS = ("batch_size", "patch_batch", "device")  # do not change the masks: not in the cache key


@dataclass(frozen=True)
class SegmentSpec:
    """A parsed ``segment`` config section."""

    segmenter: str
    weights: str | None = None
    fallback: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def weights_inputs(spec: Mapping[str, Any]) -> list[str]:
    """The weights file of a ``segment`` section when it exists (a Snakemake input: a changed file reruns the
    job); a missing one is reported by the job itself, with what to do."""
    weights = spec.get("weights")
    return [weights] if weights and os.path.isfile(weights) else []


def unavailable(spec: Mapping[str, Any]) -> str | None:
    """Why a ``segment`` section's pretrained segmenter cannot run in this environment, with what to install or
    where to put the weights file; None when it can (weights file present, TIAToolbox importable for HoVer-Net),
    when a ``fallback`` is set, or for a weight-free segmenter. Cheap: nothing is imported or loaded."""
    import importlib.util

    s = parse_spec(spec)
    if s.segmenter not in PRETRAINED or s.fallback is not None:
        return None
    weights = Path(s.weights) if s.weights else None
    # a self-contained network file (HybridGNet cannot be exported: its state dict needs source or loader)
    suffixes = (".pt2", ".ts", ".jit", ".pt") if s.segmenter == "hovernet" else (".pt2", ".ts", ".jit")
    program = weights is not None and weights.suffix in suffixes
    source = s.options.get("source")
    checkout = bool(source) and (Path(source) / "models" / "HybridGNet_2_IGSC.py").is_file()
    builds = s.segmenter == "hybridgnet" and (bool(s.options.get("loader")) or checkout)
    if weights is not None and weights.is_file():
        if program or builds or (s.segmenter == "hovernet" and importlib.util.find_spec("tiatoolbox") is not None):
            return None
    elif s.segmenter == "hovernet" and weights is None and importlib.util.find_spec("tiatoolbox") is not None:
        return None
    fallback = "classical_nuclei" if s.segmenter == "hovernet" else "classical_lungs"
    if s.segmenter == "hovernet":
        need = (
            f"its weights file {weights.absolute()} does not exist"
            if weights is not None and not weights.is_file()
            else "TIAToolbox is not importable here"
        )
        todo = (
            "install TIAToolbox where the segment jobs run (`pip install tiatoolbox`; 2.1.3 pins torch<2.13 and "
            "numpy<2.4.4, so it needs its own environment), or export HoVer-Net once in such an environment to a "
            "torch.export file (recipe in splicer/pretrained_segmenters.py) and set segment.weights to it (e.g. "
            "resources/weights/hovernet.pt2)"
        )
    else:
        if weights is None:
            need = "no weights are set"
        elif not weights.is_file():
            need = f"its weights file {weights.absolute()} does not exist"
        else:
            need = (
                f"{weights} is a state dict, but neither segment.options.loader nor a HybridGNet checkout at "
                f"segment.options.source ({Path(source).absolute() if source else 'unset'}) builds the model"
            )
        todo = (
            "put HybridGNet's trained state dict (bestMSE.pt of the HybridGNet release) at segment.weights and a "
            "checkout of github.com/ngaggion/HybridGNet at segment.options.source (its model code builds the "
            "network; it needs torch_geometric < 2.5), see splicer/pretrained_segmenters.py"
        )
    todo = todo[0].upper() + todo[1:]
    return f"segmenter {s.segmenter!r} cannot run: {need}. {todo}; or set segment.fallback: {fallback}"


def check_segment_jobs(config: Mapping[str, Any], workflow: Any) -> None:
    """Snakemake ``onstart`` hook (after the DAG is built, before any job; not in a dry run): a RuntimeError naming
    every entry whose segment job this run will execute but whose pretrained segmenter cannot run here
    (:func:`unavailable`), so a user learns it before the datasets are built, not after."""
    from splicer.pipeline.checks import segment_job_problems

    try:
        data = {job.wildcards["data"] for job in workflow.dag.needrun_jobs() if job.rule.name == "segment"}
    except (AttributeError, KeyError, TypeError):  # another Snakemake's DAG API: check every entry
        data = None
    if problems := segment_job_problems(config, data):
        raise RuntimeError("segment jobs of this run cannot run here:\n" + "\n".join(problems.values()))


def mask_relevant(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A ``segment`` section without its runtime options (device, batch sizes): what decides the masks, so
    that changing only how fast they are computed does not make Snakemake redo segmentation and retrain."""
    options = {k: v for k, v in dict(spec.get("options") or {}).items() if k not in RUNTIME_OPTIONS}
    return {**dict(spec), "options": options}


def parse_spec(spec: str | Mapping[str, Any]) -> SegmentSpec:
    """A segmenter name or a ``segment`` section -> :class:`SegmentSpec` with defaults filled; ValueError naming
    the offending key otherwise."""
    if isinstance(spec, str):
        spec = {"segmenter": spec}
    if not isinstance(spec, Mapping) or "segmenter" not in spec:
        raise ValueError(f"segment: need a mapping with key 'segmenter', got {spec!r}")
    extra = sorted(set(spec) - {"segmenter", "weights", "fallback", "options"})
    if extra:
        raise ValueError(f"segment: unknown key(s) {extra}; known: segmenter, weights, fallback, options")
    name = spec["segmenter"]
    if name not in SEGMENTER_NAMES:
        raise ValueError(f"segment.segmenter: unknown segmenter {name!r}; choose one of {list(SEGMENTER_NAMES)}")
    weights, fallback = spec.get("weights"), spec.get("fallback")
    options = dict(spec.get("options") or {})
    if name not in PRETRAINED:
        for key, value in (("weights", weights), ("fallback", fallback), ("options", options)):
            if value:
                raise ValueError(
                    f"segment.{key}: only the pretrained segmenters {list(PRETRAINED)} take {key}; {name!r} does not"
                )
        return SegmentSpec(name)
    if weights is not None and not isinstance(weights, str | os.PathLike):
        raise ValueError(f"segment.weights: must be a path, got {weights!r}")
    if fallback is not None and fallback not in SEGMENTERS:
        raise ValueError(
            f"segment.fallback: {fallback!r} is not a weight-free segmenter; choose one of {sorted(SEGMENTERS)}"
        )
    defaults = OPTION_DEFAULTS[name]
    extra = sorted(set(options) - set(defaults))
    if extra:
        raise ValueError(f"segment.options: unknown key(s) {extra} for segmenter {name!r}; known: {sorted(defaults)}")
    options = {**defaults, **options}
    _check_options(name, options)
    return SegmentSpec(name, None if weights is None else str(weights), fallback, options)


def _check_options(name: str, o: Mapping[str, Any]) -> None:
    def fail(key: str, want: str) -> ValueError:
        return ValueError(f"segment.options.{key} of segmenter {name!r} must be {want}, got {o[key]!r}")

    def positive(key: str, kind: type = int) -> None:
        v = o[key]
        if isinstance(v, bool) or not isinstance(v, kind if kind is int else int | float) or v <= 0:
            raise fail(key, "a positive integer" if kind is int else "a positive number")

    for key in ("batch_size", *(("patch_batch", "min_area") if name == "hovernet" else ("input_size",))):
        positive(key)
    if not isinstance(o["device"], str):
        raise fail("device", "a string (auto, cpu, cuda, cuda:1, ...)")
    if name == "hovernet":
        positive("mpp", float)
        if o["patch_input"] is not None:
            positive("patch_input")
        t = o["threshold"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 1:
            raise fail("threshold", "a number between 0 and 1")
        if not isinstance(o["model"], str):
            raise fail("model", "a TIAToolbox pretrained model name")
        return
    if o["loader"] is not None and (not isinstance(o["loader"], str) or ":" not in o["loader"]):
        raise fail("loader", "'package.module:function'")
    if o["source"] is not None and not isinstance(o["source"], str):
        raise fail("source", "the path of a checkout of ngaggion/HybridGNet")
    lm = o["landmarks"]
    if (
        not isinstance(lm, Mapping)
        or not lm
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 3 for v in lm.values())
    ):
        raise fail("landmarks", "a mapping of organ name -> number of points (>= 3), in output order")
    if not isinstance(o["masks"], list | tuple) or not o["masks"] or not all(isinstance(m, str) for m in o["masks"]):
        raise fail("masks", "a list of mask names")
    if o["coords"] not in ("normalized", "pixels"):
        raise fail("coords", "'normalized' or 'pixels'")


# ======================================================================================== running a segmenter
@dataclass
class _Runner:
    name: str  # the segmenter that runs
    fn: Callable[[ImageDataset], tuple[np.ndarray, list[str]]]
    options: dict[str, Any]
    model: dict[str, Any] | None = None
    requested: str | None = None
    fallback_reason: str | None = None

    def key(self) -> str:
        """Cache key: segmenter, versions, output-affecting options, model identity (not its file path)."""
        opts = {k: v for k, v in self.options.items() if k not in RUNTIME_OPTIONS}
        model = {k: v for k, v in (self.model or {}).items() if k != "path"}
        blob = json.dumps(
            {
                "stage": SEGMENTER_VERSION,
                "segmenter": self.name,
                "version": VERSIONS[self.name],
                "options": opts,
                "model": model,
            },
            sort_keys=True,
            default=str,
        )
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


def _hovernet_runner(spec: SegmentSpec, model: Any) -> _Runner:
    from splicer.pretrained_segmenters import load_hovernet, nucleus_masks

    o = spec.options
    if model is None:
        model = load_hovernet(
            spec.weights,
            model=o["model"],
            device=o["device"],
            batch_size=o["patch_batch"],
            patch_input=o["patch_input"],
            threshold=o["threshold"],
            min_area=o["min_area"],
        )

    def run(data: ImageDataset) -> tuple[np.ndarray, list[str]]:
        if data.channels != 3:
            raise ValueError(
                f"segmenter 'hovernet' needs 3-channel RGB (H&E) images, but {data.path} has {data.channels} channel(s)"
            )
        return nucleus_masks(data.images, model, data_mpp=o["mpp"], batch_size=o["batch_size"]), ["nuclei"]

    return _Runner("hovernet", run, dict(o), model=model.describe())


def _hybridgnet_runner(spec: SegmentSpec, model: Any) -> _Runner:
    from splicer.pretrained_segmenters import landmark_masks, load_landmark_model

    o = spec.options
    if model is None:
        model = load_landmark_model(
            spec.weights,
            loader=o["loader"],
            source=o["source"],
            device=o["device"],
            input_size=o["input_size"],
            coords=o["coords"],
        )
    names = list(o["masks"])

    def run(data: ImageDataset) -> tuple[np.ndarray, list[str]]:
        return landmark_masks(data.images, model, names, o["landmarks"], batch_size=o["batch_size"]), names

    return _Runner("hybridgnet", run, dict(o), model=model.describe())


def _runner(spec: SegmentSpec, model: Any = None) -> _Runner:
    """The segmenter to run for ``spec``: the requested one, or its fallback when the requested one is unavailable."""
    if spec.segmenter in SEGMENTERS:
        return _Runner(spec.segmenter, SEGMENTERS[spec.segmenter], {})
    from splicer.pretrained_segmenters import SegmenterUnavailable

    try:
        build = _hovernet_runner if spec.segmenter == "hovernet" else _hybridgnet_runner
        return build(spec, model)
    except SegmenterUnavailable as err:
        if spec.fallback is None:
            raise
        log.warning("%s -- falling back to segmenter %r (segment.fallback)", err, spec.fallback)
        return _Runner(spec.fallback, SEGMENTERS[spec.fallback], {}, requested=spec.segmenter, fallback_reason=str(err))


def _chunk(data: ImageDataset, start: int, stop: int) -> ImageDataset:
    return ImageDataset(
        images=data.images[start:stop],
        labels=data.labels[start:stop],
        split=data.split[start:stop],
        masks=None if data.masks is None else data.masks[start:stop],
        meta=data.meta,
        path=data.path,
    )


def _images_hash(images: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{images.shape}{images.dtype}".encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()


class _Cache:
    """Chunks of masks as bit-packed ``.npz`` files under ``root/<runner key>/<chunk image hash>.npz``."""

    def __init__(self, root: Path | None, runner: _Runner) -> None:
        self.dir = None if root is None else Path(root) / runner.key()
        self.hits = self.misses = 0
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            info = {
                "segmenter": runner.name,
                "version": VERSIONS[runner.name],
                "stage_version": SEGMENTER_VERSION,
                "options": runner.options,
                "model": runner.model,
            }
            record = self.dir / "record.json"
            if not record.exists():
                _write_text(record, json.dumps(info, indent=2, default=str))

    def get(self, digest: str) -> tuple[np.ndarray, list[str]] | None:
        if self.dir is None or not (file := self.dir / f"{digest}.npz").is_file():
            return None
        try:
            with np.load(file, allow_pickle=False) as z:
                shape = tuple(int(s) for s in z["shape"])
                masks = np.unpackbits(z["bits"], axis=-1, count=shape[-1]).reshape(shape)
                names = [str(n) for n in z["names"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a damaged entry is recomputed
            log.warning("segment cache entry %s unreadable (%s); recomputing", file, err)
            return None
        self.hits += 1
        return masks, names

    def put(self, digest: str, masks: np.ndarray, names: list[str]) -> None:
        self.misses += 1
        if self.dir is None:
            return
        bits = np.packbits(masks.astype(bool), axis=-1)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, bits=bits, shape=np.array(masks.shape), names=np.array(names))

        write_atomic(self.dir / f"{digest}.npz", save)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    except OSError:
        shutil.copy2(src, dst)


def _dice_vs_stored(data: ImageDataset, masks: np.ndarray, names: list[str]) -> dict[str, float]:
    """Dice of each produced mask against a stored mask of the same name (the demo's ground truth), if any."""
    if data.masks is None:
        return {}
    stored = list(data.mask_names)
    return {
        n: dice(masks[:, i], np.asarray(data.masks[:, stored.index(n)])) for i, n in enumerate(names) if n in stored
    }


def segment_dataset(
    src: str | Path,
    dst: str | Path,
    segmenter: str | Mapping[str, Any],
    *,
    cache_dir: str | Path | None = None,
    model: Any = None,
    chunk: int = CHUNK,
) -> dict:
    """Write ``dst`` = dataset ``src`` with masks from ``segmenter`` (a name or a ``segment`` section); returns the
    segmentation record. ``cache_dir`` caches the masks chunk by chunk (see the module docstring); ``model`` is a
    ready :class:`~splicer.pretrained_segmenters.NucleusModel` / ``LandmarkModel`` for a pretrained segmenter
    (instead of loading one from ``weights``)."""
    spec = parse_spec(segmenter)
    return _segment(_runner(spec, model), spec, Path(src), Path(dst), cache_dir, chunk)


def _segment(
    runner: _Runner, spec: SegmentSpec, src: Path, dst: Path, cache_dir: str | Path | None, chunk: int = CHUNK
) -> dict:
    data = load_dataset(src)
    # truth masks come from the dataset, not from its pixels: nothing to cache
    cache = _Cache(None if cache_dir is None or runner.name == "truth" else Path(cache_dir), runner)
    chunk = max(1, int(chunk))
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        out, names = None, list(data.mask_names) if runner.name == "truth" else []
        ones, empty = np.zeros(len(names), np.int64), np.zeros(len(names), np.int64)
        for start in range(0, data.n, chunk):
            part = _chunk(data, start, min(start + chunk, data.n))
            digest = _images_hash(part.images) if cache.dir is not None else ""
            hit = cache.get(digest) if digest else None
            masks, got = hit if hit is not None else runner.fn(part)
            masks = np.asarray(masks) != 0
            if masks.ndim != 4 or masks.shape[0] != part.n or masks.shape[2:] != part.images.shape[2:]:
                raise ValueError(
                    f"segmenter {runner.name!r} gave masks {masks.shape} for images {part.images.shape} of {src}"
                )
            if hit is None:
                cache.put(digest, masks, list(got))
            if out is None:
                names = list(got)
                out = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (data.n, len(names), *data.hw))
                ones, empty = np.zeros(len(names), np.int64), np.zeros(len(names), np.int64)
            elif list(got) != names:
                raise ValueError(f"segmenter {runner.name!r} named its masks {got} after {names}")
            out[start : start + part.n] = masks
            flat = masks.reshape(part.n, len(names), -1)
            ones = ones + flat.sum(axis=(0, 2))
            empty = empty + (~flat.any(axis=2)).sum(axis=0)
        if out is None:  # an empty dataset
            out = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (0, len(names), *data.hw))
        out.flush()
        log.info(
            "segment %s: %s on %d images (%d chunks from the cache, %d computed)",
            src,
            runner.name,
            data.n,
            cache.hits,
            cache.misses,
        )
        for name in ("images.npy", "labels.npy", "split.npy"):
            _link_or_copy(src / name, tmp / name)
        meta = dict(data.meta, mask_names=names)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        pixels = max(1, data.n * data.hw[0] * data.hw[1])
        for n, count in zip(names, empty, strict=True):
            if count:
                log.warning(
                    "segment %s: %d of %d images have an empty %r mask (their %r component is all zero)",
                    src,
                    count,
                    data.n,
                    n,
                    n,
                )
        record = {
            "segmenter": runner.name,
            "requested": runner.requested or spec.segmenter,
            "fallback_reason": runner.fallback_reason,
            "version": VERSIONS[runner.name],
            "options": runner.options,
            "model": runner.model,
            "dice_vs_stored_masks": _dice_vs_stored(data, out, names),
            "source": str(src),
            "mask_names": names,
            "coverage": {n: float(c / pixels) for n, c in zip(names, ones, strict=True)},
            "empty_masks": {n: int(c) for n, c in zip(names, empty, strict=True)},
        }
        (tmp / "segmentation.json").write_text(json.dumps(record, indent=2, default=str))
        del out
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_dataset(dst)  # the result must be a valid dataset
    return record


def segment_manifest(
    src_manifest: str | Path,
    dst_manifest: str | Path,
    segmenter: str | Mapping[str, Any],
    *,
    cache_dir: str | Path | None = None,
    model: Any = None,
) -> dict:
    """Segment every dataset a data manifest lists; write the new manifest last (it marks completion).

    The pretrained model (or the fallback decision) is resolved once for all datasets; ``cache_dir`` defaults to
    ``<dst folder>/.segment-cache``."""
    src_manifest, dst_manifest = Path(src_manifest), Path(dst_manifest)
    if cache_dir is None:
        cache_dir = dst_manifest.parent / ".segment-cache"
    manifest = json.loads(src_manifest.read_text())
    spec = parse_spec(segmenter)
    runner = _runner(spec, model)
    records = {
        name: _segment(runner, spec, src_manifest.parent / name, dst_manifest.parent / name, cache_dir)
        for name in manifest["datasets"]
    }
    out = {**manifest, "segmentation": records, "arrays": array_records(dst_manifest.parent, list(records))}
    _write_text(dst_manifest, json.dumps(out, indent=2))
    return out
