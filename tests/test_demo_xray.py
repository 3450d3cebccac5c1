"""The x-ray demo family (splicer.data.demo.xray): lung-field texture (complex) under anatomy and exposure (simple)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from splicer.data.demo import make_xray
from splicer.data.demo.xray import DATASETS
from splicer.data.format import ImageDataset, load_dataset
from splicer.segmenters import classical_lungs, dice

COUNTS = {"n_pretrain": 300, "n_train": 300, "n_val": 60, "n_test": 300}


@pytest.fixture(scope="module")
def xray(tmp_path_factory) -> dict[str, ImageDataset]:
    paths = make_xray(tmp_path_factory.mktemp("xray"), seed=0, size=16, **COUNTS)
    return {name: load_dataset(p) for name, p in paths.items()}


def _grey(d: ImageDataset) -> np.ndarray:
    return np.asarray(d.images[:, 0], dtype=np.float64) / 255.0


def _probe(d: ImageDataset, features, C: float = 1.0) -> float:
    train, test = d.select("train"), d.select("test")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    model.fit(features(train), np.asarray(train.labels))
    return float(model.score(features(test), np.asarray(test.labels)))


def _orientation_energy(d: ImageDataset) -> np.ndarray:
    """Second-order texture statistics of the pixels (zero outside the lungs in a ``_complex`` dataset): the log
    ratio of horizontal to vertical gradient energy and the normalised cross term, over pixel pairs inside the
    lungs."""
    x, m = _grey(d), np.asarray(d.masks[:, 0]).astype(bool)
    gx, gy = np.diff(x, axis=2)[:, :-1], np.diff(x, axis=1)[:, :, :-1]
    inside = m[:, :-1, :-1] & m[:, 1:, :-1] & m[:, :-1, 1:]
    ex, ey, exy = ((g * inside).sum((1, 2)) / np.maximum(inside.sum((1, 2)), 1) for g in (gx**2, gy**2, gx * gy))
    return np.stack([np.log(ex + 1e-6) - np.log(ey + 1e-6), exy / (ex + ey + 1e-6)], axis=1)


def _lung_stats(d: ImageDataset) -> np.ndarray:
    x, m = _grey(d), np.asarray(d.masks[:, 0]).astype(bool)
    return np.array([[v.mean(), v.std()] for v in (xi[mi] for xi, mi in zip(x, m, strict=True))])


def test_datasets_and_complex_component(xray):
    assert set(xray) == set(DATASETS)
    for name in ("pretrain", "pneumonia"):
        full, comp = xray[name], xray[f"{name}_complex"]
        assert full.channel_names == comp.channel_names == ["X-ray"] and full.mask_names == ["lungs"]
        np.testing.assert_array_equal(comp.images, np.asarray(full.images) * np.asarray(full.masks))
        np.testing.assert_array_equal(comp.labels, full.labels)
        np.testing.assert_array_equal(comp.split, full.split)
        assert comp.meta["info"]["component"] == "lungs (true mask)"
    prevalence = np.asarray(xray["pretrain"].labels).mean()
    assert 0.22 < prevalence < 0.38


def test_pneumonia_predictable_from_the_lung_component_alone(xray):
    comp = xray["pneumonia_complex"]
    texture = _probe(comp, _orientation_energy)
    pixels = _probe(comp, lambda d: _grey(d).reshape(d.n, -1), C=0.01)
    print(f"lung component: orientation-energy LR {texture:.3f}, raw-pixel LR {pixels:.3f}")
    assert texture > 0.85  # the complex feature is there, in the lungs
    assert pixels < 0.7  # ... and second order: not linear in the pixels


def test_simple_cues_are_weak(xray):
    pn = xray["pneumonia"]
    brightness = _probe(pn, lambda d: _grey(d).mean(axis=(1, 2))[:, None])
    lung_moments = _probe(pn, _lung_stats)
    print(f"global brightness LR {brightness:.3f}; lung mean/sd LR {lung_moments:.3f}")
    assert 0.5 < brightness < 0.7  # the global intensity cue carries a little label information
    assert lung_moments < 0.75  # matched first and second moments inside the lungs


def test_anatomy_dominates_pixel_variance(xray):
    """Summed over the image, the between-image pixel variance outside the lungs (anatomy, exposure) is far above
    the within-lung variance that carries the texture (which covers ~20 % of the image)."""
    pn = xray["pneumonia"]
    x, m = _grey(pn), np.asarray(pn.masks[:, 0]).astype(bool)
    outside = x.var(axis=0)[~m.any(axis=0)].sum()
    texture = np.mean([((xi[mi] - xi[mi].mean()) ** 2).sum() for xi, mi in zip(x, m, strict=True)])
    print(f"summed variance: across images outside the lungs {outside:.2f}; within the lungs {texture:.2f}")
    assert outside > 2 * texture


def test_classical_lungs_at_demo_size(xray):
    data = xray["pneumonia"]
    masks, _ = classical_lungs(data)
    score = dice(masks, data.masks)
    print(f"classical_lungs Dice at 16 px: {score:.3f}")
    assert score > 0.7
