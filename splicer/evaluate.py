"""Downstream evaluation of learned representations.

- :func:`embed` runs a frozen encoder over a uint8/uint16 image array.
- :func:`linear_probe` / :func:`mlp_probe` fit a classifier on train features, select hyper-parameters (C, or
  the early-stopping epoch) on val only, and report test metrics once; test labels are never used to choose.
  The linear probe's multinomial logistic regression is solved by scikit-learn (L-BFGS, float64, CPU) or by
  :func:`torch_logistic_regression` (the same objective, L-BFGS in torch on the run's device, float32, each C
  warm-started from the previous one); :func:`probe_solver` chooses (the rule and the measurements behind it:
  benchmarks/probe.py, README "Performance").
- :func:`singular_values` / :func:`effective_rank` describe the spectrum of a representation (paper Fig. 2b;
  RankMe).
- :func:`marker_correlation` is the mean absolute Pearson correlation between representation elements and each
  channel's per-image mean intensity (paper Fig. 3c).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from splicer.data.format import value_scale

__all__ = [
    "check_input",
    "effective_rank",
    "embed",
    "linear_probe",
    "marker_correlation",
    "mlp_probe",
    "probe_solver",
    "singular_values",
    "torch_logistic_regression",
]

Split = tuple[np.ndarray, np.ndarray]
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- embedding
def _to_float_on(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """Move a numpy batch to ``device`` in its compact dtype, then scale there (:func:`value_scale`), so the (4x
    larger) float tensor is only ever created on the device."""
    try:
        scale = value_scale(batch.dtype)
    except TypeError as err:
        raise ValueError(f"images: {err}") from None
    if not batch.flags.writeable:  # memory-mapped datasets are read-only; torch wants writable memory
        batch = np.array(batch)
    if batch.dtype == np.uint16:  # torch's uint16 support is partial: int32 holds 0..65535 exactly
        batch = batch.astype(np.int32)
    x = torch.from_numpy(batch.astype(np.float32, copy=False) if scale == 1.0 else batch).to(device)
    return x if scale == 1.0 else x.float().div_(scale)


def check_input(encoder: nn.Module, shape: Sequence[int]) -> None:
    """Images of ``shape`` (N, C, H, W) against the input an encoder records (``spec``: ``in_channels`` and
    ``image_size``, the largest side of its training images). Another channel count is a ValueError naming both;
    another size is allowed (the encoders pool globally) but logged as a warning, as features then describe
    the images at another scale."""
    spec = getattr(encoder, "spec", None) or {}
    channels, size = spec.get("in_channels"), spec.get("image_size")
    c, h, w = (int(v) for v in shape[1:4])
    if channels is not None and c != int(channels):
        raise ValueError(
            f"the encoder takes {channels}-channel images ({size} px when trained), but these images have {c} "
            f"channel(s) ({c}x{h}x{w}): evaluate it on data with the channels it was trained on"
        )
    if size is not None and max(h, w) != int(size):
        log.warning(
            "images of %dx%d px given to an encoder trained on images of %d px (largest side): features describe "
            "them at another scale",
            h,
            w,
            int(size),
        )


def embed(encoder: nn.Module, images: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Representations of ``images`` (N, C, H, W) uint8|uint16 (floats used as-is) -> float32 (N, D).

    Runs in eval mode under ``torch.inference_mode``; the encoder's train/eval mode and device are restored.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images: expected shape (N, C, H, W), got {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_input(encoder, images.shape)
    dev = torch.device(device)
    first = next(encoder.parameters(), None)
    orig_device = first.device if first is not None else None
    was_training = encoder.training
    encoder.eval()
    if orig_device is not None and orig_device != dev:
        encoder.to(dev)
    chunks: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                batch = np.ascontiguousarray(images[start : start + batch_size])
                out = encoder(_to_float_on(batch, dev))
                chunks.append(out.float().cpu().numpy())
    finally:
        encoder.train(was_training)
        if orig_device is not None and orig_device != dev:
            encoder.to(orig_device)
    if not chunks:
        return np.zeros((0, int(getattr(encoder, "out_dim", 0))), dtype=np.float32)
    return np.concatenate(chunks, axis=0).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------------ probes
def _check_split(name: str, split: Split, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    try:
        X, y = split
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (features, labels) pair") from None
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: expected features (N, D) and labels (N,), got {X.shape} and {y.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: split is empty (0 samples); the probe needs train, val and test samples")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"{name}: feature dim {X.shape[1]} != train feature dim {dim}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name}: features contain NaN or inf")
    return X.astype(np.float64, copy=False), y


def _prepare(train: Split, val: Split, test: Split):
    Xtr, ytr = _check_split("train", train)
    Xva, yva = _check_split("val", val, Xtr.shape[1])
    Xte, yte = _check_split("test", test, Xtr.shape[1])
    classes = np.unique(ytr)
    if classes.size < 2:
        raise ValueError(f"train: labels must contain at least 2 classes, got {classes.tolist()}")
    scaler = StandardScaler().fit(Xtr)  # train statistics only
    return (scaler.transform(Xtr), ytr), (scaler.transform(Xva), yva), (scaler.transform(Xte), yte), classes


def _test_metrics(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """accuracy, balanced accuracy and AUC (NaN when undefined) from class probabilities (cols = classes)."""
    pred = classes[np.argmax(proba, axis=1)]
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected on small tests
        warnings.simplefilter("ignore", UserWarning)
        bal = float(balanced_accuracy_score(y, pred))
    auc = math.nan
    present = np.unique(y)
    if np.isin(present, classes).all() and present.size == classes.size:
        if classes.size == 2:
            auc = float(roc_auc_score(y == classes[1], proba[:, 1]))
        else:
            proba = proba / proba.sum(axis=1, keepdims=True)  # guard against float32 rounding
            auc = float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))
    return {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": bal, "auc": auc}


def _sizes(ytr: np.ndarray, yva: np.ndarray, yte: np.ndarray, classes: np.ndarray) -> dict[str, int]:
    return {"n_train": len(ytr), "n_val": len(yva), "n_test": len(yte), "n_classes": int(classes.size)}


SOLVERS = ("auto", "sklearn", "torch")
# probe_solver's threshold: from this many train feature values (n x d) on, the torch solver is used on the CPU
# too. Measured with benchmarks/probe.py (d = 512, 9 classes, six C values) on this project's 2-core CPU: torch
# took 1.07x scikit-learn's time at n = 2 000 (1.0e6 values), 1/2.1 at 5 000 (2.6e6), 1/5.9 at 20 000 and
# 1/10.5 at 100 000 (86 s against 907 s); both gave the same test accuracy at every size (README, Performance).
TORCH_MIN_VALUES = 2_000_000


def probe_solver(n: int, d: int, device: str | torch.device = "cpu", solver: str = "auto") -> str:
    """``"torch"`` or ``"sklearn"`` for a linear probe on ``n`` x ``d`` train features.

    ``auto``: torch on a GPU always; on the CPU torch from :data:`TORCH_MIN_VALUES` feature values up (measured
    faster there), scikit-learn below (as fast at that size, and the float64 reference).
    """
    if solver not in SOLVERS:
        raise ValueError(f"probe solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver != "auto":
        return solver
    if torch.device(device).type != "cpu":
        return "torch"
    return "torch" if n * d >= TORCH_MIN_VALUES else "sklearn"


def torch_logistic_regression(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    C: float,
    max_iter: int = 2000,
    tol: float = 1e-4,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
    """Multinomial logistic regression with scikit-learn's objective, by full-batch L-BFGS in torch.

    Minimises ``mean_i CE(softmax(X W + b)_i, y_i) + ||W||^2 / (2 C n)`` (the intercept is not penalised), which
    is scikit-learn's ``LogisticRegression(C=C)`` objective divided by ``C n``; ``y`` holds class indices in
    ``[0, n_classes)``. Stops when the largest gradient entry is below ``tol`` (scikit-learn's L-BFGS criterion on
    the same scaled objective) or after ``max_iter`` iterations. ``init``: a starting (W, b), e.g. the solution
    at a neighbouring C. Returns (W (d, K), b (K,), iterations, converged).
    """
    n, d = X.shape
    W = torch.zeros(d, n_classes, dtype=X.dtype, device=X.device) if init is None else init[0].clone()
    b = torch.zeros(n_classes, dtype=X.dtype, device=X.device) if init is None else init[1].clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    penalty = 1.0 / (2.0 * C * n)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.25),
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(torch.addmm(b, X, W), y) + penalty * W.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        closure()  # the gradient at the solution
    iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
    grad_max = max(float(W.grad.abs().max()), float(b.grad.abs().max()))
    return W.detach(), b.detach(), iterations, grad_max <= tol


def _torch_probe(
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xva: np.ndarray,
    yva: np.ndarray,
    Xte: np.ndarray,
    classes: np.ndarray,
    Cs: Sequence[float],
    max_iter: int,
    device: str | torch.device,
) -> tuple[float, float, np.ndarray, bool]:
    """The C search of :func:`linear_probe` with :func:`torch_logistic_regression` (ascending C, warm starts);
    returns best C, its val accuracy, its test probabilities and whether it converged."""
    dev = torch.device(device)

    def to_t(X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(dev)

    Xtr_t, Xva_t, Xte_t = to_t(Xtr), to_t(Xva), to_t(Xte)
    ytr_t = torch.from_numpy(np.searchsorted(classes, ytr)).to(dev)
    best: tuple[float, float, tuple[torch.Tensor, torch.Tensor], bool] | None = None
    init = None
    for C in Cs:  # ascending, strict ">" below -> ties keep the smaller C
        W, b, _, converged = torch_logistic_regression(Xtr_t, ytr_t, classes.size, C, max_iter, init=init)
        init = (W, b)
        pred = classes[torch.addmm(b, Xva_t, W).argmax(1).cpu().numpy()]
        val_acc = float(np.mean(pred == yva))
        if best is None or val_acc > best[1]:
            best = (C, val_acc, (W, b), converged)
    assert best is not None
    C, val_acc, (W, b), converged = best
    proba = torch.softmax(torch.addmm(b, Xte_t, W).double(), dim=1).cpu().numpy()
    return C, val_acc, proba, converged


def linear_probe(
    train: Split,
    val: Split,
    test: Split,
    Cs: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
    max_iter: int = 2000,
    solver: str = "auto",
    device: str | torch.device = "cpu",
) -> dict:
    """Multinomial logistic-regression probe on train-standardised features; C chosen by val accuracy.

    Each C is fit on train only and scored on val; the best (ties -> smaller C) is evaluated once on test.
    ``solver`` (``auto`` | ``sklearn`` | ``torch``; :func:`probe_solver`) and ``device`` (for torch) choose how
    the logistic regression is solved; both minimise the same objective. Returns accuracy, balanced_accuracy,
    auc (binary: positive-class probability; multiclass: macro one-vs-rest; NaN when a train class is absent
    from test), best_C, val_accuracy, converged, solver, n_train, n_val, n_test, n_classes. Labels may be any
    ints; the classes are those seen in train.
    """
    Cs = sorted(float(c) for c in Cs)
    if not Cs or any(not (c > 0 and math.isfinite(c)) for c in Cs):
        raise ValueError(f"Cs must be a non-empty sequence of positive finite floats, got {Cs}")
    (Xtr, ytr), (Xva, yva), (Xte, yte), classes = _prepare(train, val, test)
    chosen = probe_solver(*Xtr.shape, device=device, solver=solver)
    if chosen == "torch":
        C, val_acc, proba, converged = _torch_probe(Xtr, ytr, Xva, yva, Xte, classes, Cs, max_iter, device)
        return {
            **_test_metrics(yte, proba, classes),
            "best_C": C,
            "val_accuracy": val_acc,
            "converged": converged,
            "solver": "torch",
            **_sizes(ytr, yva, yte, classes),
        }
    best: tuple[float, float, LogisticRegression] | None = None
    for C in Cs:  # ascending, strict ">" below -> ties keep the smaller C
        clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xtr, ytr)
        val_acc = float(np.mean(clf.predict(Xva) == yva))
        if best is None or val_acc > best[1]:
            best = (C, val_acc, clf)
    assert best is not None
    C, val_acc, clf = best
    return {
        **_test_metrics(yte, clf.predict_proba(Xte), clf.classes_),
        "best_C": C,
        "val_accuracy": val_acc,
        "converged": bool(np.all(clf.n_iter_ < max_iter)),
        "solver": "sklearn",
        **_sizes(ytr, yva, yte, classes),
    }


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(X).argmax(dim=1) == y).float().mean())


def mlp_probe(
    train: Split,
    val: Split,
    test: Split,
    hidden: int = 512,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    *,
    batch_size: int = 256,
    dropout: float = 0.2,
    patience: int | None = None,
) -> dict:
    """Non-linear probe: Linear-ReLU-Dropout-Linear trained with Adam on train-standardised features.

    The weights of the epoch with the best val accuracy (ties -> earliest) are evaluated once on test;
    ``patience`` (epochs without val improvement) optionally stops early. Deterministic given ``seed`` (global
    RNG state is left untouched). Returns the keys of :func:`linear_probe` with best_epoch (1-based) and
    epochs_run instead of best_C/converged.
    """
    if epochs < 1 or hidden < 1 or batch_size < 1:
        raise ValueError(f"epochs, hidden and batch_size must be >= 1, got {epochs}, {hidden}, {batch_size}")
    (Xtr, ytr), (Xva, yva), (Xte, yte), classes = _prepare(train, val, test)
    dev = torch.device(device)

    def to_idx(y: np.ndarray) -> torch.Tensor:  # labels unseen in train -> -1 (always counted wrong)
        pos = np.clip(np.searchsorted(classes, y), 0, classes.size - 1)
        return torch.from_numpy(np.where(classes[pos] == y, pos, -1)).to(dev)

    def to_t(X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(X.astype(np.float32)).to(dev)

    Xtr_t, Xva_t, Xte_t = to_t(Xtr), to_t(Xva), to_t(Xte)
    ytr_t, yva_t = to_idx(ytr), to_idx(yva)
    n = Xtr_t.shape[0]
    cuda_idx = (dev.index if dev.index is not None else torch.cuda.current_device()) if dev.type == "cuda" else None
    with torch.random.fork_rng(devices=[] if cuda_idx is None else [cuda_idx]):  # global RNG left untouched
        torch.random.default_generator.manual_seed(seed)  # init + dropout draw from the forked global RNG
        if cuda_idx is not None:
            torch.cuda.default_generators[cuda_idx].manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(Xtr.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes.size)
        ).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        order_gen = torch.Generator().manual_seed(seed)
        best_acc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
        epoch = 0
        for epoch in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=order_gen).to(dev)
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(Xtr_t[idx]), ytr_t[idx]).backward()
                opt.step()
            acc = _accuracy(model, Xva_t, yva_t)
            if acc > best_acc:
                best_acc, best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())
            elif patience is not None and epoch - best_epoch >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    with torch.inference_mode():
        proba = torch.softmax(model(Xte_t).double(), dim=1).cpu().numpy()
    return {
        **_test_metrics(yte, proba, classes),
        "best_epoch": best_epoch,
        "val_accuracy": best_acc,
        "epochs_run": epoch,
        **_sizes(ytr, yva, yte, classes),
    }


# ------------------------------------------------------------------------------------- representation analysis
def singular_values(X: np.ndarray, normalise: bool = False) -> np.ndarray:
    """Descending singular values of the column-centred (N, D) matrix ``X`` (optionally divided by the largest)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X: expected a non-empty (N, D) matrix, got shape {X.shape}")
    s = np.linalg.svd(X - X.mean(axis=0, keepdims=True), compute_uv=False)
    s = np.sort(s)[::-1]
    if normalise and s.size and s[0] > 0:
        s = s / s[0]
    return s


def effective_rank(s: np.ndarray) -> float:
    """RankMe effective rank exp(H(p)), p = s / sum(s), of singular values ``s``; 0.0 when all are zero."""
    s = np.abs(np.asarray(s, dtype=np.float64).ravel())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def marker_correlation(features: np.ndarray, images: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean |Pearson r| between each feature (N, D) and each channel's per-image mean intensity of (N, C, H, W).

    Returns (mean over all D*C entries, the (D, C) correlation matrix). Constant features or channels give 0.
    Pearson r is scale-invariant, so uint images need no conversion.
    """
    F, images = np.asarray(features, dtype=np.float64), np.asarray(images)
    if F.ndim != 2 or images.ndim != 4 or F.shape[0] != images.shape[0]:
        raise ValueError(f"features (N, D) and images (N, C, H, W) expected, got {F.shape} and {images.shape}")
    if F.shape[0] < 2:
        raise ValueError(f"features: need at least 2 samples for a correlation, got {F.shape[0]}")
    M = np.asarray(images).mean(axis=(2, 3), dtype=np.float64)  # (N, C)

    def centre(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Ac = A - A.mean(axis=0, keepdims=True)
        norm = np.sqrt(np.einsum("nd,nd->d", Ac, Ac))
        constant = np.ptp(A, axis=0) == 0  # exact test: rounding in the mean must not fake a variance
        return Ac, np.where(constant, 0.0, norm)

    Fc, fn = centre(F)
    Mc, mn = centre(M)
    denom = np.outer(fn, mn)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(denom > 0, (Fc.T @ Mc) / denom, 0.0)
    corr = np.clip(corr, -1.0, 1.0)
    return float(np.abs(corr).mean()), corr
