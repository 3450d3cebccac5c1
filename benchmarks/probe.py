"""Linear-probe time: scikit-learn's L-BFGS against splicer's torch L-BFGS, at the paper's scale and below.

The paper's evaluation probes (e.g. NCT-CRC-HE: 100 000 training images, 9 tissue classes) fit a multinomial
logistic regression on 512-d ResNet-18 features for six values of C and keep the one best on validation
(:func:`splicer.evaluate.linear_probe`). This times that whole C search with ``solver="sklearn"`` (float64, one
fit per C from zero) and ``solver="torch"`` (float32, each C warm-started from the previous one; on the CPU and,
when there is one, a GPU), on synthetic features of a given size: class means plus correlated noise with a
decaying spectrum (so that the problem is not trivially separable). It prints seconds, test accuracy, the C
chosen and the accuracy gap; ``--json`` writes the same. A benchmark, not a test: nothing is asserted.

Run: ``python benchmarks/probe.py [--sizes 5000 100000] [--dim 512] [--classes 9] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splicer.evaluate import TORCH_MIN_VALUES, linear_probe


def features(n: int, d: int, k: int, seed: int, separation: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic (d,) features of ``k`` classes: random class means (``separation`` per dimension) plus
    noise with a decaying spectrum (std 4 .. 1) in a random basis; a linear probe reaches ~0.7-0.9 on them."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * separation
    spectrum = 1.0 + 3.0 / np.sqrt(1.0 + np.arange(d))
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    y = rng.integers(0, k, n)
    X = means[y] + (rng.normal(size=(n, d)) * spectrum) @ basis.T
    return X.astype(np.float32), y


def time_probe(splits: Sequence[tuple[np.ndarray, np.ndarray]], solver: str, device: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = linear_probe(*splits, solver=solver, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "solver": solver,
        "device": device,
        "seconds": seconds,
        "accuracy": out["accuracy"],
        "best_C": out["best_C"],
        "converged": out["converged"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 100_000], help="training features (n)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--val", type=int, default=10_000, help="validation features (at most n / 2)")
    p.add_argument("--test", type=int, default=7_180, help="test features (CRC-VAL-HE-7K has 7 180)")
    p.add_argument("--threads", type=int, default=None, help="torch / BLAS threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    rows = []
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}; d={args.dim}, {args.classes} classes, 6 C values; "
        f"auto uses torch on the CPU from n*d >= {TORCH_MIN_VALUES}"
    )
    print(f"{'n train':>8} {'solver':>8} {'device':>7} {'seconds':>9} {'test acc':>9} {'best C':>7} {'conv':>5}")
    for n in args.sizes:
        n_val, n_test = min(args.val, n // 2), min(args.test, n // 2)
        X, y = features(n + n_val + n_test, args.dim, args.classes, args.seed)
        splits = [(X[:n], y[:n]), (X[n : n + n_val], y[n : n + n_val]), (X[n + n_val :], y[n + n_val :])]
        results = [time_probe(splits, "sklearn", "cpu")] + [time_probe(splits, "torch", dev) for dev in devices]
        for r in results:
            r["n_train"] = n
            print(
                f"{n:>8} {r['solver']:>8} {r['device']:>7} {r['seconds']:>9.2f} {r['accuracy']:>9.4f} "
                f"{r['best_C']:>7g} {r['converged']!s:>5}"
            )
        ref = results[0]
        for r in results[1:]:
            r["speedup"] = ref["seconds"] / r["seconds"]
            r["accuracy_gap_points"] = 100 * (r["accuracy"] - ref["accuracy"])
            print(
                f"{'':>8} torch/{r['device']}: {r['speedup']:.2f}x faster than scikit-learn, "
                f"accuracy {r['accuracy_gap_points']:+.2f} points"
            )
        rows += results
    out = {"dim": args.dim, "classes": args.classes, "threads": torch.get_num_threads(), "results": rows}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
