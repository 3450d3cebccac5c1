"""Tests for splicer.evaluate: embedding, probes, spectra and marker correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from splicer.evaluate import (
    effective_rank,
    embed,
    linear_probe,
    marker_correlation,
    mlp_probe,
    singular_values,
)

CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


# ------------------------------------------------------------------------------------------------------ embed
class TinyEncoder(nn.Module):
    def __init__(self, in_channels: int = 3, out_dim: int = 5) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.5),  # makes train mode non-deterministic, so eval mode is observable
            nn.Linear(4, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def encoder_and_images() -> tuple[TinyEncoder, np.ndarray]:
    torch.manual_seed(0)
    enc = TinyEncoder()
    rng = np.random.default_rng(0)
    return enc, rng.integers(0, 256, size=(7, 3, 8, 8), dtype=np.uint8)


def test_embed_shape_dtype_and_matches_manual_eval(encoder_and_images):
    enc, images = encoder_and_images
    Z = embed(enc, images, batch_size=3)
    assert Z.shape == (7, 5) and Z.dtype == np.float32
    enc.eval()
    with torch.no_grad():
        ref = enc(torch.from_numpy(images).float() / 255.0).numpy()
    np.testing.assert_allclose(Z, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed(enc, images, batch_size=256), Z, rtol=1e-5, atol=1e-6)


def test_embed_deterministic_uint16_and_no_state_change(encoder_and_images):
    enc, images = encoder_and_images
    enc.train()
    running_mean = enc.net[1].running_mean.clone()
    Z1 = embed(enc, images, batch_size=2)
    Z2 = embed(enc, images, batch_size=2)
    np.testing.assert_array_equal(Z1, Z2)  # dropout off -> eval mode was used
    assert torch.equal(enc.net[1].running_mean, running_mean)  # BN statistics untouched
    Z16 = embed(enc, images.astype(np.uint16) * 257, batch_size=2)  # x*257/65535 == x/255
    np.testing.assert_allclose(Z16, Z1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_embed_restores_mode(encoder_and_images, training):
    enc, images = encoder_and_images
    enc.train(training)
    embed(enc, images)
    assert enc.training is training
    assert all(m.training is training for m in enc.modules())


def test_embed_rejects_bad_input(encoder_and_images):
    enc, images = encoder_and_images
    with pytest.raises(ValueError, match="int64"):
        embed(enc, images.astype(np.int64))
    with pytest.raises(ValueError, match="shape"):
        embed(enc, images[0])


# ------------------------------------------------------------------------------------------------- linear probe
def blobs(n_per_class: int, labels: tuple[int, ...], dim: int, sep: float, seed: int):
    """Gaussian blobs; the class centres are shared by every split (fixed seed), the samples use ``seed``."""
    centres = np.random.default_rng(1234).normal(size=(len(labels), dim)) * sep
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.asarray(labels), n_per_class)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


def test_linear_probe_separable_blobs_with_arbitrary_labels():
    labels = (3, 7, 11)
    res = linear_probe(blobs(60, labels, 16, 3.0, 0), blobs(30, labels, 16, 3.0, 1), blobs(40, labels, 16, 3.0, 2))
    assert res["accuracy"] > 0.95 and res["balanced_accuracy"] > 0.95
    assert res["val_accuracy"] > 0.95
    assert res["auc"] > 0.95  # macro one-vs-rest for multiclass
    assert (res["n_train"], res["n_val"], res["n_test"], res["n_classes"]) == (180, 90, 120, 3)
    assert res["best_C"] in CS


def test_linear_probe_random_labels_near_chance():
    rng = np.random.default_rng(0)

    def split(n):
        return rng.normal(size=(n, 10)), rng.integers(0, 2, size=n)

    res = linear_probe(split(200), split(200), split(400))
    assert abs(res["accuracy"] - 0.5) < 0.1
    assert abs(res["auc"] - 0.5) < 0.1


def _val_accuracies(train, val):
    scaler = StandardScaler().fit(train[0])
    out = []
    for C in CS:
        clf = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(train[0]), train[1])
        out.append(float(np.mean(clf.predict(scaler.transform(val[0])) == val[1])))
    return out


def test_linear_probe_selects_C_on_val_only():
    # noisy, overlapping problem: validation accuracy genuinely varies with C
    train, val, test = (blobs(40, (0, 1), 30, 0.35, s) for s in (10, 11, 12))
    res = linear_probe(train, val, test, Cs=CS)
    val_accs = _val_accuracies(train, val)
    assert res["val_accuracy"] == pytest.approx(max(val_accs))
    assert res["best_C"] == CS[int(np.argmax(val_accs))]  # argmax takes the first (smallest C) on ties

    flipped = linear_probe(train, val, (test[0], 1 - test[1]), Cs=CS)
    shuffled = linear_probe(train, val, (test[0], np.random.default_rng(0).permutation(test[1])), Cs=CS)
    for other in (flipped, shuffled):
        assert other["best_C"] == res["best_C"]
        assert other["val_accuracy"] == res["val_accuracy"]
    assert flipped["accuracy"] == pytest.approx(1.0 - res["accuracy"])  # test labels really were changed


def test_linear_probe_ties_prefer_smallest_C():
    data = [blobs(20, (0, 1), 4, 20.0, s) for s in (0, 1, 2)]  # every C separates val perfectly
    res = linear_probe(*data, Cs=(10.0, 0.1, 1.0))
    assert res["val_accuracy"] == 1.0
    assert res["best_C"] == 0.1


def test_linear_probe_binary_auc_matches_sklearn():
    train, val, test = (blobs(50, (2, 5), 8, 0.4, s) for s in (20, 21, 22))
    res = linear_probe(train, val, test)
    assert 0.0 <= res["auc"] <= 1.0
    scaler = StandardScaler().fit(train[0])
    clf = LogisticRegression(C=res["best_C"], max_iter=2000).fit(scaler.transform(train[0]), train[1])
    proba = clf.predict_proba(scaler.transform(test[0]))[:, 1]
    assert res["auc"] == pytest.approx(roc_auc_score(test[1] == 5, proba), abs=1e-12)
    assert res["accuracy"] == pytest.approx(np.mean(clf.predict(scaler.transform(test[0])) == test[1]))


def test_linear_probe_input_errors():
    train = blobs(10, (0, 1), 3, 2.0, 0)
    empty = (np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="val"):
        linear_probe(train, empty, train)
    with pytest.raises(ValueError, match="test"):
        linear_probe(train, train, (np.zeros((5, 4)), np.zeros(5, dtype=np.int64)))
    with pytest.raises(ValueError, match="2 classes"):
        linear_probe((train[0], np.zeros(20, dtype=np.int64)), train, train)


def test_linear_probe_auc_nan_when_test_lacks_a_class():
    train = blobs(20, (0, 1, 2), 4, 3.0, 0)
    test = (train[0][train[1] != 2], train[1][train[1] != 2])
    res = linear_probe(train, train, test)
    assert math.isnan(res["auc"]) and res["accuracy"] > 0.9


# --------------------------------------------------------------------------------------------------- mlp probe
def xor(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    X = X[np.abs(X).min(axis=1) > 0.05]  # small margin around the axes
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def test_mlp_probe_learns_xor_linear_cannot():
    train, val, test = xor(600, 0), xor(300, 1), xor(300, 2)
    lin = linear_probe(train, val, test)
    kw = dict(hidden=64, epochs=40, lr=1e-2, seed=0, batch_size=32)
    before = torch.get_rng_state()
    mlp = mlp_probe(train, val, test, **kw)
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched
    assert lin["accuracy"] < 0.65
    assert mlp["accuracy"] > 0.9 and mlp["val_accuracy"] > 0.9
    assert 1 <= mlp["best_epoch"] <= mlp["epochs_run"] <= 40
    assert mlp["n_classes"] == 2 and 0.9 < mlp["auc"] <= 1.0
    assert mlp_probe(train, val, test, **kw) == mlp  # deterministic given seed


def test_mlp_probe_patience_and_empty_val():
    train, val, test = xor(200, 0), xor(100, 1), xor(100, 2)
    res = mlp_probe(train, val, test, hidden=8, epochs=50, patience=3, seed=1)
    assert res["epochs_run"] <= 50 and res["epochs_run"] - res["best_epoch"] <= 3
    with pytest.raises(ValueError, match="val"):
        mlp_probe(train, (np.zeros((0, 2)), np.zeros(0, dtype=np.int64)), test)


# ---------------------------------------------------------------------------------------- spectrum / rank
def test_singular_values_match_numpy_svd_of_centred():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8)) * np.arange(1, 9) + 5.0
    s = singular_values(X)
    ref = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(s, np.sort(ref)[::-1], rtol=1e-10)
    assert np.all(np.diff(s) <= 0)
    sn = singular_values(X, normalise=True)
    assert sn[0] == pytest.approx(1.0) and np.allclose(sn, s / s[0])


def test_effective_rank():
    rng = np.random.default_rng(0)
    iso = singular_values(rng.normal(size=(5000, 10)))
    assert effective_rank(iso) == pytest.approx(10.0, abs=0.1)
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    rank1 = singular_values(np.outer(rng.normal(size=100), rng.normal(size=6)))
    assert effective_rank(rank1) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(np.zeros(4)) == 0.0


# --------------------------------------------------------------------------------------- marker correlation
def test_marker_correlation_matches_corrcoef_loop():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65536, size=(30, 3, 4, 4), dtype=np.uint16)
    means = images.astype(np.float64).mean(axis=(2, 3))
    F = rng.normal(size=(30, 6))
    F[:, 1] = 2.0 * means[:, 0] + rng.normal(size=30) * 100  # some genuine correlation
    F[:, 4] = 3.7  # constant feature
    mean_abs, corr = marker_correlation(F, images)
    ref = np.zeros((6, 3))
    for d in range(6):
        for c in range(3):
            if d != 4:
                ref[d, c] = np.corrcoef(F[:, d], means[:, c])[0, 1]
    assert corr.shape == (6, 3) and np.all(np.isfinite(corr))
    np.testing.assert_allclose(corr, ref, atol=1e-12)
    assert np.all(corr[4] == 0.0)
    assert mean_abs == pytest.approx(np.abs(ref).mean())


def test_marker_correlation_identity_and_constant_channel():
    rng = np.random.default_rng(1)
    images = rng.random(size=(20, 4, 5, 5)).astype(np.float32)
    images[:, 3] = 0.25  # constant channel -> column of zeros, no NaN
    F = images.mean(axis=(2, 3))
    _, corr = marker_correlation(F, images)
    np.testing.assert_allclose(np.abs(np.diag(corr))[:3], 1.0, atol=1e-6)
    assert np.all(corr[:, 3] == 0.0) and np.all(np.isfinite(corr))
    with pytest.raises(ValueError, match="features"):
        marker_correlation(F[:5], images)


def test_probe_ignores_unlabelled_rows(tmp_path):
    """Rows with label -1 (unlabelled, e.g. a folder dataset with a partial labels CSV) are neither a class the
    probe learns nor scored."""
    from splicer.run import probe_features

    rng = np.random.default_rng(0)
    n = 300
    labels = np.repeat([0, 1, -1], n // 3)
    features = rng.normal(size=(n, 4)) + 4.0 * labels[:, None]
    split = np.tile(np.array([0, 0, 1, 2], np.uint8), n // 4 + 1)[:n]
    path = tmp_path / "f.npz"
    np.savez(path, features=features, labels=labels, split=split, split_names=np.array(["train", "val", "test"]))
    result = probe_features(path, tmp_path / "p.json")
    assert result["n_classes"] == 2
    assert result["n_test"] == int(((split == 2) & (labels >= 0)).sum())
    assert result["accuracy"] > 0.95


# ------------------------------------------------------------------------------------------------ torch probe
@pytest.fixture(scope="module")
def demo_features(tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Demo histology tiles (4 classes) and the demo's MNIST-CIFAR rNONE set (2 classes), embedded by a small
    random ResNet: real demo data, features a linear probe neither aces nor fails."""
    from splicer.data.demo import make_demo
    from splicer.data.format import load_dataset
    from splicer.encoders import build_encoder

    out = tmp_path_factory.mktemp("probe-demo")
    sizes = {"n_pretrain": 1, "n_train": 1000, "n_val": 400, "n_test": 1000}
    sets = {
        "histology": make_demo("histology", out / "h", size=16, **sizes)["eval"],
        "mnist_cifar": make_demo("mnist_cifar", out / "m", **sizes)["rNONE"],
    }
    result = {}
    for name, path in sets.items():
        data = load_dataset(path)
        torch.manual_seed(0)
        enc = build_encoder("resnet", data.images.shape[1], max(data.images.shape[2:]), base_width=8, blocks=[1, 1])
        feats = embed(enc, data.images, batch_size=256)
        split = np.asarray(data.split)
        labels = np.asarray(data.labels)
        result[name] = tuple((feats[split == i], labels[split == i]) for i in range(3))
    return result


@pytest.mark.parametrize("name", ["histology", "mnist_cifar"])
def test_torch_probe_agrees_with_scikit_learn_on_demo_features(demo_features, name):
    splits = demo_features[name]
    ref = linear_probe(*splits, solver="sklearn")
    ours = linear_probe(*splits, solver="torch", device="cpu")
    assert (ref["solver"], ours["solver"]) == ("sklearn", "torch")
    assert abs(ours["accuracy"] - ref["accuracy"]) <= 0.005, (ours, ref)
    assert 0.3 < ref["accuracy"] < 1.0  # a probe that neither aces nor fails, so agreement means something
    assert ours["converged"] and ours.keys() == ref.keys()


def test_torch_logistic_regression_solves_scikit_learns_objective():
    """Same minimiser as LogisticRegression(C): coefficients, intercepts and probabilities agree."""
    from splicer.evaluate import torch_logistic_regression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.5 * rng.normal(size=300) > 0).astype(int) + (X[:, 2] > 0.8)
    for C in (0.01, 1.0, 100.0):
        clf = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(X, y)
        W, b, iterations, converged = torch_logistic_regression(
            torch.from_numpy(X), torch.from_numpy(y), 3, C, max_iter=5000, tol=1e-6
        )
        assert converged and iterations > 0
        # scikit-learn's multinomial coefficients are centred over classes (the softmax is shift-invariant)
        np.testing.assert_allclose(W.T.numpy() - W.T.numpy().mean(0), clf.coef_ - clf.coef_.mean(0), atol=1e-4)
        proba = torch.softmax(torch.from_numpy(X) @ W + b, 1).numpy()
        np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-5)


def test_probe_solver_rule_and_labels_kept():
    from splicer.evaluate import TORCH_MIN_VALUES, probe_solver

    assert probe_solver(100, 512) == "sklearn"
    assert probe_solver(TORCH_MIN_VALUES // 512 + 1, 512) == "torch"
    assert probe_solver(100, 512, device="cuda") == "torch"
    assert probe_solver(10**6, 512, solver="sklearn") == "sklearn"
    with pytest.raises(ValueError, match="probe solver"):
        probe_solver(10, 10, solver="gpu")
    rng = np.random.default_rng(1)  # labels that are not 0..K-1: the torch solver maps them and back
    X = rng.normal(size=(90, 4))
    y = np.array([3, 7, 9])[np.arange(90) % 3]
    X[:, 0] += y / 3.0
    part = rng.permutation(90) % 3
    splits = [(X[part == i], y[part == i]) for i in range(3)]
    a, b = linear_probe(*splits, solver="torch"), linear_probe(*splits, solver="sklearn")
    assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.05) and a["n_classes"] == 3
