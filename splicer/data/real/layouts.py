"""What the paper's dataset kinds build, declared without building: channel names, mask names, image size.

One function per kind, ``layout(spec) -> {dataset: Layout}`` for a ``datasets`` entry ``spec`` (its ``params``
and ``source``), registered as ``Kind.layout`` in :data:`splicer.registry.KINDS`. The config checks
(:mod:`splicer.pipeline.checks`) compare components and evaluations against it before any job runs;
``tests/test_real_*.py`` check each against what its builder writes from fixture archives. Masks are those of
the build; a ``segment`` section replaces them (the checks apply it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splicer.data.vocab import HYPERSPECTRAL_BANDS, RGB_BANDS
from splicer.registry import Layout

__all__ = ["camelyon17", "chestmnist", "eurosat", "mmearth", "mnist_cifar", "nct_crc", "pneumoniamnist"]

_RGB = ("R", "G", "B")


def _params(spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {**defaults, **dict(spec.get("params") or {})}


def _square(side: Any) -> tuple[int, int] | None:
    """``(side, side)`` for a positive int; ``None`` for anything else (the builder's own check names it)."""
    return (side, side) if isinstance(side, int) and not isinstance(side, bool) and side > 0 else None


def mnist_cifar(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """(3, 64, 32) digit-over-CIFAR images; the halves (3, 32, 32)."""
    whole, half = Layout(_RGB, (), (64, 32)), Layout(_RGB, (), (32, 32))
    return {
        "pretrain": whole,
        "pretrain_cifar_only": half,
        "rNONE": whole,
        "rMNIST": whole,
        "rCIFAR": whole,
        "mnist_only": half,
        "cifar_only": half,
    }


def eurosat(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """13 bands, and the RGB bands; the size is that of the GeoTIFFs (64 px in EuroSAT), known after the build."""
    return {"bands13": Layout(tuple(HYPERSPECTRAL_BANDS), (), None), "rgb": Layout(tuple(RGB_BANDS), (), None)}


def mmearth(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """13-band patches of ``patch_size`` px in EuroSAT's band order."""
    from splicer.data.real.sentinel2 import MMEARTH_DEFAULTS

    return {"pretrain": Layout(tuple(HYPERSPECTRAL_BANDS), (), _square(_params(spec, MMEARTH_DEFAULTS)["patch_size"]))}


def nct_crc(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """RGB tiles of ``size`` px."""
    from splicer.data.real.histology import NCT_DEFAULTS

    one = Layout(_RGB, (), _square(_params(spec, NCT_DEFAULTS)["size"]))
    return {"pretrain": one, "eval": one}


def camelyon17(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """RGB patches of ``size`` px."""
    from splicer.data.real.histology import CAMELYON_DEFAULTS

    return {"camelyon": Layout(_RGB, (), _square(_params(spec, CAMELYON_DEFAULTS)["size"]))}


def _medmnist_size(spec: Mapping[str, Any]) -> tuple[int, int] | None:
    """``params.size``, else ``source.size`` (the file the pipeline downloads); else the size of whichever file the
    build is given, known after it."""
    size = dict(spec.get("params") or {}).get("size")
    if size is None:
        size = dict(spec.get("source") or {}).get("size")
    return _square(size)


def chestmnist(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """Greyscale radiographs (channel ``X-ray``)."""
    return {"pretrain": Layout(("X-ray",), (), _medmnist_size(spec))}


def pneumoniamnist(spec: Mapping[str, Any]) -> dict[str, Layout]:
    """Greyscale radiographs (channel ``X-ray``)."""
    return {"pneumonia": Layout(("X-ray",), (), _medmnist_size(spec))}
