import sys
from calib_multiplex import COMP
from harness import build, run_all, summarise, derive_channels
import splicer.data.demo.multiplex as mp

ORIG = list(mp._EXPRESSION)
def patch(k):
    mp._EXPRESSION = [(m, t, p, (lo * k, hi * k)) if m in ("CD4", "CD8a", "FOXP3") and t != (3,) else (m, t, p, (lo, hi)) for m, t, p, (lo, hi) in ORIG]

if __name__ == "__main__":
    ev = {"cell_types": "cell_types", "t_cells": "t_cells"}
    arms = []
    for k in [float(a) for a in sys.argv[1:]]:
        patch(k)
        d = build("multiplex", f"mp-dim{k}", {"n_pretrain": 1000}, module_src=f"dim{k}")
        o = {"model": {"embed_dim": 256}, "train": {"epochs": 8}}
        arms = [dict(name=f"base_k{k}", pretrain="pretrain", evals=ev, overrides=o),
                dict(name=f"spl_vt_k{k}", components=COMP, inputs=["t_subtype"], method="splicer", options={"include_view": True}, pretrain="pretrain", evals=ev, overrides=o)]
        summarise(run_all(f"sweep-dim{k}", d, arms, seeds=(0,)))
