"""High-level steps behind the command line and the Snakemake rules: pretrain, embed, probe, spectrum, correlate.

Each step reads and writes files only, so a rule (or a user) can run one step by hand::

    pretrain(run_config, dataset_dir, run_dir)        -> run_dir/{encoder.pt, checkpoint.pt, metrics.*}
    embed_dataset(encoder.pt, dataset_dir, out.npz)  -> features, labels, split codes and names
    probe_features(features.npz, out.json)           -> linear (or MLP) probe accuracy / AUC
    spectrum_features(features.npz, out.csv)         -> ranked singular values of the representation
    correlate_features(features.npz, dataset_dir, out.json) -> mean |corr| with per-channel intensities
    evaluate_run(encoder.pt, {name: dataset_dir}, out.json) -> all of the above for one run, in one process
    supervised(run_config, dataset_dir, out_dir)     -> supervised ceiling with the same encoder and trainer
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.fileio import write_atomic, write_json

__all__ = [
    "build_model",
    "correlate_features",
    "embed_dataset",
    "evaluate_run",
    "load_features",
    "pretrain",
    "probe_features",
    "spectrum_features",
    "supervised",
]


def _fuse(setting: bool | str, device: str) -> bool:
    """``auto``: fuse identical component encoders on CUDA only (on CPU, oneDNN's grouped convolutions are
    ~1.6x slower than a loop over the separate encoders; benchmarks/speed.py)."""
    if setting != "auto":
        return bool(setting)
    from splicer.train import resolve_device

    return resolve_device(device).type == "cuda"


def build_model(cfg: Mapping, channel_names: list[str], mask_names: list[str], input_shape: tuple[int, int, int]):
    """Build the :class:`~splicer.methods.SSLModel` a validated run config describes, for one dataset's shape."""
    from splicer.augment import AugmentConfig, BatchAugment
    from splicer.components import build_components, expand_panels
    from splicer.methods import SSLModel, build_pairing

    method, model = cfg["method"], cfg["model"]
    specs, inputs = expand_panels(cfg["components"], list(method["inputs"]), channel_names)  # panels: per channel
    pairing = build_pairing(method["name"], inputs, method["loss"], int(model["embed_dim"]), **method["options"])
    components = build_components(specs, channel_names, mask_names)
    return SSLModel(
        pairing,
        components,
        input_shape,
        dict(model["encoder"]),
        list(model["projector_hidden"]),
        augment=BatchAugment(AugmentConfig.from_dict(cfg["augment"])),
        loss_options=cfg["loss_options"],
        fuse=_fuse(model["fuse"], cfg["train"].get("device", "auto")),
    )


def data_fingerprint(dataset_dir: str | Path) -> dict[str, list[int]]:
    """Size and modification time of each file of a dataset (links resolved): changes when it is rebuilt."""
    out = {}
    for path in sorted(Path(dataset_dir).iterdir()):
        if path.suffix in (".npy", ".json"):
            st = path.resolve().stat()
            out[path.name] = [st.st_size, st.st_mtime_ns]
    return out


def _set_aside_stale_checkpoint(out: Path, state: dict) -> None:
    """Resume only the same run on the same data: a checkpoint from another run config or from data that has
    since been rebuilt (new masks, say) is renamed ``checkpoint.stale-<time>.pt`` (kept, not deleted)."""
    import logging
    import time

    ckpt, state_file = out / "checkpoint.pt", out / "run_state.json"
    if not ckpt.exists():
        return
    try:
        previous = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError):
        previous = None
    if previous != json.loads(json.dumps(state)):
        stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
        while (stale := out / f"checkpoint.stale-{stamp}{f'-{n}' if n else ''}.pt").exists():
            n += 1
        os.replace(ckpt, stale)
        logging.getLogger(__name__).warning(
            "%s: the run config or the data changed since this checkpoint; moved it to %s and starting afresh",
            ckpt,
            stale.name,
        )


def pretrain(cfg: Mapping, dataset_dir: str | Path, out_dir: str | Path, split: str | None = None) -> dict:
    """Pretrain on a dataset (optionally one split of it); resumes from ``out_dir/checkpoint.pt`` if present
    and it was written by the same run config on the same data (else it is set aside and training restarts)."""
    import torch

    from splicer.data.format import load_dataset
    from splicer.train import TrainConfig, train

    data = load_dataset(dataset_dir)
    if split is not None:
        data = data.select(split)
    train_cfg = TrainConfig.from_dict(cfg["train"])
    torch.manual_seed(train_cfg.seed)
    model = build_model(cfg, data.channel_names, data.mask_names, tuple(data.images.shape[1:]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {"run_config": cfg, "split": split, "data": data_fingerprint(dataset_dir)}
    _set_aside_stale_checkpoint(out, state)
    write_json(out / "run_state.json", state)
    write_atomic(out / "run_config.json", lambda p: p.write_text(json.dumps(cfg, indent=2) + "\n"))
    return train(model, np.asarray(data.images), train_cfg, out, masks=data.masks)


def embed_dataset(
    encoder_path: str | Path,
    dataset_dir: str | Path,
    out_path: str | Path,
    device: str = "cpu",
    batch_size: int = 256,
    format: str = "npz",
) -> Path:
    """Embed every image of a dataset with a frozen encoder; saves features, labels, split and channel means
    (``npz``), or, for a dataset of multiplex cells, one AnnData file per sample into the folder ``out_path``
    (``h5ad``, :func:`splicer.export.export_h5ad`; returns its manifest)."""
    if format == "h5ad":
        from splicer.export import export_h5ad

        return export_h5ad(encoder_path, dataset_dir, out_path, device=device, batch_size=batch_size)
    if format != "npz":
        raise ValueError(f"unknown embedding format {format!r}; choose 'npz' or 'h5ad'")
    from splicer.data.format import load_dataset
    from splicer.encoders import load_encoder
    from splicer.evaluate import embed

    data = load_dataset(dataset_dir)
    encoder = load_encoder(encoder_path)
    feats = embed(encoder, data.images, batch_size=batch_size, device=device)
    out = Path(out_path)
    if out.suffix != ".npz":
        raise ValueError(f"features file {out} must end in .npz")
    arrays = {
        "features": feats,
        "labels": np.asarray(data.labels),
        "split": np.asarray(data.split),
        "split_names": np.array(data.split_names),
        "class_names": np.array(data.class_names),
    }

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)

    write_atomic(out, write)
    return out


def load_features(path: str | Path) -> dict[str, np.ndarray]:
    """Read a features file written by :func:`embed_dataset`, checking its keys."""
    with np.load(path, allow_pickle=False) as f:
        missing = {"features", "labels", "split", "split_names"} - set(f.files)
        if missing:
            raise ValueError(f"features file {path} lacks key(s) {sorted(missing)}")
        return {k: f[k] for k in f.files}


def _split(f: Mapping[str, np.ndarray], name: str, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    names = list(f["split_names"])
    if name not in names:
        raise ValueError(f"features file {path} has no split {name!r}; it has {names}")
    rows = f["split"] == names.index(name)
    return f["features"][rows], f["labels"][rows]


def _labelled(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Only the rows with a label (``-1`` = unlabelled is not a class a probe may learn or be scored on)."""
    features, labels = split
    keep = labels >= 0
    return features[keep], labels[keep]


def probe_features(
    features_path: str | Path, out_path: str | Path, head: str = "linear", seed: int = 0, **options: Any
) -> dict:
    """Linear (logistic regression) or MLP probe on the train split, model selection on val, scored on test."""
    from splicer.evaluate import linear_probe, mlp_probe

    f = load_features(features_path)
    splits = [_labelled(_split(f, s, features_path)) for s in ("train", "val", "test")]
    if head == "linear":
        result = linear_probe(*splits, **options)
    elif head == "mlp":
        result = mlp_probe(*splits, seed=seed, **options)
    else:
        raise ValueError(f"unknown probe head {head!r}; choose 'linear' or 'mlp'")
    result = {"head": head, **result}
    write_json(out_path, result)
    return result


def spectrum_features(features_path: str | Path, out_path: str | Path, split: str = "test") -> np.ndarray:
    """Ranked (normalised) singular values of the representation of one split, as CSV ``rank,singular_value``."""
    from splicer.evaluate import singular_values

    f = load_features(features_path)
    X, _ = _split(f, split, features_path)
    s = singular_values(X, normalise=True)
    rows = "rank,singular_value\n" + "".join(f"{i + 1},{v:.8g}\n" for i, v in enumerate(s))
    write_atomic(Path(out_path), lambda p: p.write_text(rows))
    return s


def correlate_features(
    features_path: str | Path, dataset_dir: str | Path, out_path: str | Path, split: str = "test"
) -> dict:
    """Mean absolute correlation between representation elements and per-channel mean intensities (Fig. 3c)."""
    from splicer.data.format import load_dataset
    from splicer.evaluate import marker_correlation

    f = load_features(features_path)
    data = load_dataset(dataset_dir)
    if len(data.labels) != len(f["features"]):
        raise ValueError(f"{features_path} has {len(f['features'])} rows but dataset {dataset_dir} has {data.n}")
    rows = f["split"] == list(f["split_names"]).index(split)
    mean_abs, matrix = marker_correlation(f["features"][rows], np.asarray(data.images[rows]))
    per_channel = np.abs(matrix).mean(axis=0)
    result = {
        "mean_abs_correlation": float(mean_abs),
        "per_channel": dict(zip(data.channel_names, map(float, per_channel), strict=True)),
    }
    write_json(out_path, result)
    return result


class _BestOnVal:
    """Trainer hook: validation accuracy after every epoch; keeps the best epoch's weights (checkpointed)."""

    def __init__(self, model: Any, val: Any, device: Any) -> None:
        self.model, self.val, self.device = model, val, device
        self.best: dict[str, Any] = {"accuracy": -1.0, "epoch": 0, "state": None}

    def on_epoch_end(self, epoch: int, step: int) -> None:
        accuracy = _accuracy(self.model, self.val, self.device)
        if accuracy > self.best["accuracy"]:
            import copy

            self.best = {"accuracy": accuracy, "epoch": epoch, "state": copy.deepcopy(self.model.state_dict())}

    def state_dict(self) -> dict[str, Any]:
        return self.best

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state


def _accuracy(model: Any, subset: Any, device: Any, batch: int = 512) -> float:
    """Top-1 accuracy of ``model`` on a dataset split (eval mode, restored after)."""
    import torch

    from splicer.data.format import to_float

    model.eval()
    with torch.inference_mode():
        correct = 0
        for i in range(0, subset.n, batch):
            x = to_float(np.asarray(subset.images[i : i + batch])).to(device)
            pred = model(x).argmax(1).cpu()
            correct += int((pred == torch.as_tensor(np.asarray(subset.labels[i : i + batch]))).sum())
    model.train()
    return correct / max(subset.n, 1)


def supervised(cfg: Mapping, dataset_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict:
    """Supervised ceiling: the run config's encoder + a linear head trained with cross-entropy on ``train`` by the
    same trainer as pretraining (augmentation, optimiser, schedule, checkpoints), the epoch chosen on ``val``,
    scored on ``test``. Writes the trainer's files and ``result.json`` into ``out_dir``."""
    import torch

    from splicer.augment import AugmentConfig, BatchAugment
    from splicer.data.format import load_dataset
    from splicer.encoders import build_encoder
    from splicer.methods import SupervisedModel
    from splicer.train import TrainConfig, resolve_device, train

    data = load_dataset(dataset_dir)
    train_set, val_set, test_set = (data.select(s) for s in ("train", "val", "test"))
    tcfg = TrainConfig.from_dict({**cfg["train"], "seed": seed})
    tcfg.batch_size = min(tcfg.batch_size, train_set.n)
    device = resolve_device(tcfg.device)
    torch.manual_seed(seed)
    c, h, w = train_set.images.shape[1:]
    encoder = build_encoder(in_channels=c, image_size=max(h, w), **cfg["model"]["encoder"])
    model = SupervisedModel(encoder, len(data.class_names), BatchAugment(AugmentConfig.from_dict(cfg["augment"])))
    best = _BestOnVal(model, val_set, device)
    out = Path(out_dir)
    train(model, np.asarray(train_set.images), tcfg, out, hooks=best, labels=np.asarray(train_set.labels))
    model.load_state_dict(best.best["state"])
    result = {
        "accuracy": _accuracy(model, test_set, device),
        "val_accuracy": best.best["accuracy"],
        "best_epoch": best.best["epoch"],
        "epochs": tcfg.epochs,
        "n_train": train_set.n,
        "n_test": test_set.n,
    }
    write_json(out / "result.json", result)
    return result


def evaluate_run(
    encoder_path: str | Path,
    evaluations: Mapping[str, str | Path],
    out_path: str | Path,
    spectrum: list[str] | tuple[str, ...] = (),
    correlate: list[str] | tuple[str, ...] = (),
    head: str = "linear",
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, dict]:
    """All evaluations of one run in one process: embed each dataset once, then probe / spectrum / correlate.

    Writes one JSON ``{"probes": {name: result}, "spectra": {name: [singular values]}, "correlations":
    {name: result}}``; features go to a temporary folder and are dropped.
    """
    import tempfile

    from splicer.train import resolve_device

    device = str(resolve_device(device))
    unknown = (set(spectrum) | set(correlate)) - set(evaluations)
    if unknown:
        raise ValueError(f"spectrum/correlate name(s) {sorted(unknown)} are not evaluations {sorted(evaluations)}")
    results: dict[str, dict] = {"probes": {}, "spectra": {}, "correlations": {}}
    with tempfile.TemporaryDirectory(prefix="splicer-eval-") as tmp:
        for name, data in evaluations.items():
            feats = embed_dataset(encoder_path, data, Path(tmp) / f"{name}.npz", device=device)
            results["probes"][name] = probe_features(feats, Path(tmp) / f"{name}.json", head=head, seed=seed)
            if name in spectrum:
                values = spectrum_features(feats, Path(tmp) / f"{name}.csv")
                results["spectra"][name] = [float(v) for v in values]
            if name in correlate:
                results["correlations"][name] = correlate_features(feats, data, Path(tmp) / f"{name}-corr.json")
    write_json(out_path, results)
    return results
