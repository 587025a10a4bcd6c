#!/usr/bin/env bash
# One prepared GPU check (fits in under 8 minutes on one H100/H200), run from the repository root on
# the lent machine, where python3 already has torch:
#   mkdir -p .carry && cp ../shared/data/cifar10_jpeg.tar.gz .carry/     # on the development machine
#   bash benchmarks/gpu_check.sh                                          # on the GPU machine (carry .carry)
# Writes its figures to $OUT (or ./gpu_out): throughput split for ResNet-18/50 at the cifar recipe,
# objective and augmentation benchmarks, and a 5-minute cifar10 run with its kNN accuracy.
set -euo pipefail
export PYTHONPATH=src
OUT=${OUT:-gpu_out}
ARCHIVE=${ARCHIVE:-.carry/cifar10_jpeg.tar.gz}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
export MMCR_CACHE="$PWD/.carry/cache"
# 1. throughput split (data, augmentation, forward+backward, objective), cifar recipe, k=40, B=32
timeout 150 python3 benchmarks/bench_train.py --device cuda --presets cifar10 --backbones resnet18 resnet50 \
  --archive "$ARCHIVE" 2>&1 | tee "$OUT/bench_train.txt" || echo "bench_train failed or timed out" | tee -a "$OUT/bench_train.txt"
# 2. objectives and augmentation on the GPU (each script prints its own ratios)
if [ -f benchmarks/bench_objectives.py ]; then
  timeout 60 python3 benchmarks/bench_objectives.py --device cuda 2>&1 | tee "$OUT/bench_objectives.txt" || true
fi
if [ -f benchmarks/bench_augment.py ]; then
  timeout 60 python3 benchmarks/bench_augment.py --device cuda 2>&1 | tee "$OUT/bench_augment.txt" || true
fi
# 3. a 5-minute cifar10 run (ResNet-18, CIFAR stem, 40 views, batch 32, Adam) with kNN on the test split
timeout 420 python3 -m mmcr.cli pretrain cifar10 --out "$OUT/run" --no-progress \
  --set data.name=archive --set data.root="$ARCHIVE" --set model.backbone=resnet18 \
  --set train.time_budget_s=300 --set eval.knn_every_epochs=0 --set train.checkpoint_every_steps=0 \
  2>&1 | tail -n 20 | tee "$OUT/run.txt" || true
cp "$OUT/run/summary.json" "$OUT/summary.json" 2>/dev/null || true
rm -rf "$OUT/run/checkpoints"
