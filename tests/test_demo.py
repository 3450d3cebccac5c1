"""Tests for the embedded demo data generators (splicer.data.demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from splicer.data.demo import DEMO_FAMILIES, demo_datasets, make_demo
from splicer.data.format import ImageDataset, load_dataset
from splicer.data.vocab import HYPERSPECTRAL_BANDS, MULTIPLEX_CHANNELS

SMALL = {"n_pretrain": 40, "n_train": 24, "n_val": 12, "n_test": 12}
EXPECTED = {  # family -> {dataset: (C, H, W, dtype, n_classes, masks)} at default sizes
    "mnist_cifar": {
        **{k: (3, 32, 16, np.uint8, 2, 0) for k in ("pretrain", "rNONE", "rMNIST", "rCIFAR")},
        "mnist_only": (3, 16, 16, np.uint8, 2, 0),
        "cifar_only": (3, 16, 16, np.uint8, 2, 0),
    },
    "multiplex": {
        "pretrain": (19, 16, 16, np.uint8, 8, 0),
        "cell_types": (19, 16, 16, np.uint8, 6, 0),
        "t_cells": (19, 16, 16, np.uint8, 3, 0),
        "t_cells_complex": (3, 16, 16, np.uint8, 3, 0),
    },
    "hyperspectral": {
        "pretrain": (13, 16, 16, np.uint16, 6, 0),
        "bands13": (13, 16, 16, np.uint16, 6, 0),
        "rgb": (3, 16, 16, np.uint16, 6, 0),
        "bands13_complex": (7, 16, 16, np.uint16, 6, 0),
    },
    "histology": {
        "pretrain": (3, 32, 32, np.uint8, 4, 1),
        "eval": (3, 32, 32, np.uint8, 4, 1),
        "shift": (3, 32, 32, np.uint8, 2, 1),
        "eval_complex": (3, 32, 32, np.uint8, 4, 1),
        "shift_complex": (3, 32, 32, np.uint8, 2, 1),
    },
    "xray": {
        "pretrain": (1, 32, 32, np.uint8, 2, 1),
        "pneumonia": (1, 32, 32, np.uint8, 2, 1),
        "pneumonia_complex": (1, 32, 32, np.uint8, 2, 1),
    },
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, dict[str, ImageDataset]]:
    """Every family at its default size, generated once (speed belongs to benchmarks, not to a test)."""
    root = tmp_path_factory.mktemp("demo")
    out: dict[str, dict[str, ImageDataset]] = {}
    for family in DEMO_FAMILIES:
        paths = make_demo(family, root / family, seed=0)
        out[family] = {name: load_dataset(p) for name, p in paths.items()}
    return out


def _f(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) / (255.0 if x.dtype == np.uint8 else 65535.0)


def _probe(ds: ImageDataset, features, target=None, C: float = 1.0) -> float:
    """Test accuracy of a standardised logistic regression fit on the train split."""
    target = target or (lambda d: np.asarray(d.labels))
    train, test = ds.select("train"), ds.select("test")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    model.fit(features(train), target(train))
    return float(model.score(features(test), target(test)))


def _channel_means(d: ImageDataset) -> np.ndarray:
    return _f(d.images).mean(axis=(2, 3))


# ------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("family", list(EXPECTED))
def test_shapes_dtypes_and_balance(demo, family):
    for name, (c, h, w, dtype, n_classes, n_masks) in EXPECTED[family].items():
        ds = demo[family][name]
        assert ds.images.shape[1:] == (c, h, w), name
        assert ds.images.dtype == dtype, name
        assert len(ds.class_names) == n_classes and len(ds.channel_names) == c
        assert ds.meta["info"]["family"] == family
        assert (ds.masks is None) == (n_masks == 0)
        if name == "pretrain":
            assert ds.n == 2000 and ds.split_names == ["train"]
            continue
        assert ds.split_names == ["train", "val", "test"]
        for split, n in (("train", 600), ("val", 200), ("test", 600)):
            counts = list(ds.select(split).class_counts().values())
            assert sum(counts) == n and max(counts) - min(counts) <= 1, (name, split, counts)
        if n_masks:
            masks = np.asarray(ds.masks)
            assert set(np.unique(masks)) == {0, 1}
            assert masks.reshape(ds.n, -1).max(axis=1).min() == 1, "every image needs a non-empty mask"


def test_declared_datasets_are_the_generated_ones(demo):
    for family in DEMO_FAMILIES:
        assert set(demo_datasets(family)) == set(demo[family]), family
    with pytest.raises(ValueError, match="unknown demo family 'nope'"):
        demo_datasets("nope")


def test_determinism_same_seed_identical_bytes(tmp_path):
    for family in DEMO_FAMILIES:
        a = make_demo(family, tmp_path / "a" / family, seed=3, **SMALL)
        b = make_demo(family, tmp_path / "b" / family, seed=3, **SMALL)
        c = make_demo(family, tmp_path / "c" / family, seed=4, **SMALL)
        assert list(a) == list(b) == list(c)
        for name in a:
            for file in ("images.npy", "labels.npy", "split.npy", "meta.json"):
                assert (a[name] / file).read_bytes() == (b[name] / file).read_bytes(), (family, name, file)
            assert (a[name] / "images.npy").read_bytes() != (c[name] / "images.npy").read_bytes(), (family, name)


def test_make_demo_rejects_unknown_family_and_parameter(tmp_path):
    with pytest.raises(ValueError, match="'mnist'"):
        make_demo("mnist", tmp_path)
    with pytest.raises(ValueError, match="'n_epochs'"):
        make_demo("xray", tmp_path, n_epochs=3)
    with pytest.raises(ValueError, match="'n_train'"):
        make_demo("histology", tmp_path, n_train=-1)
    with pytest.raises(ValueError, match="'size'"):
        make_demo("multiplex", tmp_path, size=4)
    assert not any(tmp_path.iterdir())


def test_sizes_are_configurable(tmp_path):
    paths = make_demo("mnist_cifar", tmp_path, seed=1, half_size=24, **SMALL)
    ds = load_dataset(paths["rNONE"])
    assert ds.hw == (48, 24) and ds.n == 48
    assert ds.meta["info"]["regions"] == {
        "mnist": {"rows": [0, 24], "cols": [0, 24]},
        "cifar": {"rows": [24, 48], "cols": [0, 24]},
    }
    x = load_dataset(make_demo("multiplex", tmp_path / "m", seed=1, size=24, **SMALL)["t_cells"])
    assert x.images.shape[1:] == (19, 24, 24)


# ---------------------------------------------------------------------------------------- MNIST-CIFAR
S = 16


def _digit_pixels(d: ImageDataset) -> np.ndarray:
    return _f(d.images[:, 0, :S]).reshape(d.n, -1)


def _texture_energy(d: ImageDataset) -> np.ndarray:
    """Second-order orientation features of the bottom half: log horizontal/vertical gradient energy ratio."""
    g = _f(d.images[:, :, S:]).mean(axis=1)
    gx, gy = np.diff(g, axis=2)[:, :-1], np.diff(g, axis=1)[:, :, :-1]
    ex, ey, exy = (gx**2).mean((1, 2)), (gy**2).mean((1, 2)), (gx * gy).mean((1, 2))
    return np.stack([np.log(ex + 1e-6) - np.log(ey + 1e-6), exy / (ex + ey + 1e-6)], axis=1)


def _texture_pixels(d: ImageDataset) -> np.ndarray:
    return _f(d.images[:, :, S:]).reshape(d.n, -1)


def test_mnist_cifar_components_and_randomisation(demo):
    mc = demo["mnist_cifar"]
    none, rm, rc = mc["rNONE"], mc["rMNIST"], mc["rCIFAR"]
    np.testing.assert_array_equal(none.labels, rm.labels)
    np.testing.assert_array_equal(none.images[:, :, S:], rm.images[:, :, S:])  # same texture half
    np.testing.assert_array_equal(none.images[:, :, :S], rc.images[:, :, :S])  # same digit half
    np.testing.assert_array_equal(mc["cifar_only"].images, none.images[:, :, S:])
    np.testing.assert_array_equal(mc["mnist_only"].images, none.images[:, :, :S])
    assert (none.images[:, 0, :S] == none.images[:, 2, :S]).all()  # grey digit replicated to RGB
    assert rm.meta["info"]["randomised"] == "mnist" and rc.meta["info"]["randomised"] == "cifar"


def test_mnist_cifar_simple_and_complex_features(demo):
    mc = demo["mnist_cifar"]
    digit = {k: _probe(mc[k], _digit_pixels, C=0.1) for k in ("rNONE", "rMNIST", "rCIFAR")}
    texture = {k: _probe(mc[k], _texture_energy) for k in ("rNONE", "rMNIST", "rCIFAR")}
    print("digit-half pixel LR", digit, "texture-half orientation-energy LR", texture)
    assert digit["rNONE"] > 0.95 and digit["rCIFAR"] > 0.95  # simple: linearly separable from pixels
    assert digit["rMNIST"] < 0.6  # randomised digit carries no label information
    assert 0.65 < texture["rNONE"] < 0.95 and texture["rMNIST"] > 0.65  # complex: learnable, not perfect
    assert texture["rCIFAR"] < 0.6
    # the texture class is second order: invisible to a linear model on its pixels
    assert _probe(mc["rNONE"], _texture_pixels, C=0.01) < 0.6


# ----------------------------------------------------------------------------------------- multiplex
def test_multiplex_channels_and_distribution(demo):
    mp = demo["multiplex"]
    assert mp["t_cells"].channel_names == MULTIPLEX_CHANNELS and len(MULTIPLEX_CHANNELS) == 19
    counts = np.array(list(mp["pretrain"].class_counts().values()))
    assert counts.min() > 0 and counts.max() > 5 * counts.min()  # natural, imbalanced


def test_multiplex_dim_channels_predict_t_subtypes(demo):
    mp = demo["multiplex"]
    dim = [MULTIPLEX_CHANNELS.index(c) for c in ("CD4", "CD8a", "FOXP3")]
    coarse = [
        MULTIPLEX_CHANNELS.index(c) for c in ("Pan-CK", "E-cadherin", "SMA", "CD31", "CD45", "CD68", "CD20", "CD3e")
    ]
    acc_t = _probe(mp["t_cells"], lambda d: _channel_means(d)[:, dim])
    acc_types = _probe(mp["cell_types"], _channel_means)
    sd = _f(mp["pretrain"].images).std(axis=(0, 2, 3))
    print(
        f"t_cells LR on CD4/CD8a/FOXP3 means {acc_t:.3f}; cell_types LR on all means {acc_types:.3f}; "
        f"pixel sd dim {sd[dim].round(4)} coarse {sd[coarse].round(4)}"
    )
    assert acc_t > 0.8
    assert acc_types > 0.9
    assert sd[dim].max() < 0.5 * sd[coarse].min()  # the subtype markers are low variance


# ------------------------------------------------------------------------------------- hyperspectral
def test_hyperspectral_bands_and_rgb_subset(demo):
    hs = demo["hyperspectral"]
    assert hs["bands13"].channel_names == HYPERSPECTRAL_BANDS
    assert hs["rgb"].channel_names == ["B04", "B03", "B02"]
    np.testing.assert_array_equal(hs["rgb"].images, hs["bands13"].images[:, [3, 2, 1]])
    np.testing.assert_array_equal(hs["rgb"].labels, hs["bands13"].labels)
    assert hs["bands13"].meta["info"]["band_order"] == HYPERSPECTRAL_BANDS
    assert hs["bands13"].images.max() > 255  # really uses the uint16 range


# ----------------------------------------------------------------------------------------- histology
def _nuclei_features(d: ImageDataset) -> np.ndarray:
    """Count, mean size and total area of the connected nuclei in the true mask."""
    rows = []
    for m in np.asarray(d.masks[:, 0]):
        count = ndimage.label(m)[1]
        rows.append([count, m.sum() / max(count, 1), m.sum()])
    return np.log1p(np.array(rows, dtype=np.float64))


def test_histology_shift_has_held_out_stain(demo):
    sh = demo["histology"]["shift"]
    assert sh.class_names == ["normal", "tumour"] and sh.meta["info"]["test_hospital"] == 3
    train_rgb = _channel_means(sh.select("train")).mean(0)
    test_rgb = _channel_means(sh.select("test")).mean(0)
    assert np.abs(train_rgb - test_rgb).max() > 0.05  # visible stain shift
    assert _probe(sh, _nuclei_features) > 0.9  # the nuclei still carry the label


# The histology and x-ray designs (simple vs complex features) are tested in test_demo_histology.py / _xray.py.
def test_generators_return_paths_inside_out_dir(demo, tmp_path):
    paths = make_demo("xray", tmp_path, seed=0, **SMALL)
    assert all(isinstance(p, Path) and p.parent == tmp_path.absolute() for p in paths.values())
