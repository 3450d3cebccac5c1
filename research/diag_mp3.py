from calib_multiplex import COMP
from harness import build
from probe_branch import run
d = build("multiplex", "mp-orig", {"n_pretrain": 1000})
run(d, COMP, ["t_subtype"], {"include_view": True}, {"model": {"embed_dim": 256}, "train": {"epochs": 8}}, 0, ["t_cells"], "view_t")
