"""Summarise a research pipeline run: per-seed probe accuracies, paired effects, ceilings, correlations, CPU."""
import csv, json, sys
from pathlib import Path
import numpy as np
from scipy import stats

root = Path(sys.argv[1])
rows = []
for ev in sorted(root.glob("runs/*/*/*/*/seed*/evaluation.json")):
    exp, method, pairing, loss, seed = ev.parts[-6:-1]
    r = json.loads(ev.read_text())
    bench = root / "benchmarks/pretrain" / exp / method / pairing / loss / f"{seed}.tsv"
    cpu = float(list(csv.DictReader(bench.open(), delimiter="\t"))[0]["cpu_time"]) if bench.exists() else float("nan")
    bench_e = root / "benchmarks/evaluate" / exp / method / pairing / loss / f"{seed}.tsv"
    cpu_e = float(list(csv.DictReader(bench_e.open(), delimiter="\t"))[0]["cpu_time"]) if bench_e.exists() else float("nan")
    for task, p in r["probes"].items():
        rows.append((exp, method, pairing, loss, int(seed[4:]), task, p["accuracy"], cpu, cpu_e))
    for task, c in r.get("correlations", {}).items():
        rows.append((exp, method, pairing, loss, int(seed[4:]), f"corr:{task}", c["mean_abs_correlation"], cpu, cpu_e))
sup = []
for f in sorted(root.glob("supervised/*/*/seed*.json")):
    bench = root / "benchmarks/supervised" / f.parts[-3] / f.parts[-2] / f"{f.stem}.tsv"
    cpu = float(list(csv.DictReader(bench.open(), delimiter="\t"))[0]["cpu_time"]) if bench.exists() else float("nan")
    rows.append((f.parts[-3], "supervised", "-", "-", int(f.stem[4:]), f.parts[-2], json.loads(f.read_text())["accuracy"], cpu, 0))

out = []
keys = sorted({r[:4] + (r[5],) for r in rows})
table = {}
for k in keys:
    sel = sorted([r for r in rows if r[:4] + (r[5],) == k], key=lambda r: r[4])
    v = np.array([r[6] for r in sel])
    table[k] = {r[4]: r[6] for r in sel}
    with np.errstate(all="ignore"):
        cpu = np.nanmean([r[7] for r in sel] + [np.nan, 0][:0])
        cpu_e = np.nanmean([r[8] for r in sel])
    out.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | " + " ".join(f"{x:.3f}" for x in v)
               + f" | {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f} | {cpu:.1f} | {cpu_e:.1f} |")
print("| experiment | method | pairing | loss | task | per seed | mean ± sd | CPU pretrain s | CPU eval s |")
print("|---|---|---|---|---|---|---|---|---|")
print("\n".join(out))
print()
print("| effect (SpliCER − Baseline, paired by seed) | per seed | mean [95 % t-CI] |")
print("|---|---|---|")
for k in keys:
    exp, method, pairing, loss, task = k
    if method != "splicer":
        continue
    b = table.get((exp, "baseline", "none", loss, task))
    if not b:
        continue
    s = table[k]
    seeds = sorted(set(b) & set(s))
    if not seeds:
        continue
    d = np.array([s[i] - b[i] for i in seeds])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    print(f"| {exp} {pairing} {loss} {task} | " + " ".join(f"{x:+.3f}" for x in d)
          + f" | {d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] |")
