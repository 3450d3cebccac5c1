import time, sys, numpy as np, torch
torch.set_num_threads(1)
from mp_variants import C, PAIRINGS
from harness import make_cfg
from splicer.run import build_model
from splicer.data.format import to_float
import splicer.data.demo.multiplex as mp
size=int(sys.argv[1]); width=int(sys.argv[2]); batch=int(sys.argv[3]); p=sys.argv[4]
inputs, opts = PAIRINGS.get(p, ([], {}))
ov = {"model": {"embed_dim": 240, "encoder": {"arch": "resnet", "base_width": width, "blocks": [1,1,1]}}}
cfg = make_cfg(C, inputs, "splicer" if inputs else "baseline", sys.argv[5] if len(sys.argv) > 5 else "vicreg", 0, ov, opts)
model = build_model(cfg, mp.MULTIPLEX_CHANNELS, [], (19, size, size)).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = to_float(torch.as_tensor((np.random.rand(batch, 19, size, size)*255).astype(np.uint8)))
g = torch.Generator().manual_seed(0)
for i in range(3):
    loss, _ = model.training_loss(x, None, g); opt.zero_grad(); loss.backward(); opt.step()
n=10
t = time.process_time()
for i in range(n):
    loss, _ = model.training_loss(x, None, g); opt.zero_grad(); loss.backward(); opt.step()
tt = (time.process_time() - t) / n
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for i in range(5):
        loss, _ = model.training_loss(x, None, g); opt.zero_grad(); loss.backward(); opt.step()
print(p, f"step {tt*1000:.0f}ms")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
