import sys, json
from sweep_pair import C, ev
from harness import build, run_all, summarise, effect
from sweep_dim import patch
k = float(sys.argv[1]); loss = sys.argv[2]
patch(k)
configs = json.loads(sys.argv[3])
for name, c in configs.items():
    size = c.get("size", 16); n = c.get("n", 1000)
    d = build("multiplex", f"mp-dim{k}-s{size}-n{n}", {"n_pretrain": n, "size": size}, module_src=f"dim{k}")
    o = {"model": {"embed_dim": 240, "encoder": {"arch": "resnet", "base_width": c.get("w", 16), "blocks": c.get("blocks", [1, 1, 1])}},
         "train": {"epochs": c["e"], "batch_size": c.get("b", 128)}}
    arms = [dict(name=f"{name}_base", pretrain="pretrain", evals=ev, overrides=o, loss=loss, correlate=["cell_types"]),
            dict(name=f"{name}_vt", components=C, inputs=["t_subtype"], method="splicer", options={"include_view": True}, pretrain="pretrain", evals=ev, overrides=o, loss=loss, correlate=["cell_types"])]
    t = run_all(f"budget-{k}-{loss}", d, arms, seeds=(0, 1, 2))
    summarise(t)
    effect(t, f"{name}_base", f"{name}_vt", "t_cells")
