"""The histology demo family (splicer.data.demo.histology): nuclear morphology (complex) under stain and stroma
(simple), a stain shortcut that shifts in the held-out hospital."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from splicer.data.demo import make_histology
from splicer.data.demo.histology import DATASETS
from splicer.data.format import ImageDataset, load_dataset
from splicer.segmenters import classical_nuclei, dice


@pytest.fixture(scope="module")
def histology(tmp_path_factory) -> dict[str, ImageDataset]:
    paths = make_histology(tmp_path_factory.mktemp("histology"), seed=0, n_pretrain=50, size=20)
    return {name: load_dataset(p) for name, p in paths.items()}


def _rgb(d: ImageDataset) -> np.ndarray:
    return np.asarray(d.images, dtype=np.float64) / 255.0


def _means(d: ImageDataset) -> np.ndarray:
    return _rgb(d).mean(axis=(2, 3))


def _nuclear_factor(d: ImageDataset) -> np.ndarray:
    return np.asarray(d.labels) % 2 if len(d.class_names) == 4 else np.asarray(d.labels)


def _blob_stats(d: ImageDataset) -> np.ndarray:
    """Count and mean size of the connected non-zero regions of a component image (the nuclei alone)."""
    rows = []
    for img in np.asarray(d.images):
        lab, count = ndimage.label(img.max(axis=0) > 0)
        area = (lab > 0).sum()
        rows.append([count, area / max(count, 1)])
    return np.log1p(np.array(rows, dtype=np.float64))


def _score(d: ImageDataset, features, target, fit: str = "train", on: str = "test") -> float:
    a, b = d.select(fit), d.select(on)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    model.fit(features(a), target(a))
    return float(model.score(features(b), target(b)))


def test_datasets_and_complex_component(histology):
    assert set(histology) == set(DATASETS)
    for name in ("pretrain", "eval", "shift"):
        full, comp = histology[name], histology[f"{name}_complex"]
        assert full.mask_names == comp.mask_names == ["nuclei"] and full.channel_names == ["R", "G", "B"]
        np.testing.assert_array_equal(comp.images, np.asarray(full.images) * np.asarray(full.masks))
        np.testing.assert_array_equal(comp.labels, full.labels)
        assert comp.meta["info"]["component"] == "nuclei (true mask)"
    shift = histology["shift"]
    assert shift.class_names == ["normal", "tumour"] and shift.meta["info"]["test_hospital"] == 3


def test_tumour_predictable_from_the_nuclei_component_alone(histology):
    for name in ("shift_complex", "eval_complex"):
        acc = _score(histology[name], _blob_stats, _nuclear_factor)
        print(f"{name}: blob count/size LR -> nucleus type {acc:.3f}")
        assert acc > 0.85


def test_stroma_simple_nucleus_type_not_in_mean_colour(histology):
    ev = histology["eval"]
    stroma = _score(ev, _means, lambda d: np.asarray(d.labels) // 2)
    nuclei = _score(ev, _means, _nuclear_factor)
    print(f"mean colour LR -> stroma {stroma:.3f}, -> nucleus type {nuclei:.3f}")
    assert stroma > 0.85 and nuclei < 0.65


def test_stain_shortcut_shifts_in_the_held_out_hospital(histology):
    sh = histology["shift"]
    val = _score(sh, _means, _nuclear_factor, on="val")
    test = _score(sh, _means, _nuclear_factor, on="test")
    shift = np.abs(_means(sh.select("train")).mean(0) - _means(sh.select("test")).mean(0)).max()
    print(
        f"mean colour LR -> tumour: val (training hospitals) {val:.3f}, test (held-out hospital) {test:.3f}; "
        f"largest mean RGB shift {shift:.3f}"
    )
    assert val > 0.56 and test < 0.58  # colour is a (weak) shortcut inside the training hospitals only
    assert shift > 0.05  # visible stain shift


def test_classical_nuclei_at_demo_size(histology):
    for name in ("eval", "shift"):
        data = histology[name]
        score = dice(classical_nuclei(data)[0], data.masks)
        print(f"classical_nuclei Dice at 20 px on {name}: {score:.3f}")
        assert score > 0.8
