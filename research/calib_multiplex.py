import sys
from harness import build, run_all, summarise, effect

COMP = {
    "nuclear": {"type": "channels", "channels": ["Hoechst", "Ki67", "AF1", "Argo550"]},
    "lineage": {"type": "channels", "channels": ["CD45", "CD3e", "CD20", "CD68", "CD163", "CD45RO"]},
    "t_subtype": {"type": "channels", "channels": ["CD4", "CD8a", "FOXP3"]},
    "checkpoint": {"type": "channels", "channels": ["PD-L1", "PD-1"]},
    "tissue": {"type": "channels", "channels": ["Pan-CK", "E-cadherin", "SMA", "CD31"]},
}
if __name__ == "__main__":
    d = build("multiplex", "mp-orig", {"n_pretrain": 1000})
    ov = {"model": {"embed_dim": 255}, "train": {"epochs": 8}}
    ev = {"cell_types": "cell_types", "t_cells": "t_cells"}
    arms = [
    dict(name="baseline", components=COMP, inputs=[], method="baseline", overrides=ov, pretrain="pretrain", evals=ev, correlate=["cell_types"]),
    dict(name="splicer", components=COMP, inputs=list(COMP), method="splicer", overrides=ov, pretrain="pretrain", evals=ev, correlate=["cell_types"]),
    ]
    t = run_all("calib-mp", d, arms, seeds=(0,))
    summarise(t)
