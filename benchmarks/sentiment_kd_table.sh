#!/usr/bin/env bash
# Issue 16: the sentiment students' alpha and T, chosen on dev. BiLSTM classifiers (the cpu profile's:
# embedding 128, one BiLSTM layer of 2x128, dropout 0.1) learn from the cpu profile's teacher ($TEACHER,
# default runs/sentiment-cpu/teacher: e5-small on 2,000 labelled reviews) on the cpu profile's data: the
# same 2,000 reviews and the other 11,891 training reviews as transfer text, labels dropped.
#   kd-t{1,2,4}-a{0.1,0.5}   logit KD with the transfer set; a screening run of $SCREEN epochs
# Every row is a model folder with eval.json (the 1,736 test reviews); `best` prints the row with the
# highest dev macro-F1, which is what the profile should use. Resumable like kd_table.sh.
#   benchmarks/sentiment_kd_table.sh [RECIPE...]     default: the grid
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/sentiment-kd-table}
TEACHER=${TEACHER:-runs/sentiment-cpu/teacher}
SCREEN=${SCREEN:-5}
C="--dataset sentiment --max-train 2000 --teacher $TEACHER --arch bilstm --transfer sentiment:unlabelled"
source benchmarks/table_lib.sh

recipe() {
  case "$1" in
    kd-t*-a*) t=${1#kd-t}; t=${t%%-a*}; a=${1##*-a}
              $DISTILL student $C --T "$t" --alpha "$a" --epochs "$SCREEN" --out "$RUN/$1" $(resume "$1") ;;
    *) echo "unknown recipe $1" >&2; exit 2 ;;
  esac
}

best() {  # the row with the highest best dev macro-F1
  python3 - "$RUN" <<'PY'
import json, pathlib, sys
rows = [(json.load(open(d / "distill.json"))["meta"]["training"]["best_dev_f1"], d.name)
        for d in pathlib.Path(sys.argv[1]).glob("kd-t*-a*") if (d / "distill.json").exists()]
print(max(rows)[1])
PY
}

run_all ${@:-kd-t1-a0.5 kd-t2-a0.5 kd-t4-a0.5 kd-t1-a0.1 kd-t2-a0.1 kd-t4-a0.1}
echo "best on dev: $(best)"
