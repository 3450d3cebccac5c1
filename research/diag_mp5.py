import sys, json
from mp_variants import C, variant, overrides, PAIRINGS
from probe_branch import run
knobs = json.loads(sys.argv[1])
d = variant(sys.argv[2], **knobs)
for s in [0, 1]:
    inputs, opts = PAIRINGS[sys.argv[3]]
    run(d, C, inputs, opts, overrides(e=int(sys.argv[5])), s, ["t_cells"], f"{sys.argv[3]}_{sys.argv[4]}_s{s}", loss=sys.argv[4])
