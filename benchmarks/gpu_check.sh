#!/usr/bin/env bash
# The GPU measurements, as one short script for a machine with one CUDA GPU and PyTorch already installed
# (nothing is downloaded). It checks the CUDA code paths, then times the presets there:
#
#   FITTINGROOM_DATA=/path/to/fashion-mnist bash benchmarks/gpu_check.sh [OUT_DIR]
#
# FITTINGROOM_DATA must hold the four Fashion-MNIST files (.gz or raw). Results go to OUT_DIR (default
# ./gpu-results): the console log and one JSON file per benchmark. Budget: about 5 minutes on an H100/H200.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible"
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
EOF
{
  # the CUDA paths end to end: data on the device, bf16 autocast, augmentation, DDP-free training, TTA
  python3 -m fittingroom train --preset fast --device cuda --epochs 2 --out "$out/smoke" --quiet
  python3 - "$out/smoke" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
print("smoke run:", m["device"], m["precision"], "test accuracy", round(m["test_accuracy"], 4))
assert m["device"].startswith("cuda") and m["test_accuracy"] > 0.8
EOF
  # the presets on the GPU: resnet's goal is >= 95.5% in <= 60 s of training
  python3 benchmarks/presets.py --preset fast cnn resnet --seeds 1 --json "$out/presets.json" || true
} 2>&1 | tee "$out/log.txt"
