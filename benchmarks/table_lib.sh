# Shared by the table scripts (teacher_table.sh, kd_table.sh, sentiment_kd_table.sh): each recipe is a model folder under
# $RUN with eval.json (the test set's scores as `distill eval` writes them: entity-level F1 for a tagger,
# accuracy and macro-F1 for a classifier);
# a recipe whose eval.json exists is skipped, so a script resumes; wall times go to $RUN/times.tsv.
DISTILL=${DISTILL:-distill}
mkdir -p "$RUN"

resume() { [[ -f "$RUN/$1.work/checkpoint.pt" ]] && echo --resume || true; }
done_() { [[ -f "$RUN/$1/eval.json" ]]; }
evaluate() {
  $DISTILL eval "$RUN/$1" > /dev/null
  python3 - "$RUN/$1" "$1" <<'PY'
import json, sys
folder, name = sys.argv[1], sys.argv[2]
test = json.load(open(f"{folder}/eval.json"))
info = json.load(open(f"{folder}/distill.json"))
t = info.get("meta", {}).get("training", {})
accuracy = f"\ttest accuracy {test['accuracy']:.4f}" if "accuracy" in test else ""  # a classifier's
print(f"{name}\tdev F1 {t.get('best_dev_f1', float('nan')):.4f} (epoch {t.get('best_epoch')})\ttest F1 {test['f1']:.4f}"
      f"{accuracy}\t{t.get('train_seconds')} s training, {t.get('tokens_per_second')} words/s")
PY
}
run_all() {  # run_all RECIPE...: train what is missing, then print every row
  for one in "$@"; do
    if ! done_ "$one"; then
      start=$(date +%s)
      recipe "$one"
      echo -e "$one\t$(( $(date +%s) - start ))s" >> "$RUN/times.tsv"
    fi
    evaluate "$one"
  done
}
