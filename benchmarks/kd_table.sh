#!/usr/bin/env bash
# Issue 15: which distillation recipe pays, chosen on dev. Students learn from the cpu profile's
# teacher ($TEACHER, default runs/cpu/teacher: e5-small, 8,000 MSRA sentences) on the cpu profile's
# data: 8,000 labelled sentences and the other ~40,000 train sentences as transfer text (2 per
# labelled sentence each epoch). Rows (small BiLSTM-CRF: emb 128, BiLSTM 256, dropout 0.1):
#   kd-t{1,2,4}-a{0.1,0.5,0.9}   emission KD with the transfer set; a screening run of $SCREEN epochs
#   kd-{marginal,both,viterbi}   the other KD losses with the transfer set at the grid's best T/alpha
#   kd-labelled-t{1,2,4}         emission KD without the transfer set (alpha 0.5, 12 epochs)
#   gold                         the gold-only twin of the screening runs (alpha 1, $SCREEN epochs)
#   large-gold, large-marginal   the large BiLSTM-CRF ($LARGE: the largest that trains in about 30 minutes
#                                on the cpu profile's data, measured with --max-steps probes) gold-only and
#                                with marginal KD + transfer at the grid's best T/alpha
#   kd-pd98                      marginal KD at the grid's best T/alpha with outside news text added to the
#                                transfer set: People's Daily, January 1998 ($PD98, benchmarks/people_daily.py)
# Every row is a model folder with eval.json (full 5,000-sentence test, as `distill predict` writes
# it); `best` prints the grid row with the highest dev F1. Resumable like teacher_table.sh.
#   benchmarks/kd_table.sh [RECIPE...]     default: the grid, then the other losses, then no transfer
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/kd-table}
TEACHER=${TEACHER:-runs/cpu/teacher}
SCREEN=${SCREEN:-6}
C="--max-train 8000 --max-dev 1000 --teacher $TEACHER --arch bilstm-crf"
TRANSFER="--transfer msra:unlabelled --transfer-ratio 2"
PD98=${PD98:-runs/people-daily-199801.txt}
# per 150 steps with the transfer set, one core: emb 200/BiLSTM 400 31 s, 300/600 54 s, 300/600 x2 layers 124 s,
# 300/1200 x2 319 s (the small one: about 20 s at its 10,000 words/s); 300/600 is the largest whose 6 screening epochs fit in ~30 min
LARGE="--embedding-dim 300 --hidden-size 600"
source benchmarks/table_lib.sh

best() {  # the grid row (kd-t*-a*) with the highest best dev F1
  python3 - "$RUN" <<'PY'
import json, pathlib, sys
rows = []
for d in pathlib.Path(sys.argv[1]).glob("kd-t*-a*"):
    if (d / "distill.json").exists():
        rows.append((json.load(open(d / "distill.json"))["meta"]["training"]["best_dev_f1"], d.name))
print(max(rows)[1])
PY
}
best_settings() {  # --T and --alpha of the best grid row
  local name; name=$(best); name=${name#kd-t}
  echo "--T ${name%%-a*} --alpha ${name##*-a}"
}

recipe() {
  case "$1" in
    kd-t*-a*)        t=${1#kd-t}; t=${t%%-a*}; a=${1##*-a}
                     $DISTILL student $C $TRANSFER --T "$t" --alpha "$a" --epochs "$SCREEN" --out "$RUN/$1" $(resume "$1") ;;
    kd-marginal|kd-both|kd-viterbi)
                     $DISTILL student $C $TRANSFER $(best_settings) --kd "${1#kd-}" --epochs "$SCREEN" --out "$RUN/$1" $(resume "$1") ;;
    gold)            $DISTILL student $C --alpha 1 --epochs "$SCREEN" --out "$RUN/$1" $(resume "$1") ;;
    large-gold)      $DISTILL student $C $LARGE --alpha 1 --epochs "$SCREEN" --out "$RUN/$1" $(resume "$1") ;;
    large-marginal)  $DISTILL student $C $LARGE $TRANSFER $(best_settings) --kd marginal --epochs "$SCREEN" \
                       --out "$RUN/$1" $(resume "$1") ;;
    kd-pd98)         [[ -f "$PD98" ]] || python benchmarks/people_daily.py "$PD98"
                     $DISTILL student $C $TRANSFER --transfer "$PD98" $(best_settings) --kd marginal --epochs "$SCREEN" --out "$RUN/$1" $(resume "$1") ;;
    kd-labelled-t*)  $DISTILL student $C --T "${1#kd-labelled-t}" --alpha 0.5 --epochs 12 --out "$RUN/$1" $(resume "$1") ;;
    *) echo "unknown recipe $1" >&2; exit 2 ;;
  esac
}

GRID="kd-t1-a0.5 kd-t1-a0.1 kd-t1-a0.9 kd-t2-a0.1 kd-t2-a0.5 kd-t2-a0.9 kd-t4-a0.1 kd-t4-a0.5 kd-t4-a0.9"
run_all ${@:-$GRID kd-marginal kd-both kd-viterbi kd-labelled-t1 kd-labelled-t2 kd-labelled-t4}
echo "best on dev: $(best)"
