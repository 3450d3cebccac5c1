import sys
from mp_variants import C, variant, overrides
from probe_branch import run
import json
knobs = json.loads(sys.argv[1]); seeds = [int(s) for s in sys.argv[2].split(",")]
d = variant(sys.argv[3], **knobs)
for s in seeds:
    run(d, C, ["t_subtype"], {"include_view": True}, overrides(), s, ["t_cells"], f"vt_s{s}")
