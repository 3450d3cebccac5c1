"""The multiplex demo family carries the paper's mechanism: bright lineage markers (simple) decide the cell type,
three dim markers (complex, one component) decide the T-cell subtype and are learnable from that component alone."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from splicer.data.demo import make_multiplex
from splicer.data.demo.multiplex import DATASETS
from splicer.data.format import ImageDataset, load_dataset
from splicer.data.vocab import CELL_TYPES, MULTIPLEX_CHANNELS, T_SUBTYPES

COMPLEX = ["CD4", "CD8a", "FOXP3"]
LINEAGE = ["Pan-CK", "E-cadherin", "SMA", "CD31", "CD45", "CD68", "CD20", "CD3e"]


@pytest.fixture(scope="module")
def mp(tmp_path_factory) -> dict[str, ImageDataset]:
    paths = make_multiplex(
        tmp_path_factory.mktemp("mp"), seed=0, n_pretrain=400, n_train=300, n_val=60, n_test=300, size=12
    )
    assert tuple(paths) == DATASETS or set(paths) == set(DATASETS)
    return {name: load_dataset(p) for name, p in paths.items()}


def _means(d: ImageDataset) -> np.ndarray:
    return np.asarray(d.images, dtype=np.float64).mean(axis=(2, 3)) / 255.0


def _probe(d: ImageDataset, features) -> float:
    train, test = d.select("train"), d.select("test")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    model.fit(features(train), np.asarray(train.labels))
    return float(model.score(features(test), np.asarray(test.labels)))


def test_complex_datasets_are_the_t_subtype_channels(mp):
    idx = [MULTIPLEX_CHANNELS.index(c) for c in COMPLEX]
    for full, part in (("pretrain", "pretrain_complex"), ("t_cells", "t_cells_complex")):
        assert mp[part].channel_names == COMPLEX
        np.testing.assert_array_equal(mp[part].images, np.asarray(mp[full].images)[:, idx])
        np.testing.assert_array_equal(mp[part].labels, mp[full].labels)
        np.testing.assert_array_equal(mp[part].split, mp[full].split)
    assert mp["t_cells"].class_names == T_SUBTYPES and mp["cell_types"].class_names == CELL_TYPES
    assert mp["t_cells_complex"].images.shape[1:] == (3, 12, 12)


def test_pretraining_distribution_is_natural_with_t_cells(mp):
    counts = np.bincount(np.asarray(mp["pretrain"].labels), minlength=8)
    assert counts.min() > 0 and counts.max() > 3 * counts.min()  # imbalanced, every fine type present
    assert 0.2 < counts[5:].sum() / counts.sum() < 0.4  # T cells are a minority


def test_complex_component_alone_predicts_t_subtype(mp):
    """The hard task is learnable from the complex component: a linear probe on its pixel statistics."""
    acc_means = _probe(mp["t_cells_complex"], _means)
    acc_pixels = _probe(mp["t_cells_complex"], lambda d: np.asarray(d.images, dtype=np.float64).reshape(d.n, -1))
    print(f"t_cells from CD4/CD8a/FOXP3 means {acc_means:.3f}, raw pixels {acc_pixels:.3f}")
    assert acc_means > 0.9 and acc_pixels > 0.6  # chance 1/3


def test_simple_channels_decide_cell_type_not_subtype(mp):
    lineage = [MULTIPLEX_CHANNELS.index(c) for c in LINEAGE]
    acc_type = _probe(mp["cell_types"], lambda d: _means(d)[:, lineage])
    acc_sub = _probe(mp["t_cells"], lambda d: _means(d)[:, lineage])
    print(f"lineage means -> cell type {acc_type:.3f}, -> T subtype {acc_sub:.3f}")
    assert acc_type > 0.9 and acc_sub < 0.5


def test_complex_markers_are_dim(mp):
    """Where expressed, the subtype markers are several times dimmer than the lineage markers."""
    x = np.asarray(mp["t_cells"].images, dtype=np.float64) / 255.0
    peak = x.reshape(x.shape[0], x.shape[1], -1).max(axis=2)  # per cell and channel
    dim = peak[:, [MULTIPLEX_CHANNELS.index(c) for c in COMPLEX]].max(axis=1)
    bright = peak[:, MULTIPLEX_CHANNELS.index("CD3e")]
    print(f"median peak: subtype marker {np.median(dim):.3f}, CD3e {np.median(bright):.3f}")
    assert np.median(dim) < 0.5 * np.median(bright)
