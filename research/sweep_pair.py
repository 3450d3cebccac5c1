import sys
from calib_multiplex import COMP
from harness import build, run_all, summarise, effect
from sweep_dim import patch
ALL = ["Hoechst","AF1","CD31","CD45","CD68","Argo550","CD4","FOXP3","CD8a","CD45RO","CD20","PD-L1","CD3e","CD163","E-cadherin","PD-1","Ki67","Pan-CK","SMA"]
T = ["CD4", "CD8a", "FOXP3"]
C = dict(COMP, rest={"type": "channels", "channels": [c for c in ALL if c not in T]})
ev = {"cell_types": "cell_types", "t_cells": "t_cells"}
if __name__ == "__main__":
    k = float(sys.argv[1])
    patch(k)
    d = build("multiplex", f"mp-dim{k}", {"n_pretrain": 1000}, module_src=f"dim{k}")
    o = {"model": {"embed_dim": 240}, "train": {"epochs": 8}}
    arms = []
    for loss in sys.argv[2].split(","):
        arms += [dict(name=f"base_{loss}", pretrain="pretrain", evals=ev, overrides=o, loss=loss, correlate=["cell_types"]),
            dict(name=f"vt_{loss}", components=C, inputs=["t_subtype"], method="splicer", options={"include_view": True}, pretrain="pretrain", evals=ev, overrides=o, loss=loss, correlate=["cell_types"]),
            dict(name=f"rt_{loss}", components=C, inputs=["rest", "t_subtype"], method="splicer", pretrain="pretrain", evals=ev, overrides=o, loss=loss, correlate=["cell_types"]),
            dict(name=f"g5_{loss}", components=C, inputs=list(COMP), method="splicer", pretrain="pretrain", evals=ev, overrides=dict(o, model={"embed_dim": 255}), loss=loss, correlate=["cell_types"])]
    t = run_all(f"sweep-pair{k}", d, arms, seeds=(0, 1, 2))
    summarise(t)
    for loss in sys.argv[2].split(","):
        for a in ("vt", "rt", "g5"):
            effect(t, f"base_{loss}", f"{a}_{loss}", "t_cells")
            effect(t, f"base_{loss}", f"{a}_{loss}", "cell_types")
