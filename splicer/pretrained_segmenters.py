"""Pretrained segmenters: HoVer-Net nuclei (through TIAToolbox) and HybridGNet lungs, behind two small interfaces.

The network call sits behind a protocol, so that everything around it (resampling, tiling, batching, mask
binarisation, caching, records) is the same for the real networks and for tiny stand-ins in the tests:

* :class:`NucleusModel` -- ``predict((B, H, W, 3) uint8 RGB at the model's resolution) -> (B, H, W)`` maps: instance
  ids (integers, 0 = background), or foreground probabilities / booleans. ``mpp`` is the resolution the model
  wants (micrometres per pixel); ``describe()`` identifies the weights (it enters the cache key and the record).
* :class:`LandmarkModel` -- ``predict((B, S, S) float32 grey in [0, 1]) -> (B, K, 2)`` landmark coordinates
  ``(x, y)``, normalised to [0, 1] of the input side ``S = input_size`` (HybridGNet's convention) unless the model
  says ``coords = "pixels"``.

HoVer-Net (Graham et al. 2019) through TIAToolbox
-------------------------------------------------
TIAToolbox's ``hovernet_fast-pannuke`` model (``tiatoolbox.models.architecture.get_pretrained_model``, which
returns the network and its IO config) works at 0.25 um/px on 256 x 256 patches and, with valid convolutions,
predicts the central 164 x 164 (``IOInstanceSegmentorConfig``: ``patch_input_shape [256, 256]``,
``patch_output_shape [164, 164]``, ``input_resolutions [{units: mpp, resolution: 0.25}]``). Its ``forward`` takes
NCHW float images in 0..255 and returns a dict of head outputs ``np`` (nucleus pixel logits, 2 channels), ``hv``
(horizontal/vertical distance maps) and ``tp`` (nucleus type logits). :class:`TiledNucleusNet` runs such a network
over whole images: reflect-pads by the margin ``(256 - 164) / 2``, cuts 256-px patches on a 164-px grid, batches
them, stitches the centres back, and thresholds the nucleus probability ``softmax(np)[1] >= 0.5``, then drops
4-connected objects under 10 px -- exactly the foreground ``blb`` of HoVer-Net's post-processing
(``HoVerNet._proc_np_hv``), whose marker-controlled watershed splits that foreground into instances. Every
HoVer-Net instance (``inst_map > 0``) lies inside this mask; a blob in which the watershed finds no marker is left
out of ``inst_map`` but kept here. It is computed without the engine's WSI machinery, OpenCV post-processing or
temporary files, and without depending on the engine's API, which changed between TIAToolbox 1.x
(``NucleusInstanceSegmentor(pretrained_model=...).predict(imgs, mode="tile", on_gpu=...)``) and 2.x
(``MultiTaskSegmentor``). Checked against TIAToolbox 2.1.3's own ``HoVerNet`` (random weights;
``tests/test_segmenters_upstream.py``): its IO config, ``infer_batch``'s nucleus probabilities (equal to the
stitched ones), ``_proc_np_hv``'s foreground (equal to the mask) and instances (inside it), and the
``torch.export`` recipe below. A user wrapper around the engine can still be passed as a :class:`NucleusModel`
returning its ``inst_map``. NCT-CRC-HE tiles are 0.5 um/px: :mod:`splicer.segment` resamples them x2 before the
model and brings the mask back.

Where the network comes from (:func:`load_hovernet`), in order:

1. ``weights`` is a self-contained network file -- a ``torch.export`` program (``.pt2``) or TorchScript --
   loaded without TIAToolbox. Export one where TIAToolbox is installed::

       from tiatoolbox.models.architecture import get_pretrained_model
       net, _ = get_pretrained_model("hovernet_fast-pannuke")
       x = torch.rand(2, 3, 256, 256) * 255
       batch = torch.export.Dim("batch", min=1, max=4096)  # a dynamic batch dimension is required
       torch.export.save(torch.export.export(net.eval(), (x,), dynamic_shapes=({0: batch},)), "hovernet.pt2")
       # or TorchScript (deprecated in recent PyTorch, still loaded):
       torch.jit.trace(net.eval(), x, strict=False).save("hovernet_fast_pannuke.pt")

2. ``weights`` is a TIAToolbox state dict (e.g. ``hovernet_fast-pannuke.pth``): TIAToolbox builds the network
   and loads it (``get_pretrained_model(name, pretrained_weights=weights)``).
3. no ``weights`` and TIAToolbox importable: ``get_pretrained_model(name)`` (downloads the weights once into
   TIAToolbox's model cache; run it once on a login node if compute nodes are offline).
4. otherwise :class:`SegmenterUnavailable` saying what to install or where to put the weights.

HybridGNet (Gaggion et al. 2022)
--------------------------------
HybridGNet (github.com/ngaggion/HybridGNet) reads a 1024 x 1024 grey radiograph in [0, 1] (``(1, 1, 1024, 1024)``)
and returns landmark coordinates: ``output[0]`` (the model returns a tuple with skip connections) reshaped to
``(-1, 2)`` are ``(x, y)`` in [0, 1] (the published inference multiplies by 1024); the first 44 points outline the
right lung, the next 50 the left lung and the last 26 the heart (the repository's ``getDenseMask(RL, LL, H)``).
:func:`landmark_masks` pads each image to a square, resizes it to 1024, runs the model, fills each organ's polygon
(:func:`fill_polygon`, a scanline version of ``skimage.draw.polygon``) at 1024 px and resizes the masks back (area
average >= 0.5) before removing the padding.

Weights (:func:`load_landmark_model`): HybridGNet's trained state dict (``bestMSE.pt`` of the HybridGNet release)
with ``source:`` a checkout of github.com/ngaggion/HybridGNet, whose model code builds the network as the
repository's trainer does (:func:`hybridgnet_from_source`: ``models/HybridGNet_2_IGSC.py``'s ``Hybrid``, lungs
and heart, pooling, 32 filters, K = 6, 3 x 3 skip windows, 64 latents, 1024 px); or a state dict with ``loader:
"package.module:function"`` returning the (untrained) ``torch.nn.Module`` to load it into; or a ``torch.export``
program (``.pt2``) / TorchScript file of another landmark network.

Run against the real architecture (random weights; ``tests/test_segmenters_upstream.py``): HybridGNet cannot be
exported -- ``torch.jit.trace`` fails ("Unsupported value kind: Tensor", the graph layers' sparse matrices) and
so does ``torch.export`` -- hence the state-dict routes. Its code needs ``torch_geometric`` < 2.5 (tested with
2.3.1; from 2.5 on, the ``ChebConv`` subclass fails in ``propagate``), its sparse pooling refuses
``torch.inference_mode`` (inference runs under ``no_grad``), and its BatchNorm layers keep no running statistics,
so images are run one at a time as in the published inference (in a batch each image's landmarks would depend on
the others'). The repository's ``models/HybridGNet_2_IGSC.py`` at 6e92b3b has a stray ``c`` after
``residualBlock(self.size[1], self.size[2])`` (a SyntaxError); :func:`hybridgnet_from_source` loads it without
that character.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from skimage import color, measure

from splicer.data.format import to_unit

__all__ = [
    "HOVERNET_MODEL",
    "HYBRIDGNET_LANDMARKS",
    "LandmarkModel",
    "NucleusModel",
    "SegmenterUnavailable",
    "TiledNucleusNet",
    "TorchLandmarkModel",
    "binarise",
    "file_sha256",
    "fill_polygon",
    "hybridgnet_from_source",
    "landmark_masks",
    "load_hovernet",
    "load_landmark_model",
    "nucleus_masks",
    "resize_masks",
    "resolve_device",
]

ADAPTER_VERSION = "1"
HOVERNET_MODEL = "hovernet_fast-pannuke"
HOVERNET_MPP = 0.25  # TIAToolbox ioconfig input resolution of hovernet_fast-pannuke
HOVERNET_PATCH = 256  # patch_input_shape of the fast models (the original ones: 270)
HOVERNET_MIN_AREA = 10  # HoVer-Net post-processing: remove_small_objects(min_size=10) on the thresholded NP map
HYBRIDGNET_SIZE = 1024
HYBRIDGNET_LANDMARKS = {"right_lung": 44, "left_lung": 50, "heart": 26}  # output order of the published model
HYBRIDGNET_UNIONS = {"lungs": ("right_lung", "left_lung")}  # mask names that unite organs


class SegmenterUnavailable(RuntimeError):
    """A pretrained segmenter cannot run here (package or weights missing); the message says what to do."""


@runtime_checkable
class NucleusModel(Protocol):
    """Nucleus segmentation network: RGB uint8 batches at resolution ``mpp`` -> per-pixel maps."""

    mpp: float

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 -> ``(B, H, W)`` instance ids (int, 0 background) or probabilities/booleans."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the model is (weights file and hash, package version): recorded and part of the cache key."""
        ...


@runtime_checkable
class LandmarkModel(Protocol):
    """Landmark (contour point) regression network on square grey images of side ``input_size``."""

    input_size: int
    coords: str  # "normalized" ([0, 1] of input_size) or "pixels"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``(B, S, S)`` float32 in [0, 1] -> ``(B, K, 2)`` landmarks ``(x, y)``."""
        ...

    def describe(self) -> dict[str, Any]: ...


# ============================================================================================== helpers
def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (weights identity in the cache key and the record)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def binarise(maps: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Instance ids (integers: > 0), booleans, or probabilities (floats: >= threshold) -> bool foreground."""
    maps = np.asarray(maps)
    if maps.dtype == np.bool_:
        return maps
    if np.issubdtype(maps.dtype, np.integer):
        return maps > 0
    return maps >= threshold


def resize_masks(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bool ``(B, h, w)`` -> ``(B, H, W)``: area average >= 0.5 when shrinking, nearest when enlarging."""
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1:] == tuple(hw):
        return masks
    x = torch.from_numpy(masks.astype(np.float32))[:, None]
    if hw[0] <= masks.shape[1] and hw[1] <= masks.shape[2]:
        y = F.interpolate(x, size=hw, mode="area") >= 0.5
    else:
        y = F.interpolate(x, size=hw, mode="nearest") >= 0.5
    return y[:, 0].numpy()


def _resize_images(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Float ``(B, C, h, w)`` -> ``(B, C, H, W)`` bilinear (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)


def _as_uint8(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint16:
        return (images.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    return images.astype(np.uint8, copy=False)


def _remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return mask
    lab = measure.label(mask, connectivity=1)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]


def _load_program(path: Path) -> tuple[torch.nn.Module, str] | None:
    """A self-contained network file: ``torch.export`` program (``.pt2``) or TorchScript; None for anything else
    (e.g. a state dict)."""
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module(), "torch.export"
        except (RuntimeError, ValueError) as err:
            raise SegmenterUnavailable(f"{path} cannot be loaded as a torch.export program: {err}") from err
    try:
        return torch.jit.load(str(path), map_location="cpu"), "torchscript"
    except (RuntimeError, ValueError):
        return None


def _inference_module(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    net = net.to(device)
    with contextlib.suppress(NotImplementedError, RuntimeError):  # torch.export modules refuse eval() (traced so)
        net.eval()
    return net


def _import_object(spec: str, what: str) -> Any:
    """``"package.module:attribute"`` -> the attribute; a clear error otherwise."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"{what} must look like 'package.module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise SegmenterUnavailable(f"{what} {spec!r} cannot be imported: {err}") from err


# ============================================================================================ HoVer-Net
class TiledNucleusNet:
    """A HoVer-Net-like network (NCHW float 0..255 in; ``np`` logits out, valid convolutions) run on whole images.

    ``patch_input`` is the network's input side; its output side is measured once with a zero patch, and the
    difference is the context margin (46 px for HoVer-Net fast: 256 -> 164). Images are reflect-padded by the
    margin, cut into patches on a grid of the output side, run ``batch_size`` patches at a time, stitched, and
    thresholded (``softmax(np)[:, 1] >= threshold``; one-channel outputs: ``sigmoid``), then 4-connected objects
    smaller than ``min_area`` px are dropped. Outputs may be a tensor (the NP logits) or a dict with key ``np``.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        *,
        patch_input: int = HOVERNET_PATCH,
        mpp: float = HOVERNET_MPP,
        device: str = "auto",
        batch_size: int = 16,
        threshold: float = 0.5,
        min_area: int = HOVERNET_MIN_AREA,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.net = _inference_module(net, self.device)
        self.patch_input = int(patch_input)
        self.mpp = float(mpp)
        self.batch_size = max(1, int(batch_size))
        self.threshold = float(threshold)
        self.min_area = int(min_area)
        self.identity = dict(identity or {})
        probe = self._np_prob(torch.zeros(1, 3, self.patch_input, self.patch_input))
        self.patch_output = int(probe.shape[-1])
        if probe.shape[-2] != probe.shape[-1] or (self.patch_input - self.patch_output) % 2 or self.patch_output < 1:
            raise ValueError(
                f"nucleus network maps a {self.patch_input}-px patch to {tuple(probe.shape[-2:])}: "
                "need a square output smaller by an even margin"
            )
        self.margin = (self.patch_input - self.patch_output) // 2

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity,
            "patch_input": self.patch_input,
            "patch_output": self.patch_output,
            "mpp": self.mpp,
            "threshold": self.threshold,
            "min_area": self.min_area,
        }

    @torch.inference_mode()
    def _np_prob(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x.to(self.device, torch.float32))
        if isinstance(out, Mapping):
            if "np" not in out:
                raise ValueError(f"nucleus network returned keys {sorted(out)}; need 'np' (nucleus pixel logits)")
            out = out["np"]
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ValueError("nucleus network must return NP logits (B, 2 or 1, h, w) or a dict with 'np'")
        if out.shape[1] == 2:
            return torch.softmax(out.float(), dim=1)[:, 1].cpu()
        if out.shape[1] == 1:
            return torch.sigmoid(out.float())[:, 0].cpu()
        raise ValueError(f"nucleus network NP output has {out.shape[1]} channels; expected 2 (softmax) or 1")

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 -> ``(B, H, W)`` float32 nucleus probability, stitched from patches."""
        batch = np.asarray(batch)
        b, h, w, _ = batch.shape
        po, m = self.patch_output, self.margin
        ny, nx = math.ceil(h / po), math.ceil(w / po)
        padded = np.pad(batch, ((0, 0), (m, m + ny * po - h), (m, m + nx * po - w), (0, 0)), mode="reflect")
        x = torch.from_numpy(np.ascontiguousarray(padded.transpose(0, 3, 1, 2)))
        patches = torch.stack(
            [
                x[:, :, iy * po : iy * po + self.patch_input, ix * po : ix * po + self.patch_input]
                for iy in range(ny)
                for ix in range(nx)
            ],
            dim=1,
        )  # (B, ny*nx, 3, P, P)
        patches = patches.reshape(-1, 3, self.patch_input, self.patch_input)
        outs = [self._np_prob(patches[i : i + self.batch_size]) for i in range(0, patches.shape[0], self.batch_size)]
        prob = torch.cat(outs).reshape(b, ny, nx, po, po).permute(0, 1, 3, 2, 4).reshape(b, ny * po, nx * po)
        return prob[:, :h, :w].numpy()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        prob = self.probabilities(batch)
        return np.stack([_remove_small(p >= self.threshold, self.min_area) for p in prob])


def load_hovernet(
    weights: str | Path | None = None,
    *,
    model: str = HOVERNET_MODEL,
    device: str = "auto",
    batch_size: int = 16,
    patch_input: int | None = None,
    threshold: float = 0.5,
    min_area: int = HOVERNET_MIN_AREA,
) -> TiledNucleusNet:
    """HoVer-Net as a :class:`NucleusModel` (see the module docstring for where the network comes from)."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise SegmenterUnavailable(f"segmenter 'hovernet': weights file {path.absolute()} does not exist")
        program = _load_program(path)
        if program is not None:
            ident = {"source": program[1], "path": str(path), "sha256": file_sha256(path)}
            return TiledNucleusNet(
                program[0],
                patch_input=patch_input or HOVERNET_PATCH,
                device=device,
                batch_size=batch_size,
                threshold=threshold,
                min_area=min_area,
                identity=ident,
            )
    try:
        import tiatoolbox
        from tiatoolbox.models.architecture import get_pretrained_model
    except (ImportError, OSError) as err:  # OSError: a native library it loads (e.g. OpenSlide) is missing
        where = (
            f"weights {weights} are not a TorchScript / torch.export file, so they need TIAToolbox to build the network"
            if weights is not None
            else "no weights were given and TIAToolbox is not installed"
        )
        raise SegmenterUnavailable(
            f"segmenter 'hovernet': {where} ({err}). Either `pip install tiatoolbox` (its pretrained {model!r} "
            "weights download into TIAToolbox's model cache on first use: run once on a login node when compute "
            "nodes are offline), or set segment.weights to a torch.export (.pt2) or TorchScript export of HoVer-Net "
            "(recipe in splicer/pretrained_segmenters.py), or set segment.fallback: classical_nuclei to run the "
            "classical segmenter instead (recorded in segmentation.json)"
        ) from err
    try:
        net, ioconfig = get_pretrained_model(model, pretrained_weights=None if weights is None else str(weights))
    except Exception as err:  # download, network or weights errors of the third-party package
        raise SegmenterUnavailable(
            f"segmenter 'hovernet': TIAToolbox could not load {model!r}"
            f"{'' if weights is None else f' with weights {weights}'}: {err}"
        ) from err
    shape = getattr(ioconfig, "patch_input_shape", None) or (HOVERNET_PATCH,)
    resolutions = getattr(ioconfig, "input_resolutions", None) or [{"units": "mpp", "resolution": HOVERNET_MPP}]
    res = resolutions[0]
    if res.get("units") != "mpp":
        raise SegmenterUnavailable(f"segmenter 'hovernet': model {model!r} input resolution {res} is not in mpp")
    ident = {"source": "tiatoolbox", "model": model, "tiatoolbox": getattr(tiatoolbox, "__version__", "?")}
    if weights is not None:
        ident.update(path=str(weights), sha256=file_sha256(weights))
    return TiledNucleusNet(
        net,
        patch_input=patch_input or int(shape[0]),
        mpp=float(res["resolution"]),
        device=device,
        batch_size=batch_size,
        threshold=threshold,
        min_area=min_area,
        identity=ident,
    )


def nucleus_masks(images: np.ndarray, model: NucleusModel, data_mpp: float, batch_size: int = 8) -> np.ndarray:
    """``(N, 3, H, W)`` RGB images at ``data_mpp`` um/px -> ``(N, 1, H, W)`` uint8 nucleus masks.

    Images are resampled by ``data_mpp / model.mpp`` (bilinear) to the model's resolution, predicted
    ``batch_size`` at a time, binarised (:func:`binarise`) and resized back (:func:`resize_masks`)."""
    n, c, h, w = images.shape
    if c != 3:
        raise ValueError(f"nucleus model needs 3-channel RGB images, got {c} channel(s)")
    scale = float(data_mpp) / float(model.mpp)
    hw_model = (max(1, round(h * scale)), max(1, round(w * scale)))
    out = np.zeros((n, 1, h, w), dtype=np.uint8)
    for i in range(0, n, max(1, batch_size)):
        x = torch.from_numpy(_as_uint8(images[i : i + batch_size]).astype(np.float32))
        x = _resize_images(x, hw_model).round_().clamp_(0, 255).to(torch.uint8)
        pred = np.asarray(model.predict(x.permute(0, 2, 3, 1).contiguous().numpy()))
        if pred.shape != (x.shape[0], *hw_model):
            raise ValueError(
                f"nucleus model returned maps {pred.shape} for a batch of {tuple(x.shape)}; "
                f"expected {(x.shape[0], *hw_model)}"
            )
        out[i : i + batch_size, 0] = resize_masks(binarise(pred), (h, w))
    return out


# ============================================================================================ HybridGNet
class TorchLandmarkModel:
    """A torch landmark network as a :class:`LandmarkModel`: ``(B, 1, S, S)`` in, landmarks (tuple: first) out."""

    def __init__(
        self,
        net: torch.nn.Module,
        *,
        input_size: int = HYBRIDGNET_SIZE,
        coords: str = "normalized",
        device: str = "auto",
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        if coords not in ("normalized", "pixels"):
            raise ValueError(f"coords must be 'normalized' or 'pixels', got {coords!r}")
        self.device = resolve_device(device)
        self.net = _inference_module(net, self.device)
        self.input_size = int(input_size)
        self.coords = coords
        self.identity = dict(identity or {})

    def describe(self) -> dict[str, Any]:
        return {**self.identity, "input_size": self.input_size, "coords": self.coords}

    @torch.no_grad()  # not inference_mode: HybridGNet's graph pooling transposes sparse tensors, refused there
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """One image at a time, as HybridGNet's published inference: its BatchNorm layers keep no running
        statistics (``track_running_stats=False``), so in a batch each image's landmarks would depend on the
        others'; and a traced export fixes the batch size it was traced with."""
        x = torch.from_numpy(np.asarray(batch, dtype=np.float32))[:, None].to(self.device)
        outs = []
        for i in range(x.shape[0]):
            out = self.net(x[i : i + 1])
            if isinstance(out, list | tuple):
                out = out[0]
            outs.append(out.float().reshape(1, -1, 2).cpu())
        return torch.cat(outs).numpy() if outs else np.zeros((0, 0, 2), np.float32)


HYBRIDGNET_TYPO = ("residualBlock(self.size[1], self.size[2])c", "residualBlock(self.size[1], self.size[2])")


def hybridgnet_from_source(source: str | Path) -> torch.nn.Module:
    """HybridGNet (untrained) built from a checkout of ngaggion/HybridGNet as its ``trainerHybrid.py`` builds the
    published model: ``models/HybridGNet_2_IGSC.py``'s ``Hybrid`` with ``utils/utils.py``'s ``genMatrixesLH``."""
    import importlib.util
    import sys

    import scipy.sparse as sp

    root = Path(source)
    code = root / "models" / "HybridGNet_2_IGSC.py"
    if not code.is_file() or not (root / "utils" / "utils.py").is_file():
        raise SegmenterUnavailable(
            f"segment.options.source {root.absolute()} is not a checkout of github.com/ngaggion/HybridGNet "
            "(no models/HybridGNet_2_IGSC.py and utils/utils.py)"
        )
    try:
        import torch_geometric
    except ImportError as err:
        raise SegmenterUnavailable(f"HybridGNet's model code needs torch_geometric (< 2.5): {err}") from err
    if tuple(int(v) for v in torch_geometric.__version__.split(".")[:2]) >= (2, 5):
        raise SegmenterUnavailable(
            f"HybridGNet's ChebConv subclass fails with torch_geometric {torch_geometric.__version__}; install "
            "torch_geometric < 2.5 (tested: 2.3.1) where the segment jobs run"
        )
    sys.path.insert(0, str(root))
    try:
        importlib.import_module("models.chebConv")
        spec = importlib.util.spec_from_loader("models.HybridGNet_2_IGSC", loader=None)
        module = importlib.util.module_from_spec(spec)
        module.__package__ = "models"
        exec(compile(code.read_text().replace(*HYBRIDGNET_TYPO), str(code), "exec"), module.__dict__)
        utils = importlib.import_module("utils.utils")
    finally:
        sys.path.remove(str(root))
    a, ad, d, u = (sp.csc_matrix(m).tocoo() for m in utils.genMatrixesLH())
    config = {
        "inputsize": HYBRIDGNET_SIZE,
        "latents": 64,
        "n_nodes": [a.shape[0]] * 3 + [ad.shape[0]] * 3,
        "filters": [2, 32, 32, 32, 16, 16, 16],
        "K": 6,
        "window": (3, 3),
    }
    adjacency = [utils.scipy_to_torch_sparse(m) for m in (a, a, a, ad, ad, ad)]
    down, up = [utils.scipy_to_torch_sparse(d)], [utils.scipy_to_torch_sparse(u)]
    return module.Hybrid(config, down, up, adjacency)


def load_landmark_model(
    weights: str | Path | None,
    *,
    loader: str | None = None,
    source: str | Path | None = None,
    device: str = "auto",
    input_size: int = HYBRIDGNET_SIZE,
    coords: str = "normalized",
) -> TorchLandmarkModel:
    """HybridGNet (or any landmark network) from a state dict + ``source`` (a HybridGNet checkout) or ``loader``,
    or from a torch.export / TorchScript file (see the module docstring)."""
    if weights is None:
        raise SegmenterUnavailable(
            "segmenter 'hybridgnet' needs weights: set segment.weights to HybridGNet's trained state dict "
            "(bestMSE.pt of github.com/ngaggion/HybridGNet's release) and segment.options.source to a checkout of "
            "that repository (or segment.options.loader: 'package.module:function' returning the model); or set "
            "segment.fallback: classical_lungs to run the classical segmenter instead (recorded in segmentation.json)"
        )
    path = Path(weights)
    if not path.is_file():
        raise SegmenterUnavailable(f"segmenter 'hybridgnet': weights file {path.absolute()} does not exist")
    ident: dict[str, Any] = {"path": str(path), "sha256": file_sha256(path)}
    program = _load_program(path)
    if program is not None:
        return TorchLandmarkModel(
            program[0], input_size=input_size, coords=coords, device=device, identity={"source": program[1], **ident}
        )
    if loader is None and source is None:
        raise SegmenterUnavailable(
            f"segmenter 'hybridgnet': {path} is a state dict (not a TorchScript / torch.export file): set "
            "segment.options.source to a checkout of github.com/ngaggion/HybridGNet, or segment.options.loader to "
            "'package.module:function' returning the (untrained) model to load it into"
        )
    net = _import_object(loader, "segment.options.loader")() if loader else hybridgnet_from_source(source)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    net.load_state_dict(state)
    built = {"loader": loader} if loader else {"code": "ngaggion/HybridGNet models/HybridGNet_2_IGSC.py"}
    return TorchLandmarkModel(
        net,
        input_size=input_size,
        coords=coords,
        device=device,
        identity={"source": "state_dict", **built, **ident},
    )


def fill_polygon(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool mask of the pixels whose centre ``(row, col)`` lies inside the closed polygon with vertices ``(x, y)``
    (even-odd rule, scanline; what ``skimage.draw.polygon`` fills, up to points exactly on an edge, at a fraction of
    its cost on large grids: it tests every pixel of the bounding box against every edge)."""
    h, w = shape
    x0, y0 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    lo, hi = max(0, math.ceil(y0.min())), min(h - 1, math.floor(y0.max()))
    out = np.zeros((h, w), dtype=bool)
    if hi < lo:
        return out
    r = np.arange(lo, hi + 1, dtype=np.float64)[:, None]
    cross = ((y0 <= r) & (r < y1)) | ((y1 <= r) & (r < y0))  # edges crossing each row (half-open in y)
    rows, edges = np.nonzero(cross)
    t = (r[rows, 0] - y0[edges]) / (y1[edges] - y0[edges])
    cols = np.clip(np.floor(x0[edges] + t * (x1[edges] - x0[edges])).astype(np.int64) + 1, 0, w)
    toggles = np.bincount(rows * (w + 1) + cols, minlength=r.shape[0] * (w + 1)).reshape(r.shape[0], w + 1)
    out[lo : hi + 1] = (np.cumsum(toggles[:, :w], axis=1) & 1).astype(bool)
    return out


def _grey(images: np.ndarray) -> np.ndarray:
    """``(B, C, H, W)`` uint8/uint16 -> ``(B, H, W)`` float32 grey in [0, 1]."""
    x = to_unit(images, np.float32)
    if x.shape[1] == 1:
        return x[:, 0]
    if x.shape[1] == 3:
        return color.rgb2gray(x.transpose(0, 2, 3, 1)).astype(np.float32)
    return x.mean(axis=1)


def _organ_slices(landmarks: Mapping[str, int]) -> dict[str, slice]:
    out, start = {}, 0
    for name, count in landmarks.items():
        out[name] = slice(start, start + int(count))
        start += int(count)
    return out


def landmark_masks(
    images: np.ndarray,
    model: LandmarkModel,
    mask_names: Sequence[str],
    landmarks: Mapping[str, int] = HYBRIDGNET_LANDMARKS,
    batch_size: int = 4,
) -> np.ndarray:
    """``(N, C, H, W)`` radiographs -> ``(N, M, H, W)`` uint8 masks of the organs ``mask_names`` (each a key of
    ``landmarks`` or ``lungs`` = right + left lung), from landmark polygons rasterised at the model's side."""
    n, _, h, w = images.shape
    organs = _organ_slices(landmarks)
    for name in mask_names:
        parts = HYBRIDGNET_UNIONS.get(name, (name,))
        if not set(parts) <= set(organs):
            raise ValueError(f"mask {name!r} needs landmark groups {list(parts)}; the model has {list(organs)}")
    total = sum(int(c) for c in landmarks.values())
    side, size = max(h, w), int(model.input_size)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.zeros((n, len(mask_names), h, w), dtype=np.uint8)
    for i in range(0, n, max(1, batch_size)):
        grey = _grey(images[i : i + batch_size])
        square = np.zeros((grey.shape[0], side, side), dtype=np.float32)
        square[:, top : top + h, left : left + w] = grey
        x = _resize_images(torch.from_numpy(square)[:, None], (size, size))[:, 0].clamp_(0, 1).numpy()
        pts = np.asarray(model.predict(x), dtype=np.float64)
        if pts.shape != (x.shape[0], total, 2):
            raise ValueError(
                f"landmark model returned {pts.shape} for {x.shape[0]} images; expected "
                f"{(x.shape[0], total, 2)} ({dict(landmarks)})"
            )
        if model.coords == "normalized":
            pts = pts * size
        planes = np.zeros((x.shape[0], len(mask_names), size, size), dtype=bool)
        for b in range(x.shape[0]):
            filled = {}
            for organ, sl in organs.items():
                filled[organ] = fill_polygon(pts[b, sl, 0], pts[b, sl, 1], (size, size))
            for k, name in enumerate(mask_names):
                for part in HYBRIDGNET_UNIONS.get(name, (name,)):
                    planes[b, k] |= filled[part]
        back = resize_masks(planes.reshape(-1, size, size), (side, side)).reshape(
            x.shape[0], len(mask_names), side, side
        )
        out[i : i + batch_size] = back[:, :, top : top + h, left : left + w]
    return out
