"""Numbers reported in the SpliCER paper (main text, Sections 4 and 4.1, and the Fig. 4b table).

Each entry names what it was measured on with the keys of our tidy tables. ``None`` means the paper does not
say (e.g. which loss) and the scorecard then shows one row per value found in our results. Experiment names are
those of both configs (demo and paper): ``mnist_cifar``, ``orion`` (Orion-CRC), ``eurosat`` and ``eurosat_rgb``
(pretrained on EuroSAT, 13 bands or RGB), ``mmearth`` (pretrained on MMEarth, evaluated on EuroSAT), ``nct``
(NCT, Camelyon), ``chest`` (ChestMNIST -> PneumoniaMNIST). ``method`` ``supervised_complex_only`` is read from
the ceilings table (``kind``), every other method from the probe tables.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FIELDS", "PAPER_NUMBERS", "paper_numbers"]

FIELDS = ("figure", "experiment", "method", "loss", "pairing", "task", "variant", "metric", "paper_value", "note")


def _n(
    figure: str,
    experiment: str,
    method: str,
    loss: str | None,
    pairing: str | None,
    task: str,
    variant: str | None,
    value: float,
    note: str,
    metric: str = "accuracy",
) -> dict[str, Any]:
    return dict(
        zip(FIELDS, (figure, experiment, method, loss, pairing, task, variant, metric, value, note), strict=True)
    )


PAPER_NUMBERS: list[dict[str, Any]] = [
    # ---- Fig. 2c: MNIST-CIFAR simplicity bias (loss not stated in the main text)
    _n("2c", "mnist_cifar", "baseline", None, "none", "mnist_cifar", "rMNIST", 0.64, "'accuracy of 64% on rMNIST'"),
    _n(
        "2c",
        "mnist_cifar",
        "baseline",
        None,
        "none",
        "mnist_cifar",
        "rNONE",
        1.0,
        "'near perfect (~100%) performance on rNONE/rCIFAR' (approximate)",
    ),
    _n(
        "2c",
        "mnist_cifar",
        "baseline",
        None,
        "none",
        "mnist_cifar",
        "rCIFAR",
        1.0,
        "'near perfect (~100%) performance on rNONE/rCIFAR' (approximate)",
    ),
    _n(
        "2c",
        "mnist_cifar",
        "supervised_complex_only",
        None,
        None,
        "mnist_cifar",
        None,
        0.726,
        "'a model trained on the CIFAR data alone achieves 72.6% accuracy' (ceilings table)",
    ),
    _n(
        "2c",
        "mnist_cifar",
        "splicer",
        None,
        "cifar",
        "mnist_cifar",
        "rMNIST",
        0.684,
        "'Achieving a classification accuracy of 68.4%' with CIFAR pairing ('up to 4 percentage points')",
    ),
    # ---- Fig. 3b: Orion-CRC ("57/55%" etc. are VICReg/SimCLR)
    _n(
        "3b",
        "orion",
        "splicer",
        None,
        None,
        "cell_types",
        None,
        0.89,
        "'consistent performance of around 89% on the cell type classification task' (approximate)",
    ),
    _n("3b", "orion", "baseline", "vicreg", "none", "t_cells", None, 0.57, "T cells: 'from 57/55%'"),
    _n("3b", "orion", "baseline", "simclr", "none", "t_cells", None, 0.55, "T cells: 'from 57/55%'"),
    _n("3b", "orion", "splicer", "vicreg", None, "t_cells", None, 0.81, "T cells: 'to 81/85%'"),
    _n("3b", "orion", "splicer", "simclr", None, "t_cells", None, 0.85, "T cells: 'to 81/85%'"),
    # ---- Fig. 3e: hyperspectral, pretrained on EuroSAT or MMEarth, evaluated on EuroSAT land use
    _n("3e", "eurosat", "baseline", None, "none", "land_use", "bands13", 0.85, "13 bands: 'improved from 85%'"),
    _n(
        "3e",
        "eurosat",
        "splicer",
        None,
        None,
        "land_use",
        "bands13",
        0.895,
        "13 bands: 'to 89-90%' (midpoint of the stated range)",
    ),
    _n("3e", "eurosat_rgb", "splicer", "vicreg", None, "land_use", "rgb", 0.7967, "RGB only: '79.67% for SpliCER'"),
    _n(
        "3e",
        "eurosat_rgb",
        "baseline",
        "vicreg",
        "none",
        "land_use",
        "rgb",
        0.7978,
        "RGB only: '79.78% for the baseline VICReg model'",
    ),
    _n(
        "3e",
        "mmearth",
        "baseline",
        "vicreg",
        "none",
        "land_use",
        "bands13",
        0.50,
        "MMEarth pretraining: 'from 50/60%' (VICReg/SimCLR)",
    ),
    _n(
        "3e",
        "mmearth",
        "baseline",
        "simclr",
        "none",
        "land_use",
        "bands13",
        0.60,
        "MMEarth pretraining: 'from 50/60%' (VICReg/SimCLR)",
    ),
    _n(
        "3e",
        "mmearth",
        "splicer",
        "vicreg",
        None,
        "land_use",
        "bands13",
        0.70,
        "MMEarth pretraining: 'to 70/71%' (VICReg/SimCLR)",
    ),
    _n(
        "3e",
        "mmearth",
        "splicer",
        "simclr",
        None,
        "land_use",
        "bands13",
        0.71,
        "MMEarth pretraining: 'to 70/71%' (VICReg/SimCLR)",
    ),
    # ---- Fig. 4b table: segmentation masks as deconstruction
    _n("4b", "nct", "splicer", "vicreg", "nuclei+background", "nct", None, 0.9372, "Fig. 4b table"),
    _n("4b", "nct", "splicer", "vicreg", "nuclei+background", "camelyon", None, 0.8230, "Fig. 4b table"),
    _n("4b", "chest", "splicer", "vicreg", "lungs+background", "pneumonia", None, 0.8718, "Fig. 4b table"),
    _n("4b", "nct", "baseline", "vicreg", "none", "nct", None, 0.8855, "Fig. 4b table"),
    _n("4b", "nct", "baseline", "vicreg", "none", "camelyon", None, 0.6822, "Fig. 4b table"),
    _n("4b", "chest", "baseline", "vicreg", "none", "pneumonia", None, 0.8446, "Fig. 4b table"),
    _n("4b", "nct", "splicer", "simclr", "nuclei+background", "nct", None, 0.9368, "Fig. 4b table"),
    _n("4b", "nct", "splicer", "simclr", "nuclei+background", "camelyon", None, 0.8674, "Fig. 4b table"),
    _n("4b", "chest", "splicer", "simclr", "lungs+background", "pneumonia", None, 0.9119, "Fig. 4b table"),
    _n("4b", "nct", "baseline", "simclr", "none", "nct", None, 0.9067, "Fig. 4b table"),
    _n("4b", "nct", "baseline", "simclr", "none", "camelyon", None, 0.8346, "Fig. 4b table"),
    _n("4b", "chest", "baseline", "simclr", "none", "pneumonia", None, 0.8462, "Fig. 4b table"),
]


def paper_numbers() -> list[dict[str, Any]]:
    """A fresh copy of :data:`PAPER_NUMBERS` (safe to modify)."""
    return [dict(entry) for entry in PAPER_NUMBERS]
