#!/usr/bin/env bash
# Issue 14: which of the teacher's 12 layers a 3-layer bert-small student starts from, chosen on dev.
# Each row is a gold-only student (alpha 1, so the teacher's layers are the only thing it takes
# from the teacher) cut from the cpu profile's teacher ($TEACHER, default runs/cpu/teacher: e5-small,
# 8,000 MSRA sentences), trained one epoch on the same 8,000 sentences, dev 1,000; test F1 (full
# 5,000-sentence test set) is printed beside dev for the record, not for choosing.
#   benchmarks/bert_small_layers.sh [LAYERS...]     default: 0,4,8 0,1,2 3,7,11 0,5,11
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/bert-small-layers}
TEACHER=${TEACHER:-runs/cpu/teacher}
EPOCHS=${EPOCHS:-1}
source benchmarks/table_lib.sh

recipe() {  # recipe l0-4-8
  local layers=${1#l}
  $DISTILL student --arch bert-small --teacher "$TEACHER" --alpha 1 --layers "${layers//-/,}" --epochs "$EPOCHS" \
    --max-train 8000 --max-dev 1000 --out "$RUN/$1" $(resume "$1")
}

sets=("${@:-0,4,8 0,1,2 3,7,11 0,5,11}")
names=()
for s in ${sets[@]}; do names+=("l${s//,/-}"); done
run_all "${names[@]}"
