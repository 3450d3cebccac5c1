"""The hyperspectral demo family: visible colour/texture (simple) decides four class groups; two RGB-confusable
pairs differ only in red-edge/NIR/SWIR (complex), learnable from those bands alone; a shifted pretraining set."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from splicer.data.demo import make_hyperspectral
from splicer.data.demo.hyperspectral import DATASETS
from splicer.data.format import ImageDataset, load_dataset
from splicer.data.vocab import HYPERSPECTRAL_BANDS, RGB_BANDS

COMPLEX = ["B05", "B06", "B07", "B08", "B08A", "B11", "B12"]
PAIRS = [0, 1, 2, 3]  # AnnualCrop, PermanentCrop, Forest, HerbaceousVegetation: two RGB-confusable pairs


@pytest.fixture(scope="module")
def hs(tmp_path_factory) -> dict[str, ImageDataset]:
    paths = make_hyperspectral(
        tmp_path_factory.mktemp("hs"), seed=0, n_pretrain=300, n_train=600, n_val=60, n_test=600, size=12
    )
    assert set(paths) == set(DATASETS)
    return {name: load_dataset(p) for name, p in paths.items()}


def _means(d: ImageDataset) -> np.ndarray:
    return np.asarray(d.images, dtype=np.float64).mean(axis=(2, 3)) / 65535.0


def _probe(d: ImageDataset, features, classes=None) -> float:
    train, test = d.select("train"), d.select("test")
    (xtr, ytr), (xte, yte) = ((features(s), np.asarray(s.labels)) for s in (train, test))
    if classes is not None:
        keep_tr, keep_te = np.isin(ytr, classes), np.isin(yte, classes)
        xtr, ytr, xte, yte = xtr[keep_tr], ytr[keep_tr], xte[keep_te], yte[keep_te]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000)).fit(xtr, ytr)
    return float(model.score(xte, yte))


def test_band_subsets(hs):
    b13 = np.asarray(hs["bands13"].images)
    np.testing.assert_array_equal(hs["rgb"].images, b13[:, [HYPERSPECTRAL_BANDS.index(b) for b in RGB_BANDS]])
    np.testing.assert_array_equal(hs["bands13_complex"].images, b13[:, [HYPERSPECTRAL_BANDS.index(b) for b in COMPLEX]])
    pre = np.asarray(hs["pretrain"].images)
    np.testing.assert_array_equal(
        hs["pretrain_complex"].images, pre[:, [HYPERSPECTRAL_BANDS.index(b) for b in COMPLEX]]
    )
    assert hs["bands13_complex"].channel_names == COMPLEX and hs["rgb"].channel_names == RGB_BANDS
    for name in ("rgb", "bands13_complex"):
        np.testing.assert_array_equal(hs[name].labels, hs["bands13"].labels)
    assert hs["bands13"].images.dtype == np.uint16 and hs["bands13"].images.max() > 255


def test_complex_bands_alone_separate_the_rgb_confusable_pairs(hs):
    """The hard task (the two pairs) is learnable from the complex component; RGB statistics cannot do it."""
    acc_complex = _probe(hs["bands13_complex"], _means, PAIRS)
    acc_rgb = _probe(hs["rgb"], _means, PAIRS)
    print(f"4 pair classes from complex-band means {acc_complex:.3f}, from RGB means {acc_rgb:.3f} (chance 0.25)")
    assert acc_complex > 0.65 and acc_rgb < 0.55


def test_all_bands_beat_rgb(hs):
    acc13, acc_rgb = _probe(hs["bands13"], _means), _probe(hs["rgb"], _means)
    print(f"13-band means LR {acc13:.3f}; RGB means LR {acc_rgb:.3f}")
    assert acc13 > acc_rgb + 0.1


def test_shifted_pretraining_set(hs):
    sh = hs["pretrain_shifted"]
    assert sh.channel_names == HYPERSPECTRAL_BANDS and sh.split_names == ["train"]
    labels = np.asarray(sh.labels)
    assert 0.2 < (labels == -1).mean() < 0.5  # biomes EuroSAT lacks (desert, snow), unlabelled
    assert set(np.unique(labels[labels >= 0])) == set(range(6))
    # brighter and more variable than the in-distribution set (clouds, snow, haze, illumination)
    m_sh, m_in = _means(sh).mean(axis=1), _means(hs["pretrain"]).mean(axis=1)
    assert m_sh.mean() > 1.5 * m_in.mean() and m_sh.std() > 2 * m_in.std()
