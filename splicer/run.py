"""High-level steps behind the command line and the Snakemake rules: pretrain, embed, probe, spectrum, correlate.

Each step reads and writes files only, so a rule (or a user) can run one step by hand::

    pretrain(run_config, dataset_dir, run_dir)        -> run_dir/{encoder.pt, checkpoint.pt, metrics.*}
    embed_dataset(encoder.pt, dataset_dir, out.npz)  -> features, labels, split codes and names
    probe_features(features.npz, out.json)           -> linear (or MLP) probe accuracy / AUC
    spectrum_features(features.npz, out.csv)         -> ranked singular values of the representation
    correlate_features(features.npz, dataset_dir, out.json) -> mean |corr| with per-channel intensities
    evaluate_run(encoder.pt, {name: dataset_dir}, out.json) -> all of the above for one run, in one process
    supervised(run_config, dataset_dir, out_dir)     -> supervised ceiling with the same encoder and trainer

``pretrain`` and ``supervised`` hold an exclusive lock on their run directory (:func:`run_lock`) while they
write to it: a second process on the same directory fails at once with :class:`RunLocked`, naming the holder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splicer.fileio import write_atomic, write_json

log = logging.getLogger(__name__)

__all__ = [
    "LOCK_FILE",
    "RunLocked",
    "build_model",
    "correlate_features",
    "embed_dataset",
    "evaluate_run",
    "load_features",
    "pretrain",
    "probe_features",
    "run_lock",
    "spectrum_features",
    "supervised",
]

LOCK_FILE = ".lock"
"""The lock file of a run directory (it stays; the lock is on it, not its existence)."""
_HELD: set[str] = set()  # run directories this process holds (POSIX locks do not exclude their own process)


class RunLocked(RuntimeError):
    """Another process is writing to the run directory (it holds the directory's lock)."""


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "a process whose details were not recorded"
    job = f", SLURM job {info['slurm_job']}" if info.get("slurm_job") else ""
    since = f" since {info.get('since')}" if info.get("since") else ""
    return f"pid {info.get('pid')} on host {info.get('host')}{job}, running `{info.get('command')}`{since}"


@contextlib.contextmanager
def run_lock(out_dir: str | Path, command: str = "splicer") -> Iterator[None]:
    """Hold an exclusive lock on run directory ``out_dir`` for the block; :class:`RunLocked` if another process
    (or this one) holds it.

    The lock is a POSIX record lock (``fcntl.lockf``) on ``out_dir/.lock``, the kind of lock NFS (v3 through its
    lock manager, v4 natively) and Lustre (mounted with ``-o flock``) share between the nodes of a cluster; the
    kernel releases it when the process ends, however it ends, so a killed job leaves no stale lock (except on
    NFS when a client node dies, until the server's lease or lock recovery expires it). Where the file system
    refuses locks (Lustre mounted ``noflock``, some FUSE file systems) a warning is logged and the run goes on
    unprotected. The holder's pid, host, SLURM job and start time are written into the file for the message.
    """
    import fcntl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    key = str(path.resolve())
    if key in _HELD:
        raise RunLocked(f"run directory {out} is already in use by this process")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                log.warning(
                    "cannot lock %s (%s): this file system does not support locks; nothing stops a second process "
                    "from writing to the same run directory",
                    path,
                    err,
                )
            else:
                raise RunLocked(
                    f"run directory {out} is in use by {_holder(fd)} (lock {path}). Two processes must not train "
                    "into one directory: wait for it to finish or stop it, or give this run another --out"
                ) from None
        else:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "slurm_job": os.environ.get("SLURM_JOB_ID"),
                "command": command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(fd)  # on a shared file system, so that another node's message can name this process
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # releases the lock


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


def _command_line() -> str:
    """This process's command line, for a lock holder's description (``splicer ...`` for the command line tool)."""
    program = Path(sys.argv[0]).name
    return " ".join(["splicer" if program in ("cli.py", "splicer") else program, *sys.argv[1:]])[:300]


def pretrain(cfg: Mapping, dataset_dir: str | Path, out_dir: str | Path, split: str | None = None) -> dict:
    """Pretrain on a dataset (optionally one split of it); resumes from ``out_dir/checkpoint.pt`` if present
    and it was written by the same run config on the same data (else it is set aside and training restarts).

    In a process of a multi-process launch (torchrun, srun: :mod:`splicer.distributed`) it joins the run's
    process group; rank 0 sets stale checkpoints aside and writes the run's files, the others wait for it."""
    from splicer.distributed import initialized

    with initialized(str(cfg["train"].get("device", "auto"))) as group:
        return _pretrain(cfg, dataset_dir, out_dir, split, group)


def _pretrain(cfg: Mapping, dataset_dir: str | Path, out_dir: str | Path, split: str | None, group: Any) -> dict:
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
    with contextlib.ExitStack() as stack:
        # rank 0 holds the run directory's lock for every process of the run; all ranks learn whether it could
        locked: RunLocked | None = None
        if group.writer:
            try:
                stack.enter_context(run_lock(out, _command_line()))
            except RunLocked as err:
                locked = err
        if not group.all_true(locked is None):
            raise locked or RunLocked(f"run directory {out} is in use: rank 0 could not lock it")
        state = {"run_config": cfg, "split": split, "data": data_fingerprint(dataset_dir)}
        if group.writer:
            _set_aside_stale_checkpoint(out, state)
            write_json(out / "run_state.json", state)
            write_atomic(out / "run_config.json", lambda p: p.write_text(json.dumps(cfg, indent=2) + "\n"))
        group.barrier()  # no rank reads a checkpoint that rank 0 is setting aside
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
    from splicer.evaluate import check_input, embed

    data = load_dataset(dataset_dir)
    encoder = _load_encoder(encoder_path)
    try:
        check_input(encoder, data.images.shape)
    except ValueError as err:
        raise ValueError(f"encoder {encoder_path} cannot embed dataset {dataset_dir}: {err}") from None
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


def _load_encoder(path: str | Path) -> Any:
    """:func:`~splicer.encoders.load_encoder`, with a damaged file reported as bad input naming it and the fix."""
    from splicer.encoders import load_encoder
    from splicer.train import load_error_reason

    try:
        return load_encoder(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        raise ValueError(
            f"encoder {path} cannot be read ({load_error_reason(err)}): it is truncated or corrupt. Rebuild it: "
            f"delete it and rerun its pretraining (in the pipeline: `snakemake --forcerun {path} <your target>`), "
            "which resumes from the run's checkpoint.pt if that is intact"
        ) from None


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


def _labelled(split: tuple[np.ndarray, np.ndarray], name: str, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Only the rows with a label (``-1`` = unlabelled is not a class a probe may learn or be scored on); a split
    with no labelled row is an error saying which."""
    features, labels = split
    keep = labels >= 0
    if not keep.any():
        what = f"holds {len(labels)} image(s), none labelled (label -1)" if len(labels) else "is empty (0 samples)"
        raise ValueError(
            f"features file {path}: split {name!r} {what}; the probe needs labelled train, val and test samples "
            "(for a folder dataset: labels for images of every split, e.g. a split column in the labels CSV)"
        )
    return features[keep], labels[keep]


def probe_features(
    features_path: str | Path,
    out_path: str | Path,
    head: str = "linear",
    seed: int = 0,
    device: str = "cpu",
    **options: Any,
) -> dict:
    """Linear (logistic regression) or MLP probe on the train split, model selection on val, scored on test.
    The linear probe's solver runs on ``device`` when it is torch's (:func:`splicer.evaluate.probe_solver`)."""
    from splicer.evaluate import linear_probe, mlp_probe

    f = load_features(features_path)
    splits = [_labelled(_split(f, s, features_path), s, features_path) for s in ("train", "val", "test")]
    if head == "linear":
        result = linear_probe(*splits, device=device, **options)
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
    with run_lock(out, _command_line()):
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
            results["probes"][name] = probe_features(
                feats, Path(tmp) / f"{name}.json", head=head, seed=seed, device=device
            )
            if name in spectrum:
                values = spectrum_features(feats, Path(tmp) / f"{name}.csv")
                results["spectra"][name] = [float(v) for v in values]
            if name in correlate:
                results["correlations"][name] = correlate_features(feats, data, Path(tmp) / f"{name}-corr.json")
    write_json(out_path, results)
    return results
