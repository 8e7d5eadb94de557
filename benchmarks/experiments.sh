#!/usr/bin/env bash
# The experiments quoted in the closing notes and README, beyond the pipeline's own report.
# Run after `distill run runs/demo --profile quick` and `distill run runs/cpu --profile cpu`
# (they provide the teachers, emissions and the matching baselines). Each result is a model
# folder with eval.json (entity-level F1 on the full 5,000-sentence MSRA test set).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/experiments}
mkdir -p "$OUT"
QUICK="--max-train 2000 --max-dev 200"
CPU="--max-train 8000 --max-dev 1000"

# Teacher ablations on the quick profile's data and settings (baseline: runs/demo/teacher).
distill teacher train --out "$OUT/teacher-no-vocab-ext" --no-extend-vocab --epochs 2 $QUICK
distill teacher train --out "$OUT/teacher-softmax" --head softmax --epochs 2 $QUICK
for m in runs/demo/teacher "$OUT/teacher-no-vocab-ext" "$OUT/teacher-softmax"; do distill eval "$m"; done

# Structure-level (marginal) KD for the BiLSTM student on the cpu profile's data
# (baselines: runs/cpu/bilstm-crf and runs/cpu/bilstm-crf-kd).
distill student --arch bilstm-crf --teacher runs/cpu/teacher --kd marginal --epochs 12 $CPU --out "$OUT/bilstm-marginal"
distill eval "$OUT/bilstm-marginal"

# A small alpha x T sweep of emission KD for the BiLSTM student on the quick data.
for alpha in 0.1 0.5 0.9; do
  for T in 1 4; do
    distill student --arch bilstm-crf --teacher runs/demo/teacher --alpha $alpha --T $T --epochs 8 $QUICK \
      --out "$OUT/sweep-a$alpha-T$T"
    distill eval "$OUT/sweep-a$alpha-T$T"
  done
done
