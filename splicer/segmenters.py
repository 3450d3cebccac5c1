"""Classical (weight-free) segmenters: nuclei in H&E tiles and lungs in chest radiographs.

They are the fallback for HoVer-Net (nuclei) and HybridGNet (lungs) when no pretrained weights are at hand,
and follow the textbook recipes:

* :func:`classical_nuclei`: colour deconvolution to the haematoxylin channel (``skimage.color.rgb2hed``),
  light Gaussian smoothing, Otsu threshold per image, opening (drops thin bridges and speckle; a closing
  merged neighbouring nuclei and cost Dice on the demo), removal of objects smaller than a size scaled to the
  image area.
* :func:`classical_lungs`: Gaussian smoothing, body = largest component above the lower 3-class Otsu threshold
  (holes filled), lungs = dark pixels inside the eroded body (Otsu over the body pixels only), opening, then the
  largest component whose centroid lies in each image half (left/right symmetry; the two largest overall
  when a half has none) among those not touching the image border, holes filled.

Each maps an :class:`~splicer.data.format.ImageDataset` to ``(masks, names)`` with ``masks`` uint8 0/1 of shape
``(N, 1, H, W)``. Smoothing widths and structuring elements scale with the image side, with the demo's 32 px
as reference. :func:`dice` compares predicted and true masks.
"""

from __future__ import annotations

import numpy as np
from skimage import color, filters, measure, morphology
from skimage.segmentation import clear_border

from splicer.data.format import ImageDataset, to_unit

__all__ = ["classical_lungs", "classical_nuclei", "dice"]

REFERENCE_SIDE = 32  # demo image side; smoothing and element sizes below are in pixels at this side
# nuclei: Gaussian sigma, opening disk radius, smallest kept object in px (a small demo nucleus covers ~4-8 px).
# Measured on demo histology (32 px): sigma 0 / 0.35 / 0.5 / 0.8 gave Dice ~0.85 / 0.85 / 0.83 / 0.75, and a
# closing of radius 1 before the opening cost ~2 points (it merges neighbouring nuclei), so there is none.
NUCLEI_SIGMA, NUCLEI_OPENING, NUCLEI_MIN_AREA = 0.35, 1.0, 3.0
# lungs: Gaussian sigma, body erosion and dark-region opening disk radii. Measured on demo x-ray (32 px): body
# erosion 0 / 1 / 2 / 3 px gave Dice ~0.43 / 0.75 / 0.88 / 0.90 (the blurred body outline is as dark as the lungs)
LUNGS_SIGMA, LUNGS_BODY_EROSION, LUNGS_OPENING = 0.5, 3.0, 1.0


def _scale(data: ImageDataset) -> float:
    return data.size / REFERENCE_SIDE


def _as_float(images: np.ndarray) -> np.ndarray:
    """uint8/uint16 (or float) images -> float64 in [0, 1]."""
    return np.clip(to_unit(images, np.float64), 0.0, 1.0)


def _otsu(x: np.ndarray) -> float:
    """Otsu threshold of the values ``x``; a constant input gives its value (then nothing lies above it)."""
    x = np.ravel(x)
    if x.size == 0 or x.min() == x.max():
        return float(x.max()) if x.size else 0.0
    return float(filters.threshold_otsu(x))


def _disk(radius: float) -> np.ndarray:
    """Disk footprint of ``radius`` rounded to whole pixels; below 1 px the identity (1 x 1)."""
    r = int(np.floor(radius + 0.5))
    return morphology.disk(r) if r >= 1 else np.ones((1, 1), dtype=bool)


def _remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without 8-connected objects of fewer than ``min_size`` pixels."""
    lab = measure.label(mask, connectivity=2)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes (4-connected background regions not reaching the image border) filled."""
    return mask | (clear_border(measure.label(~mask, connectivity=1)) > 0)


# ================================================================================================= nuclei
def classical_nuclei(data: ImageDataset) -> tuple[np.ndarray, list[str]]:
    """Nuclei masks (N, 1, H, W) uint8 of H&E RGB tiles by haematoxylin deconvolution + Otsu + morphology."""
    if data.channels != 3:
        raise ValueError(
            f"segmenter 'classical_nuclei' needs 3-channel RGB (H&E) images, but {data.path} has "
            f"{data.channels} channel(s)"
        )
    k = _scale(data)
    n, h, w = data.n, *data.hw
    rgb = _as_float(data.images).transpose(0, 2, 3, 1)  # (N, H, W, 3)
    hema = color.rgb2hed(rgb)[..., 0]  # haematoxylin optical density, vectorised over the batch
    hema = filters.gaussian(hema, sigma=(0.0, NUCLEI_SIGMA * k, NUCLEI_SIGMA * k), preserve_range=True)
    opening = _disk(NUCLEI_OPENING * k)
    min_size = max(1, round(NUCLEI_MIN_AREA * k * k))
    masks = np.zeros((n, 1, h, w), dtype=np.uint8)
    for i in range(n):
        fg = hema[i] > _otsu(hema[i])
        fg = morphology.opening(fg, opening)
        masks[i, 0] = _remove_small(fg, min_size)
    return masks, ["nuclei"]


# ================================================================================================== lungs
def _grey(data: ImageDataset) -> np.ndarray:
    """(N, H, W) float grey images: the only channel, or the luminance of RGB, or the channel mean."""
    x = _as_float(data.images)
    if x.shape[1] == 1:
        return x[:, 0]
    if x.shape[1] == 3:
        return color.rgb2gray(x.transpose(0, 2, 3, 1))
    return x.mean(axis=1)


def _lungs_one(img: np.ndarray, k: float) -> np.ndarray:
    """Lung mask (H, W) bool of one smoothed grey radiograph in [0, 1]."""
    w = img.shape[1]
    none = np.zeros(img.shape, dtype=bool)
    if img.min() == img.max():
        return none
    # body: above the lower of the two 3-class Otsu thresholds (background | lungs | soft tissue and bone),
    # largest component, holes (the lungs when they are darker than the lower threshold) filled
    body = img > filters.threshold_multiotsu(img, classes=3)[0]
    lab = measure.label(body)
    if lab.max() == 0:
        return none
    body = _fill_holes(lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])))
    # erode past the body's blurred outline, whose grey ramp is as dark as the lungs and would join them to
    # the outside; then the dark class of the body pixels (Otsu restricted to the body)
    inner = morphology.erosion(body, _disk(LUNGS_BODY_EROSION * k))
    if not inner.any():
        return none
    dark = morphology.opening(inner & (img < _otsu(img[inner])), _disk(LUNGS_OPENING * k))
    lab = clear_border(measure.label(dark, connectivity=1))
    props = measure.regionprops(lab)
    if not props:
        return none
    ids = np.array([p.label for p in props])
    areas = np.array([p.area for p in props])
    left = np.array([p.centroid[1] < w / 2 for p in props])
    # one lung per image half (largest component whose centroid lies there); else the two largest overall
    keep = [int(ids[sel][np.argmax(areas[sel])]) for sel in (left, ~left) if sel.any()]
    if len(keep) < 2:
        keep = [int(i) for i in ids[np.argsort(-areas, kind="stable")[:2]]]
    return _fill_holes(np.isin(lab, keep))


def classical_lungs(data: ImageDataset) -> tuple[np.ndarray, list[str]]:
    """Lung masks (N, 1, H, W) uint8 of chest radiographs: dark regions inside the body, two largest (one per
    image half) components off the border, holes filled. RGB or multi-channel images are converted to grey."""
    k = _scale(data)
    grey = filters.gaussian(_grey(data), sigma=(0.0, LUNGS_SIGMA * k, LUNGS_SIGMA * k), preserve_range=True)
    masks = np.zeros((data.n, 1, *data.hw), dtype=np.uint8)
    for i in range(data.n):
        masks[i, 0] = _lungs_one(grey[i], k)
    return masks, ["lungs"]


# ================================================================================================= metric
def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over images (axis 0) of the Dice coefficient 2|P & T| / (|P| + |T|); empty vs empty counts as 1."""
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(f"dice: prediction shape {pred.shape} != truth shape {truth.shape}")
    if pred.ndim == 0 or pred.shape[0] == 0:
        raise ValueError(f"dice: need at least one image, got shape {pred.shape}")
    p, t = pred.reshape(pred.shape[0], -1), truth.reshape(truth.shape[0], -1)
    inter = (p & t).sum(axis=1)
    total = p.sum(axis=1) + t.sum(axis=1)
    per_image = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return float(per_image.mean())
