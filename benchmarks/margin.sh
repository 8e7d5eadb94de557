#!/usr/bin/env bash
# Issue 6: how far the default teacher (MiniLM-L6 + extended vocabulary) beats a BiLSTM-CRF
# trained on the same full MSRA data, with and without language-adaptive MLM pretraining
# (`distill teacher adapt`). Every result is a model folder with eval.json (entity-level F1 on
# the full 5,000-sentence MSRA test set). Runs on a GPU when there is one (minutes), else on
# the CPU (hours). Each recipe is skipped when its eval.json exists, so the script resumes.
#   benchmarks/margin.sh [RECIPE...]    default: the full-data recipes, in the order below
#   benchmarks/margin.sh bilstm-8k-d01 teacher-adapt-8k    the cpu profile's scale (baseline: runs/cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/margin}
DISTILL=${DISTILL:-distill}
CPU8K="--max-train 8000 --max-dev 1000"
mkdir -p "$RUN"

resume() { [[ -f "$RUN/$1.work/checkpoint.pt" ]] && echo --resume || true; }  # continue a cut-off run
done_() { [[ -f "$RUN/$1/eval.json" ]]; }
evaluate() { $DISTILL eval "$RUN/$1" > /dev/null; python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'test F1', m.get('f1'))" "$RUN/$1/eval.json" "$1"; }

recipe() {
  case "$1" in
    bilstm)  # the baseline: BiLSTM-CRF on gold tags, student defaults (dropout 0.5), 10 epochs
      $DISTILL student --arch bilstm-crf --alpha 1 --epochs 10 --out "$RUN/bilstm" $(resume bilstm) ;;
    bilstm-d01)  # the same with dropout 0.1
      $DISTILL student --arch bilstm-crf --alpha 1 --epochs 10 --dropout 0.1 --out "$RUN/bilstm-d01" $(resume bilstm-d01) ;;
    teacher-e3)  # the default recipe, no adaptation, 3 epochs
      $DISTILL teacher train --epochs 3 --out "$RUN/teacher-e3" $(resume teacher-e3) ;;
    teacher-bilstm-e3)  # bilstm-crf head
      $DISTILL teacher train --epochs 3 --head bilstm-crf --out "$RUN/teacher-bilstm-e3" $(resume teacher-bilstm-e3) ;;
    adapted)  # one pass of MLM over the MSRA train text; embeddings and MLM head alone for the first 300 steps
      [[ -f "$RUN/adapted/adapt.json" ]] || $DISTILL teacher adapt --epochs 1 --embeddings-only-steps 300 --out "$RUN/adapted" $(resume adapted)
      return ;;
    adapted3)  # three passes
      [[ -f "$RUN/adapted3/adapt.json" ]] || $DISTILL teacher adapt --epochs 3 --embeddings-only-steps 300 --out "$RUN/adapted3" $(resume adapted3)
      return ;;
    teacher-adapt-e3)
      recipe adapted; $DISTILL teacher train --epochs 3 --backbone "$RUN/adapted" --out "$RUN/teacher-adapt-e3" $(resume teacher-adapt-e3) ;;
    teacher-adapt3-e3)
      recipe adapted3; $DISTILL teacher train --epochs 3 --backbone "$RUN/adapted3" --out "$RUN/teacher-adapt3-e3" $(resume teacher-adapt3-e3) ;;
    # the cpu profile's scale (8,000 train / 1,000 dev sentences), for the 2-core CPU; not in the default list
    bilstm-8k-d01)
      $DISTILL student --arch bilstm-crf --alpha 1 --epochs 12 --dropout 0.1 $CPU8K --out "$RUN/bilstm-8k-d01" $(resume bilstm-8k-d01) ;;
    adapted-8k)
      [[ -f "$RUN/adapted-8k/adapt.json" ]] || $DISTILL teacher adapt --max-train 8000 --epochs 3 --embeddings-only-steps 100 --out "$RUN/adapted-8k" $(resume adapted-8k)
      return ;;
    teacher-adapt-8k)
      recipe adapted-8k; $DISTILL teacher train --epochs 2 $CPU8K --backbone "$RUN/adapted-8k" --out "$RUN/teacher-adapt-8k" $(resume teacher-adapt-8k) ;;
    *) echo "unknown recipe $1" >&2; exit 2 ;;
  esac
}

for r in "${@:-bilstm bilstm-d01 teacher-e3 teacher-adapt-e3 teacher-bilstm-e3 teacher-adapt3-e3}"; do
  for one in $r; do
    if [[ $one == adapted* ]]; then recipe "$one"; continue; fi
    done_ "$one" || { recipe "$one"; evaluate "$one"; }
  done
done
