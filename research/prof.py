import time, numpy as np, torch
torch.set_num_threads(1)
from calib_multiplex import COMP
from harness import make_cfg
from splicer.run import build_model
from splicer.data.format import to_float
names = ["Hoechst","AF1","CD31","CD45","CD68","Argo550","CD4","FOXP3","CD8a","CD45RO","CD20","PD-L1","CD3e","CD163","E-cadherin","PD-1","Ki67","Pan-CK","SMA"]
import sys
size=int(sys.argv[1]); width=int(sys.argv[2])
ov = {"model": {"embed_dim": 240, "encoder": {"arch": "resnet", "base_width": width, "blocks": [1,1,1]}}}
for inputs, opts in (([], {}), (["t_subtype"], {"include_view": True})):
    cfg = make_cfg(COMP, inputs, "splicer" if inputs else "baseline", "vicreg", 0, ov, opts)
    model = build_model(cfg, names, [], (19, size, size)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = to_float(torch.as_tensor((np.random.rand(128, 19, size, size)*255).astype(np.uint8)))
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        loss, _ = model.training_loss(x, None, g); opt.zero_grad(); loss.backward(); opt.step()
    t = time.process_time(); n = 10
    for i in range(n):
        model.augment(x.repeat(2,1,1,1), g)
    ta = (time.process_time() - t) / n
    t = time.process_time()
    for i in range(n):
        loss, _ = model.training_loss(x, None, g); opt.zero_grad(); loss.backward(); opt.step()
    tt = (time.process_time() - t) / n
    print(inputs, f"aug(2 views) {ta*1000:.0f}ms step {tt*1000:.0f}ms")
