import sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
from calib_multiplex import COMP
from harness import make_cfg
from splicer.run import build_model
from splicer.train import TrainConfig, train
import tempfile

def t_run(C, size, width, blocks, inputs, opts, n=512, epochs=2, batch=128, comps=COMP, loss="vicreg"):
    x = (np.random.rand(n, C, size, size) * 255).astype(np.uint8)
    names = ["Hoechst","AF1","CD31","CD45","CD68","Argo550","CD4","FOXP3","CD8a","CD45RO","CD20","PD-L1","CD3e","CD163","E-cadherin","PD-1","Ki67","Pan-CK","SMA"][:C]
    ov = {"model": {"embed_dim": 240, "encoder": {"arch": "resnet", "base_width": width, "blocks": blocks}}, "train": {"epochs": epochs, "batch_size": batch}}
    cfg = make_cfg(comps, inputs, "splicer" if inputs else "baseline", loss, 0, ov, opts)
    model = build_model(cfg, names, [], (C, size, size))
    with tempfile.TemporaryDirectory() as d:
        t = time.process_time()
        train(model, x, TrainConfig.from_dict(cfg["train"]), d)
        dt = time.process_time() - t
    steps = epochs * (n // batch)
    return dt / steps

for size in (16, 12):
    for width, blocks in ((16, [1,1,1]), (8, [1,1,1]), (16, [1,1]), (8, [1,1])):
        b = t_run(19, size, width, blocks, [], {})
        v = t_run(19, size, width, blocks, ["t_subtype"], {"include_view": True})
        s5 = t_run(19, size, width, blocks, list(COMP), {})
        print(f"size {size} w{width} {blocks}: per step baseline {b*1000:.0f}ms view+t {v*1000:.0f}ms 5grp {s5*1000:.0f}ms", flush=True)
