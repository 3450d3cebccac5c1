import sys, json
from harness import build, run_all, summarise, effect
import splicer.data.demo.multiplex as mp
ALL = list(mp.MULTIPLEX_CHANNELS)
T = ["CD4", "CD8a", "FOXP3"]
GROUPS = {
    "nuclear": ["Hoechst", "Ki67", "AF1", "Argo550"],
    "lineage": ["CD45", "CD3e", "CD20", "CD68", "CD163", "CD45RO"],
    "t_subtype": T,
    "checkpoint": ["PD-L1", "PD-1"],
    "tissue": ["Pan-CK", "E-cadherin", "SMA", "CD31"],
    "rest": [c for c in ALL if c not in T],
}
GROUPS.update({m: [m] for m in T})
C = {k: {"type": "channels", "channels": v} for k, v in GROUPS.items()}
PAIRINGS = {"vt": (["t_subtype"], {"include_view": True}), "rt": (["rest", "t_subtype"], {}),
            "g5": (["nuclear", "lineage", "t_subtype", "checkpoint", "tissue"], {}),
            "vm3": (T, {"include_view": True}), "rm3": (["rest", *T], {}),
            "g7": (["nuclear", "lineage", "checkpoint", "tissue", *T], {})}
EV = {"cell_types": "cell_types", "t_cells": "t_cells"}


def variant(name, **knobs):
    for k, v in knobs.items():
        setattr(mp, "_" + k.upper(), v)
    params = {"n_pretrain": knobs.get("n", 1000), "size": knobs.get("size", 16)}
    return build("multiplex", f"mpv-{name}", params, module_src=json.dumps(knobs, sort_keys=True))


def overrides(e=4, b=64, w=16, dim=240, lr=None):
    o = {"model": {"embed_dim": dim, "encoder": {"arch": "resnet", "base_width": w, "blocks": [1, 1, 1]}},
         "train": {"epochs": e, "batch_size": b}}
    if lr:
        o["train"]["lr"] = lr
    return o


def arms_for(tag, o, loss="vicreg", pairings=("vt",), ceil=False):
    arms = [dict(name=f"{tag}_base_{loss}", pretrain="pretrain", evals=EV, overrides=o, loss=loss, correlate=["cell_types"])]
    for p in pairings:
        inputs, opts = PAIRINGS[p]
        k = len(inputs) + len(opts)
        oo = {**o, "model": {**o["model"], "embed_dim": 240 if 240 % k == 0 else 252}}
        arms.append(dict(name=f"{tag}_{p}_{loss}", components=C, inputs=inputs, method="splicer", options=opts,
                         pretrain="pretrain", evals=EV, overrides=oo, loss=loss, correlate=["cell_types"]))
    if ceil:
        arms.append(dict(name=f"{tag}_sslceil_{loss}", pretrain="pretrain_complex", evals={"t_cells_complex": "t_cells_complex"}, overrides=o, loss=loss))
        arms.append(dict(name=f"{tag}_supceil", kind="supervised", pretrain="t_cells_complex", overrides=o))
    return arms


def report(t, tag, loss="vicreg", pairings=("vt",)):
    summarise(t)
    for p in pairings:
        effect(t, f"{tag}_base_{loss}", f"{tag}_{p}_{loss}", "t_cells")
        effect(t, f"{tag}_base_{loss}", f"{tag}_{p}_{loss}", "cell_types")


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    for name, v in spec.items():
        knobs = v.get("knobs", {})
        d = variant(name, **knobs)
        o = overrides(**v.get("o", {}))
        for loss in v.get("losses", ["vicreg"]):
            pairings = v.get("pairings", ["vt"])
            t = run_all(f"mpv-{name}", d, arms_for(name, o, loss, pairings, v.get("ceil", False)), seeds=v.get("seeds", (0, 1, 2)))
            report(t, name, loss, pairings)
