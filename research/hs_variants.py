import sys, json
from harness import build, run_all, summarise, effect
import splicer.data.demo.hyperspectral as hs

B = list(hs.HYPERSPECTRAL_BANDS)
GROUPS = {
    "rgb": ["B04", "B03", "B02"],
    "red_edge": ["B05", "B06", "B07"],
    "nir": ["B08", "B08A", "B09"],
    "swir": ["B01", "B10", "B11", "B12"],
    "red": ["B04"], "green": ["B03"], "blue": ["B02"],
    "nonrgb": [b for b in B if b not in ("B02", "B03", "B04")],
    "vnir": ["B05", "B06", "B07", "B08", "B08A"], "swir2": ["B11", "B12"], "atmos": ["B01", "B09", "B10"],
}
GROUPS.update({b: [b] for b in B})
C = {k: {"type": "channels", "channels": v} for k, v in GROUPS.items()}
PAIRINGS = {
    "g4": (["rgb", "red_edge", "nir", "swir"], {}),
    "rgb3": (["red", "green", "blue"], {}),
    "vn": (["nonrgb"], {"include_view": True}),
    "g3": (["rgb", "vnir", "swir2"], {}),
    "g4b": (["rgb", "vnir", "swir2", "atmos"], {}),
    "b13": (B, {}),
    "rn": (["rgb", "nonrgb"], {}),
}


def variant(name, **knobs):
    for k, v in knobs.items():
        if k not in ("n", "size"):
            setattr(hs, "_" + k.upper(), v)
    params = {"n_pretrain": knobs.get("n", 1000), "size": knobs.get("size", 16)}
    return build("hyperspectral", f"hsv-{name}", params, module_src=json.dumps(knobs, sort_keys=True))


def overrides(e=4, b=64, w=16, dim=240, lr=None):
    o = {"model": {"embed_dim": dim, "encoder": {"arch": "resnet", "base_width": w, "blocks": [1, 1, 1]}},
         "train": {"epochs": e, "batch_size": b}}
    if lr:
        o["train"]["lr"] = lr
    return o


def arm(name, o, loss, pairing, pretrain, evals):
    if pairing == "base":
        return dict(name=name, pretrain=pretrain, evals=evals, overrides=o, loss=loss)
    inputs, opts = PAIRINGS[pairing]
    k = len(inputs) + len(opts)
    dim = next(d for d in (240, 252, 260, 256) if d % k == 0)
    return dict(name=name, components=C, inputs=inputs, method="splicer", options=opts, pretrain=pretrain,
                evals=evals, overrides={**o, "model": {**o["model"], "embed_dim": dim}}, loss=loss)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    for name, v in spec.items():
        d = variant(name, **v.get("knobs", {}))
        o = overrides(**v.get("o", {}))
        for loss in v.get("losses", ["vicreg"]):
            arms, pairs = [], []
            for exp in v.get("exps", ["b13"]):
                if exp == "b13":
                    ev = {"bands13": "bands13"}
                    arms.append(arm(f"{name}_b13_base_{loss}", o, loss, "base", "pretrain", ev))
                    for p in v.get("pairings", ["g4"]):
                        arms.append(arm(f"{name}_b13_{p}_{loss}", o, loss, p, "pretrain", ev)); pairs.append((f"{name}_b13_base_{loss}", f"{name}_b13_{p}_{loss}", "bands13"))
                if exp == "rgb":
                    ev = {"rgb": "rgb"}
                    a = dict(arm(f"{name}_rgb_base_{loss}", o, loss, "base", "rgb", ev), split="train")
                    b = dict(arm(f"{name}_rgb_rgb3_{loss}", o, loss, "rgb3", "rgb", ev), split="train")
                    arms += [a, b]; pairs.append((a["name"], b["name"], "rgb"))
                if exp == "shift":
                    ev = {"bands13": "bands13"}
                    arms.append(arm(f"{name}_sh_base_{loss}", o, loss, "base", "pretrain_shifted", ev))
                    for p in v.get("pairings", ["g4"]):
                        arms.append(arm(f"{name}_sh_{p}_{loss}", o, loss, p, "pretrain_shifted", ev)); pairs.append((f"{name}_sh_base_{loss}", f"{name}_sh_{p}_{loss}", "bands13"))
                if exp == "ceil":
                    arms.append(dict(name=f"{name}_sslceil_{loss}", pretrain="pretrain_complex", evals={"bands13_complex": "bands13_complex"}, overrides=o, loss=loss))
                    arms.append(dict(name=f"{name}_supceil", kind="supervised", pretrain="bands13_complex", overrides=o))
            t = run_all(f"hsv-{name}", d, arms, seeds=v.get("seeds", (0, 1, 2)))
            summarise(t)
            for a, b, m in pairs:
                effect(t, a, b, m)
