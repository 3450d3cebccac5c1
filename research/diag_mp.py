from harness import build, run_all, summarise, derive_channels
d = build("multiplex", "mp-orig", {"n_pretrain": 1000})
T = ["CD4", "CD8a", "FOXP3"]
derive_channels(d, "pretrain", "pretrain_complex", T)
derive_channels(d, "t_cells", "t_cells_complex", T)
ov = {"model": {"embed_dim": 255}, "train": {"epochs": 8}}
arms = [
    dict(name="ssl_ceiling", pretrain="pretrain_complex", evals={"t_cells_complex": "t_cells_complex"}, overrides=ov),
    dict(name="sup_complex", kind="supervised", pretrain="t_cells_complex", overrides=ov),
    dict(name="sup_full", kind="supervised", pretrain="t_cells", overrides=ov),
    dict(name="baseline_e30", pretrain="pretrain", evals={"t_cells": "t_cells", "cell_types": "cell_types"}, overrides={"model": {"embed_dim": 255}, "train": {"epochs": 30}}),
]
summarise(run_all("diag-mp", d, arms, seeds=(0,)))
