#!/usr/bin/env bash
# A short, prepared check of the CUDA path (about 8 minutes on one H100-class GPU). It prints:
#  1. the training step, ours (the trainer's step: one CUDA graph per step) against the reference loop, for
#     Baseline and SpliCER K=2/4, at 32 px (4 channels), 64 px (EuroSAT: 12 channels, so that K=2 and 4 divide
#     them) and 224 px (NCT: 4 channels for the same reason; the stem's share of the FLOPs is negligible):
#     img/s ours vs reference, the K=4 step time against Baseline's, achieved TFLOP/s and % of the bf16 peak;
#  2. the same at 32 px stepping eagerly (what the graphs buy) and K=4 with a loop instead of fused encoders;
#  3. graph against eager steps in a real pretraining (per-step losses side by side);
#  4. pretrain -> evaluate of Baseline and SpliCER on the demo's MNIST-CIFAR analogue with the paper's model
#     sizes, and a pre-emption resume;
#  5. with 2+ GPUs, one run on 2 GPUs (torchrun, NCCL) against 1;
#  6. the linear probe at the paper's scale (100 000 x 512, 9 classes): scikit-learn vs torch on the CPU and GPU;
# then a summary table with PASS/MISS per target (>= 3x the reference; K=4 <= 2.5x a Baseline step; >= 25 % of
# the bf16 peak at 64 and 224 px).
#   bash benchmarks/cuda_check.sh [OUT_DIR]        (needs torch with CUDA, torchvision, lightly, scikit-learn)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/cuda_check}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s)')"
ngpu=$($py -c "import torch; print(torch.cuda.device_count())")

echo "== 1. step benchmark: ours (CUDA graph) vs reference at 32, 64 and 224 px"
$py benchmarks/speed.py --device cuda --rounds 3 --steps 10 --image-size 32 --channels 4 \
  --json "$out/speed_32.json"
$py benchmarks/speed.py --device cuda --rounds 3 --steps 10 --image-size 64 --channels 12 \
  --json "$out/speed_64.json"
$py benchmarks/speed.py --device cuda --rounds 3 --steps 5 --image-size 224 --channels 4 --batch-size 128 \
  --n-images 1024 --json "$out/speed_224.json"

echo "== 2. 32 px stepping eagerly; K=4 with a loop over component encoders"
$py benchmarks/speed.py --device cuda --rounds 3 --steps 10 --step eager --json "$out/speed_32_eager.json"
$py benchmarks/speed.py --device cuda --rounds 3 --steps 10 --ks 4 --fuse no --json "$out/speed_32_nofuse.json"

echo "== 3-4. pretrain + evaluate on the demo MNIST-CIFAR analogue, paper model sizes"
data=$out/data
$py -m splicer.cli make-demo mnist_cifar --out "$data" -p n_pretrain=8000 -p n_train=2000 -p n_val=500 -p n_test=2000
cat >"$out/base.yaml" <<YAML
components:
  mnist: {type: region, rows: [0, 16]}
  cifar: {type: region, rows: [16, 32]}
model: {encoder: {arch: resnet18}, projector_hidden: [2048, 2048], embed_dim: 2048, fuse: auto}
augment: {crop_scale: [0.6, 1.0], p_hflip: 0.0}
train: {epochs: 30, batch_size: 256, optimizer: adamw, lr: 0.002, warmup_epochs: 2, checkpoint_every: 100,
        device: cuda, progress: false}
YAML
for method in baseline splicer; do
  cfg=$out/$method.yaml
  cp "$out/base.yaml" "$cfg"
  if [ $method = baseline ]; then
    printf 'method: {name: baseline, inputs: [], loss: vicreg}\n' >>"$cfg"
  else
    printf 'method: {name: splicer, inputs: [cifar], loss: vicreg, options: {include_view: true}}\n' >>"$cfg"
  fi
done
echo "-- 3. graph vs eager steps: SpliCER, 3 epochs, every step's loss"
for mode in on off; do
  $py -m splicer.cli pretrain --config "$out/splicer.yaml" --data "$data/pretrain" --out "$out/runs/graph_$mode" \
    -s train.epochs=3 -s train.log_every=1 -s train.cuda_graph=$mode >/dev/null
done
$py - "$out" <<'PY'
import csv, json, sys
out = sys.argv[1]
rows = {m: list(csv.DictReader(open(f"{out}/runs/graph_{m}/metrics.csv"))) for m in ("on", "off")}
on, off = ([float(r["loss"]) for r in rows[m]] for m in ("on", "off"))
rel = [abs(a - b) / abs(b) for a, b in zip(on, off)]
speed = {m: json.load(open(f"{out}/runs/graph_{m}/metrics.json"))["images_per_s"] for m in ("on", "off")}
print("graph vs eager losses, first 5 steps:", [f"{a:.4f}/{b:.4f}" for a, b in zip(on[:5], off[:5])])
print(f"max relative loss difference: steps 1-10 {max(rel[:10]):.2e}, all {len(rel)} steps {max(rel):.2e}")
print(f"pretraining img/s: graph {speed['on']:.0f}, eager {speed['off']:.0f} ({speed['on'] / speed['off']:.2f}x)")
json.dump({"max_rel_first10": max(rel[:10]), "max_rel": max(rel), "img_s": speed}, open(f"{out}/graph_vs_eager.json", "w"))
PY
echo "-- 4. pretrain + evaluate"
for method in baseline splicer; do
  $py -m splicer.cli pretrain --config "$out/$method.yaml" --data "$data/pretrain" --out "$out/runs/$method"
  $py -m splicer.cli evaluate --encoder "$out/runs/$method/encoder.pt" --device cuda \
    --eval rNONE="$data/rNONE" --eval rMNIST="$data/rMNIST" --eval rCIFAR="$data/rCIFAR" \
    --out "$out/runs/$method/evaluation.json"
  cp "$out/runs/$method/metrics.json" "$out/metrics_$method.json"
  cp "$out/runs/$method/evaluation.json" "$out/evaluation_$method.json"
done
echo "-- pre-emption on CUDA: SIGUSR1 mid-run -> exit 143 with a checkpoint -> rerun resumes and finishes"
cfg=$out/splicer.yaml
run=$out/runs/preempt
$py -m splicer.cli pretrain --config "$cfg" --data "$data/pretrain" --out "$run" -s train.epochs=40 &
pid=$!
sleep 30
kill -USR1 $pid
set +e; wait $pid; rc=$?; set -e
echo "exit code after SIGUSR1: $rc"; ls "$run"
$py -m splicer.cli pretrain --config "$cfg" --data "$data/pretrain" --out "$run" -s train.epochs=40
$py -c "import json; m = json.load(open('$run/metrics.json')); print('resumed_from_step', m['resumed_from_step'], 'steps', m['steps'])"

if [ "$ngpu" -ge 2 ]; then
  echo "== 5. one run on 2 GPUs (torchrun, NCCL) against 1 GPU: same global batch, 3 epochs"
  $py -m splicer.cli pretrain --config "$cfg" --data "$data/pretrain" --out "$out/runs/gpus2" -s train.epochs=3 \
    -s train.devices=2 >/dev/null
  $py - "$out" <<'PY'
import json, sys
out = sys.argv[1]
two, one = (json.load(open(f"{out}/runs/{r}/metrics.json")) for r in ("gpus2", "graph_off"))
print(f"2 GPUs: {two['processes']} processes, {two['images_per_s']:.0f} img/s, final loss {two['final_loss']:.4f}; "
      f"1 GPU (eager): {one['images_per_s']:.0f} img/s, final loss {one['final_loss']:.4f}")
PY
else
  echo "== 5. skipped: one GPU"
fi

echo "== 6. linear probe at paper scale: scikit-learn vs torch (CPU, GPU)"
$py benchmarks/probe.py --sizes 100000 --json "$out/probe.json"

echo "== summary"
$py - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'px':>4} {'configuration':<14}{'step':>7}{'ours img/s':>12}{'ref img/s':>11}{'ours/ref':>10}"
      f"{'TFLOP/s':>9}{'% peak':>8}")
targets = []
for name in ("speed_32", "speed_64", "speed_224", "speed_32_eager", "speed_32_nofuse"):
    path = f"{out}/{name}.json"
    if not os.path.exists(path):
        continue
    res = json.load(open(path))
    size = res["settings"]["image_size"]
    by = {(r["config"], r["impl"]): r for r in res["results"]}
    for config, ratio in res["speedup"].items():
        o, r = by[config, "ours"], by[config, "reference"]
        share = f"{100 * o['peak_fraction']:.1f}" if o["peak_fraction"] is not None else "-"
        print(f"{size:>4} {config:<14}{o['step'][:7]:>7}{o['images_per_s']:>12.0f}{r['images_per_s']:>11.0f}"
              f"{ratio:>9.2f}x{o['tflops']:>9.1f}{share:>8}")
    for key, c in res["step_cost"].items():
        print(f"{size:>4} step cost {key}: ours {c['ours']:.2f}x, reference {c['reference']:.2f}x ({name})")
    targets += [(name, t) for t in res["targets"]]
print()
for name, t in targets:
    print(f"{'PASS' if t['passed'] else 'MISS'}  [{name}] {t['target']}: {t['value']:.2f}")
for m in ("baseline", "splicer"):
    met = json.load(open(f"{out}/metrics_{m}.json"))
    ev = json.load(open(f"{out}/evaluation_{m}.json"))
    acc = {k: round(v["accuracy"], 3) for k, v in ev["probes"].items()}
    print(m, "pretraining img/s", round(met["images_per_s"]), "wall_s", round(met["wall_s"], 1), "probe accuracy", acc)
PY
