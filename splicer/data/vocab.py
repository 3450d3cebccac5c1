"""Names shared by the demo generators and the real builders: one experiments config runs on either.

Channel, band and class names here are what the datasets' ``meta.json`` hold, so components (``channels:
[CD8a]``) and evaluations name the same things on demo and real data.
"""

from __future__ import annotations

__all__ = ["CELL_TYPES", "HYPERSPECTRAL_BANDS", "MULTIPLEX_CHANNELS", "RGB_BANDS", "SPLITS", "T_SUBTYPES"]

SPLITS = ["train", "val", "test"]
"""Split names of every evaluation dataset (pretraining datasets have one split, ``train``)."""

MULTIPLEX_CHANNELS = [
    "Hoechst",
    "AF1",
    "CD31",
    "CD45",
    "CD68",
    "Argo550",
    "CD4",
    "FOXP3",
    "CD8a",
    "CD45RO",
    "CD20",
    "PD-L1",
    "CD3e",
    "CD163",
    "E-cadherin",
    "PD-1",
    "Ki67",
    "Pan-CK",
    "SMA",
]
"""The 19 Orion-CRC channels in the order of the demo's multiplex crops."""
CELL_TYPES = ["tumour", "stromal", "endothelial", "macrophage", "B cell", "T cell"]
"""Classes of the balanced Cell Types set."""
T_SUBTYPES = ["CD4 helper T", "CD8 cytotoxic T", "FOXP3 regulatory T"]
"""Classes of the balanced T Cells set."""

HYPERSPECTRAL_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B08A", "B09", "B10", "B11", "B12"]
"""Sentinel-2 bands in EuroSAT's order with B8A after B08 (named ``B08A``)."""
RGB_BANDS = ["B04", "B03", "B02"]
"""The visible bands as R, G, B."""
