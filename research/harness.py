"""Research harness: build demo datasets once, pretrain + evaluate arms directly (1 torch thread per process).

Usage from a script:
    from harness import Exp, run_all
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = Path(os.environ.get("RESEARCH_WORK", "/tmp/gen-cells-research"))

from splicer.config import deep_merge, validate_run_config  # noqa: E402

DEFAULTS = yaml.safe_load((ROOT / "config/config.yaml").read_text())["run_defaults"]


def build(family: str, tag: str, params: dict, seed: int = 0, module_src: str | None = None) -> Path:
    """Generate family datasets into WORK/data/<tag>; returns folder."""
    from splicer.data.demo import make_demo

    out = WORK / "data" / tag
    stamp = out / "params.json"
    key = json.dumps({"family": family, "params": params, "seed": seed, "src": module_src}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == key:
        return out
    t = time.process_time()
    make_demo(family, out, seed=seed, **params)
    print(f"[build] {tag}: {time.process_time() - t:.2f}s CPU", flush=True)
    stamp.write_text(key)
    return out


def _job(args):
    import torch

    torch.set_num_threads(1)
    from splicer.run import evaluate_run, pretrain, supervised

    kind, cfg, data_dir, pre, evals, correlate, out, split = args
    out = Path(out)
    res_file = out / "result.json"
    if res_file.exists():
        return json.loads(res_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    if kind == "supervised":
        t = time.process_time()
        r = supervised(cfg, Path(data_dir) / pre, out / "sup.json", seed=cfg["train"]["seed"])
        res = {"acc": {pre: r["accuracy"]}, "t_pre": time.process_time() - t, "t_eval": 0.0}
    else:
        t = time.process_time()
        pretrain(cfg, Path(data_dir) / pre, out, split=split)
        t_pre = time.process_time() - t
        t = time.process_time()
        r = evaluate_run(out / "encoder.pt", {k: Path(data_dir) / v for k, v in evals.items()}, out / "eval.json",
                         correlate=correlate)
        t_eval = time.process_time() - t
        res = {"acc": {k: v["accuracy"] for k, v in r["probes"].items()},
               "corr": {k: v["mean_abs_correlation"] for k, v in r["correlations"].items()},
               "t_pre": t_pre, "t_eval": t_eval}
        for f in out.glob("*.pt"):
            if f.name != "encoder.pt":
                f.unlink()
    res_file.write_text(json.dumps(res))
    return res


def make_cfg(components, inputs, method, loss, seed, overrides=None, options=None):
    cfg = deep_merge(DEFAULTS, overrides or {})
    cfg["components"] = dict(components)
    cfg["method"] = {"name": method, "inputs": list(inputs), "loss": loss, "options": dict(options or {})}
    cfg = deep_merge(cfg, {"train": {"seed": seed, "device": "cpu", "progress": False}})
    return validate_run_config(cfg)


def run_all(tag, data_dir, arms, seeds=(0, 1, 2), workers=2):
    """arms: list of dicts name, kind ('ssl'|'supervised'), components, inputs, method, loss, overrides,
    options, pretrain, evals, correlate, split."""
    jobs, keys = [], []
    for arm in arms:
        for s in seeds:
            cfg = make_cfg(arm.get("components", {}), arm.get("inputs", []), arm.get("method", "baseline"),
                           arm.get("loss", "vicreg"), s, arm.get("overrides"), arm.get("options"))
            h = int(hashlib.sha1(json.dumps([cfg, arm.get("pretrain"), arm.get("evals"), str(data_dir), arm.get("split")], sort_keys=True).encode()).hexdigest(), 16)
            out = WORK / "runs" / tag / f"{arm['name']}-s{s}-{h % 10**10}"
            jobs.append((arm.get("kind", "ssl"), cfg, str(data_dir), arm["pretrain"], arm.get("evals", {}),
                         arm.get("correlate", []), str(out), arm.get("split")))
            keys.append((arm["name"], s))
    t0 = time.time()
    with ProcessPoolExecutor(workers) as ex:
        results = list(ex.map(_job, jobs))
    print(f"[{tag}] {len(jobs)} jobs in {time.time() - t0:.0f}s wall", flush=True)
    table = {}
    for (name, s), r in zip(keys, results):
        table.setdefault(name, {})[s] = r
    return table


def summarise(table, order=None):
    lines = []
    for name in order or table:
        rs = table[name]
        metrics = sorted({k for r in rs.values() for k in r["acc"]})
        for m in metrics:
            v = np.array([rs[s]["acc"][m] for s in sorted(rs)])
            lines.append(f"{name:28s} {m:18s} " + " ".join(f"{x:.3f}" for x in v)
                         + f" | {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        corr = sorted({k for r in rs.values() for k in r.get("corr", {})})
        for m in corr:
            v = np.array([rs[s]["corr"][m] for s in sorted(rs)])
            lines.append(f"{name:28s} corr:{m:13s} " + " ".join(f"{x:.3f}" for x in v) + f" | {v.mean():.3f}")
        tp = np.mean([r["t_pre"] for r in rs.values()])
        te = np.mean([r["t_eval"] for r in rs.values()])
        lines.append(f"{name:28s} cpu pre {tp:.1f}s eval {te:.1f}s")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def effect(table, a, b, metric):
    """Paired (b - a) differences per seed; mean, sd, 95% t-interval."""
    from scipy import stats

    seeds = sorted(set(table[a]) & set(table[b]))
    d = np.array([table[b][s]["acc"][metric] - table[a][s]["acc"][metric] for s in seeds])
    m, sd = d.mean(), d.std(ddof=1) if len(d) > 1 else 0.0
    half = stats.t.ppf(0.975, len(d) - 1) * sd / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    s = f"effect {b}-{a} on {metric}: " + " ".join(f"{x:+.3f}" for x in d) + f" | {m:+.3f} [{m - half:+.3f}, {m + half:+.3f}]"
    print(s, flush=True)
    return s


def derive_channels(data_dir, src, dst, channels):
    """Write dataset dst = src restricted to the named channels (research only)."""
    from splicer.data.format import load_dataset, save_dataset

    d = load_dataset(Path(data_dir) / src)
    idx = [d.channel_names.index(c) for c in channels]
    meta = dict(d.meta)
    meta = {**meta, "name": dst, "channel_names": list(channels)}
    out = Path(data_dir) / dst
    if not out.exists():
        save_dataset(out, np.asarray(d.images)[:, idx], np.asarray(d.labels), np.asarray(d.split), meta)
    return out
