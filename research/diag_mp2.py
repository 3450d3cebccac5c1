from calib_multiplex import COMP
from harness import build, run_all, summarise
d = build("multiplex", "mp-orig", {"n_pretrain": 1000})
ev = {"cell_types": "cell_types", "t_cells": "t_cells"}
ALL = ["Hoechst","AF1","CD31","CD45","CD68","Argo550","CD4","FOXP3","CD8a","CD45RO","CD20","PD-L1","CD3e","CD163","E-cadherin","PD-1","Ki67","Pan-CK","SMA"]
T = ["CD4", "CD8a", "FOXP3"]
C2 = {"t_subtype": COMP["t_subtype"], "rest": {"type": "channels", "channels": [c for c in ALL if c not in T]}}
def o(e, dim=255): return {"model": {"embed_dim": dim}, "train": {"epochs": e}}
arms = [
    dict(name="splicer5_e24", components=COMP, inputs=list(COMP), method="splicer", overrides=o(24), pretrain="pretrain", evals=ev),
    dict(name="splicer_view_t_e8", components=COMP, inputs=["t_subtype"], method="splicer", options={"include_view": True}, overrides=o(8, 256), pretrain="pretrain", evals=ev),
    dict(name="splicer_rest_t_e8", components=C2, inputs=["rest", "t_subtype"], method="splicer", overrides=o(8, 256), pretrain="pretrain", evals=ev),
    dict(name="splicer_view_t_e24", components=COMP, inputs=["t_subtype"], method="splicer", options={"include_view": True}, overrides=o(24, 256), pretrain="pretrain", evals=ev),
]
summarise(run_all("diag-mp2", d, arms, seeds=(0,)))
