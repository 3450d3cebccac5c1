#!/usr/bin/env bash
# A short, prepared check of the CUDA path on one GPU (a few minutes): the step benchmark (ours vs reference,
# ResNet-18, fused vs looped component encoders) and a real pretrain -> evaluate of Baseline and SpliCER on the
# demo's MNIST-CIFAR analogue with the paper's model sizes, bf16 and channels_last, plus a pre-emption resume.
#   bash benchmarks/cuda_check.sh [OUT_DIR]        (needs torch with CUDA, torchvision, lightly, scikit-learn)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/cuda_check}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

echo "== step benchmark (fuse auto = fused on CUDA), then K=4 with a loop over component encoders"
$py benchmarks/speed.py --device cuda --rounds 3 --json "$out/speed_cuda.json"
$py benchmarks/speed.py --device cuda --rounds 3 --ks 4 --fuse no --json "$out/speed_cuda_nofuse.json"

echo "== pretrain + evaluate on the demo MNIST-CIFAR analogue, paper model sizes"
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
  $py -m splicer.cli pretrain --config "$cfg" --data "$data/pretrain" --out "$out/runs/$method"
  $py -m splicer.cli evaluate --encoder "$out/runs/$method/encoder.pt" --device cuda \
    --eval rNONE="$data/rNONE" --eval rMNIST="$data/rMNIST" --eval rCIFAR="$data/rCIFAR" \
    --out "$out/runs/$method/evaluation.json"
  cp "$out/runs/$method/metrics.json" "$out/metrics_$method.json"
  cp "$out/runs/$method/evaluation.json" "$out/evaluation_$method.json"
done

echo "== pre-emption on CUDA: SIGUSR1 mid-run -> exit 143 with a checkpoint -> rerun resumes and finishes"
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
$py - "$out" <<'PY'
import json, sys
out = sys.argv[1]
import os
for name in ("speed_cuda", "speed_cuda_nofuse"):
    if os.path.exists(f"{out}/{name}.json"):
        print(name, json.dumps(json.load(open(f"{out}/{name}.json")))[:3000])
for m in ("baseline", "splicer"):
    met = json.load(open(f"{out}/metrics_{m}.json"))
    ev = json.load(open(f"{out}/evaluation_{m}.json"))
    print(m, "img/s", round(met["images_per_s"]), "wall_s", round(met["wall_s"], 1), json.dumps(ev)[:600])
PY
