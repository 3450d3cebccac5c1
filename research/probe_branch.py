"""Train one SpliCER run and probe both the primary and each branch encoder (research diagnostics)."""
import sys, json, time
import numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from harness import make_cfg, WORK
from splicer.run import build_model
from splicer.data.format import load_dataset
from splicer.train import TrainConfig, train
from splicer.evaluate import embed, linear_probe


def probe(enc, ds, comp=None):
    x = np.asarray(ds.images)
    feats = embed(enc, x if comp is None else x[:, comp])
    sp = [(feats[ds.split == i], np.asarray(ds.labels)[ds.split == i]) for i in range(3)]
    return linear_probe(*sp)["accuracy"]


def run(data_dir, components, inputs, options, overrides, seed, evals, tag, loss="vicreg"):
    cfg = make_cfg(components, inputs, "splicer" if inputs else "baseline", loss, seed, overrides, options)
    data = load_dataset(Path(data_dir) / "pretrain")
    torch.manual_seed(seed)
    model = build_model(cfg, data.channel_names, data.mask_names, tuple(data.images.shape[1:]))
    out = WORK / "probe_branch" / tag
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*"):
        f.unlink()
    t = time.process_time()
    train(model, np.asarray(data.images), TrainConfig.from_dict(cfg["train"]), out)
    print(f"{tag}: train {time.process_time() - t:.1f}s", flush=True)
    res = {}
    for name in evals:
        ds = load_dataset(Path(data_dir) / name)
        res[f"primary/{name}"] = probe(model.primary_encoder, ds)
        for g in model.groups:
            nets = model.branch_encoders[g.key]
            nets = nets.unfuse() if hasattr(nets, "unfuse") else list(nets)
            for b, net in zip(g.branches, nets):
                comp = list(model.components[b].channels)
                res[f"{b}/{name}"] = probe(net, ds, comp)
    print(tag, json.dumps({k: round(v, 3) for k, v in res.items()}), flush=True)
    return res
