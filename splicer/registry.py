"""Every name the pipeline accepts, in one place: methods, losses, dataset kinds and figures.

Each entry names its implementation by import path (``"module:attribute"``), so ``grep`` finds every caller, and
nothing here imports torch, matplotlib or a dataset library: the Snakefile (wildcard constraints), the config
checks and the light rules read names without paying for them. :func:`resolve` imports an implementation when it
is needed. Adding a method, a loss, a dataset kind or a figure is one entry here plus its implementation (the
README's *Extending* section).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FIGURES",
    "KINDS",
    "LOSSES",
    "METHODS",
    "Figure",
    "Kind",
    "Layout",
    "Loss",
    "Method",
    "SizeHint",
    "resolve",
]


def resolve(path: str) -> Any:
    """The object an import path ``"package.module:attribute"`` names (imported on first use)."""
    module, sep, attribute = path.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"import path {path!r} must look like 'package.module:attribute'")
    return getattr(importlib.import_module(module), attribute)


# ----------------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """A method preset: the function building its :class:`~splicer.methods.PairingSpec` and its display label.

    The function takes ``(inputs, loss, embed_dim, **options)``; its keyword-only options are the method's
    ``options`` in a config (checked against its signature)."""

    pairing: str
    label: str


METHODS: dict[str, Method] = {
    "baseline": Method("splicer.methods:baseline_pairing", "Baseline"),
    "sigma_je": Method("splicer.methods:sigma_je_pairing", "Σ-JE"),
    "trident": Method("splicer.methods:trident_pairing", "TriDeNT"),
    "splicer": Method("splicer.methods:splicer_pairing", "SpliCER"),
}
"""Method presets in display order (figures list methods in this order)."""


# ------------------------------------------------------------------------------------------------------ losses
@dataclass(frozen=True)
class Loss:
    """A joint-embedding loss: its ``nn.Module`` (``forward(z_a, z_b) -> (loss, metrics)``) and display label; the
    module's constructor arguments are the loss's ``loss_options`` in a run config."""

    module: str
    label: str


LOSSES: dict[str, Loss] = {
    "vicreg": Loss("splicer.losses:VICRegLoss", "VICReg"),
    "simclr": Loss("splicer.losses:NTXentLoss", "SimCLR"),
}
"""Losses in display order."""


# ----------------------------------------------------------------------------------------------- dataset kinds
@dataclass(frozen=True)
class SizeHint:
    """Rough size of one ``datasets`` entry (for job sizing, :mod:`splicer.cluster`): its pretraining set and the
    images ``evaluate`` embeds."""

    images: int  # pretraining images (0: an evaluation-only entry)
    height: int
    width: int
    channels: int
    bytes_per_value: int = 1
    eval_images: int = 0  # images of its evaluation datasets (all splits; embedded, then probed)

    @property
    def image_bytes(self) -> int:
        return self.height * self.width * self.channels * self.bytes_per_value


@dataclass(frozen=True)
class Layout:
    """What one dataset of a ``datasets`` entry holds, declared before it is built (the config checks compare
    components and evaluations against it): channel names, mask names and image size ``(H, W)``. ``None`` means
    "not known until the build" (e.g. a ``folder`` entry without ``channel_names``); the build and the jobs then
    check it themselves."""

    channels: tuple[str, ...] | None
    masks: tuple[str, ...] | None = ()
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Kind:
    """A dataset kind (``datasets.<entry>.kind``).

    * ``builder``: ``build(out, files, params, caps, seed) -> {dataset: path}`` (:mod:`splicer.data.real.common`);
      ``None`` for ``demo``, whose generators are :data:`splicer.data.demo.DEMO_FAMILIES`.
    * ``params``: the dict of builder params and their defaults (unknown params fail before any job).
    * ``datasets``: the dataset folders a build writes; ``"{name}"`` is replaced by the ``name`` param.
    * ``archives``: a list of :class:`~splicer.data.sources.Archive` (fixed files, no source options), or a
      function ``(kind, **source options) -> list[Archive]``; ``None``: nothing to download (read in place).
    * ``variants``: for an ``archives`` function, ``(kind) -> list[Archive]``: every file it can name under any
      options (how a downloaded file is looked up by name).
    * ``size``: order-of-magnitude size as built, for job sizing (a guess where it depends on choices).
    * ``layout``: ``layout(spec) -> {dataset: Layout}`` for a ``datasets`` entry ``spec`` (kind, family, params,
      source), declared without building; ``None``: nothing is known before the build.
    * ``in_place``: ``(kind, archives, folder) -> archives``: where an upstream loader's extracted files stand in
      for the archives (``source: {path: <folder>}``, read in place); None: the kind takes no ``source.path``.
    """

    builder: str | None
    params: str | None
    datasets: tuple[str, ...]
    archives: str | None
    size: SizeHint
    variants: str | None = None
    layout: str | None = None
    in_place: str | None = None


_REAL = "splicer.data.real"
_SRC = "splicer.data.sources"
KINDS: dict[str, Kind] = {
    "demo": Kind(
        None, None, (), None, SizeHint(2_000, 32, 32, 3, eval_images=3 * 1_400), layout="splicer.data.demo:layout"
    ),
    "folder": Kind(
        f"{_REAL}.folder:build_folder",
        f"{_REAL}.folder:DEFAULTS",
        ("{name}",),
        None,
        SizeHint(50_000, 224, 224, 3, eval_images=50_000),
        layout=f"{_REAL}.folder:layout",
    ),
    "multiplex": Kind(  # cell crops of your MCMICRO output folder(s), read in place, any marker panel
        f"{_REAL}.multiplex:build_multiplex",
        f"{_REAL}.multiplex:DEFAULTS",
        ("cells", "pretrain"),
        None,
        SizeHint(50_000, 32, 32, 40, 2, eval_images=500_000),
        layout=f"{_REAL}.multiplex:layout",
    ),
    "mnist_cifar": Kind(  # MNIST 0/1 on top of CIFAR car/truck
        f"{_REAL}.mnist_cifar:build_mnist_cifar",
        f"{_REAL}.mnist_cifar:DEFAULTS",
        ("pretrain", "pretrain_cifar_only", "rNONE", "rMNIST", "rCIFAR", "mnist_only", "cifar_only"),
        f"{_SRC}:MNIST_CIFAR",
        SizeHint(10_000, 64, 32, 3, eval_images=5 * 12_000),
        layout=f"{_REAL}.layouts:mnist_cifar",
        in_place=f"{_SRC}:mnist_cifar_in_place",  # torchvision's MNIST/raw + cifar-10-batches-py
    ),
    "orion_crc": Kind(  # cell crops of the chosen slides
        f"{_REAL}.orion:build_orion_crc",
        f"{_REAL}.orion:DEFAULTS",
        ("pretrain", "cell_types", "t_cells"),
        f"{_SRC}:orion_archives",
        SizeHint(50_000, 32, 32, 19, 2, eval_images=100_000),
        f"{_SRC}:orion_variants",
        layout=f"{_REAL}.orion:layout",
    ),
    "eurosat": Kind(  # 13-band and RGB variants
        f"{_REAL}.sentinel2:build_eurosat",
        f"{_REAL}.sentinel2:EUROSAT_DEFAULTS",
        ("bands13", "rgb"),
        f"{_SRC}:EUROSAT",
        SizeHint(27_000, 64, 64, 13, 2, eval_images=2 * 27_000),
        layout=f"{_REAL}.layouts:eurosat",
        in_place=f"{_SRC}:eurosat_in_place",  # torchgeo's ds/ tree (or its kept zip) and split lists
    ),
    "mmearth": Kind(  # EuroSAT band order (B10 = 0 on L2A tiles)
        f"{_REAL}.sentinel2:build_mmearth",
        f"{_REAL}.sentinel2:MMEARTH_DEFAULTS",
        ("pretrain",),
        f"{_SRC}:MMEARTH",
        SizeHint(100_000, 64, 64, 13, 2),
        layout=f"{_REAL}.layouts:mmearth",
        in_place=f"{_SRC}:mmearth_in_place",  # data_100k_v001/
    ),
    "nct_crc": Kind(  # NCT-CRC-HE-100K + CRC-VAL-HE-7K
        f"{_REAL}.histology:build_nct_crc",
        f"{_REAL}.histology:NCT_DEFAULTS",
        ("pretrain", "eval"),
        f"{_SRC}:NCT_CRC",
        SizeHint(100_000, 224, 224, 3, eval_images=100_000 + 7_180),
        layout=f"{_REAL}.layouts:nct_crc",
    ),
    "camelyon17": Kind(  # WILDS patches (evaluation only)
        f"{_REAL}.histology:build_camelyon17",
        f"{_REAL}.histology:CAMELYON_DEFAULTS",
        ("camelyon",),
        f"{_SRC}:CAMELYON17",
        SizeHint(0, 96, 96, 3, eval_images=455_954),
        layout=f"{_REAL}.layouts:camelyon17",
        in_place=f"{_SRC}:camelyon17_in_place",  # WILDS' extracted camelyon17_v1.0/
    ),
    "chestmnist": Kind(
        f"{_REAL}.medmnist:build_chestmnist",
        f"{_REAL}.medmnist:CHESTMNIST_DEFAULTS",
        ("pretrain",),
        f"{_SRC}:medmnist_archives",
        SizeHint(112_120, 28, 28, 1, eval_images=112_120),
        f"{_SRC}:medmnist_variants",
        layout=f"{_REAL}.layouts:chestmnist",
        in_place=f"{_SRC}:medmnist_in_place",  # medmnist's root (~/.medmnist)
    ),
    "pneumoniamnist": Kind(
        f"{_REAL}.medmnist:build_pneumoniamnist",
        f"{_REAL}.medmnist:PNEUMONIAMNIST_DEFAULTS",
        ("pneumonia",),
        f"{_SRC}:medmnist_archives",
        SizeHint(0, 28, 28, 1, eval_images=5_856),
        f"{_SRC}:medmnist_variants",
        layout=f"{_REAL}.layouts:pneumoniamnist",
        in_place=f"{_SRC}:medmnist_in_place",
    ),
}
"""Dataset kinds: ``demo`` (generated, :mod:`splicer.data.demo`), ``folder`` (your images) and ``multiplex`` (your
MCMICRO output folders), both read in place, and the paper's datasets (:mod:`splicer.data.real`, archives in
:mod:`splicer.data.sources`; ``orion_crc`` is a preset of ``multiplex``)."""


# ----------------------------------------------------------------------------------------------------- figures
@dataclass(frozen=True)
class Figure:
    """A figure or table target: its drawing function (``fn(inputs, outputs, title_suffix="", **options)``,
    :mod:`splicer.plots`), the input roles it requires and accepts, and whether it also writes its table as CSV.
    Its report caption is ``workflow/report/<name>.rst``."""

    draw: str
    inputs: tuple[str, ...]
    optional: tuple[str, ...] = ()
    table: bool = False


_PLOTS = "splicer.plots"
FIGURES: dict[str, Figure] = {
    "fig2a": Figure(f"{_PLOTS}.fig2:fig_2a", ("dataset",)),
    "fig2b": Figure(f"{_PLOTS}.fig2:fig_2b", ("spectra",)),
    "fig2c": Figure(f"{_PLOTS}.fig2:fig_2c", ("probes",), ("ceilings",)),
    "fig3a": Figure(f"{_PLOTS}.fig3:fig_3a", ("dataset",)),
    "fig3b": Figure(f"{_PLOTS}.fig3:fig_3b", ("probes",)),
    "fig3c": Figure(f"{_PLOTS}.fig3:fig_3c", ("correlations",)),
    "fig3d": Figure(f"{_PLOTS}.fig3:fig_3d", ("dataset",)),
    "fig3e": Figure(f"{_PLOTS}.fig3:fig_3e", ("probes",)),
    "fig4a": Figure(f"{_PLOTS}.fig4:fig_4a", ("datasets",)),
    "fig4b": Figure(f"{_PLOTS}.fig4:fig_4b", ("probes",), table=True),
    "figS1a": Figure(f"{_PLOTS}.fig3:fig_s1a", ("dataset",)),
    "tableS2": Figure(f"{_PLOTS}.fig4:table_s2", ("probes",), table=True),
    "scorecard": Figure(
        f"{_PLOTS}.scorecard:scorecard", ("probes",), ("ceilings", "spectra", "correlations"), table=True
    ),
    "umap": Figure(f"{_PLOTS}.umap:fig_umap", ("embeddings",)),  # per-cell embeddings of multiplex slides
}
"""Figure and table targets (one Snakemake target rule each)."""
