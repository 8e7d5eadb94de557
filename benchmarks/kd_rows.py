"""The README's screening table from benchmarks/kd_table.sh's model folders, so no figure is
copied by hand: one markdown row per recipe folder that has its test score (eval.json).

    python benchmarks/kd_rows.py [RUN_DIR] [--teacher TEACHER] [--twin FOLDER ...]
    (default runs/kd-table, runs/cpu/teacher)

Columns: what the student learnt from (KD loss, transfer set), its size, alpha and T, the
best dev F1 and its test F1, the difference to its gold-only twin and to the teacher, and
the training wall time recorded in the folder. A row's twin is a gold-only folder (alpha 1)
of the same size and epochs: ``gold`` and ``large-gold`` here, or one named with ``--twin``
(the cpu pipeline's 12-epoch ``bilstm-crf`` for the 12-epoch no-transfer rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = ("gold", "kd-labelled-t1", "kd-labelled-t2", "kd-labelled-t4",
         "kd-t1-a0.1", "kd-t1-a0.5", "kd-t1-a0.9", "kd-t2-a0.1", "kd-t2-a0.5", "kd-t2-a0.9",
         "kd-t4-a0.1", "kd-t4-a0.5", "kd-t4-a0.9", "kd-marginal", "kd-both", "kd-viterbi", "kd-pd98",
         "large-gold", "large-marginal")


def shape(params: dict) -> tuple:
    """What makes two BiLSTM-CRFs twins: size and epochs (data, dropout and seed are the table's)."""
    return (params["embedding_dim"], params["hidden_size"], params["lstm_layers"], params["train_config"]["epochs"])


def row(folder: Path, teacher_f1: float, twins: dict[tuple, float]) -> str:
    meta = json.loads((folder / "distill.json").read_text(encoding="utf-8"))["meta"]
    params, training = meta["params"], meta["training"]
    test = json.loads((folder / "eval.json").read_text(encoding="utf-8"))["f1"]
    gold_only = params["alpha"] >= 1
    sources = (meta.get("transfer") or {}).get("sources") or []
    extra = [Path(s).name for s in sources if s != "msra:unlabelled"]  # msra:unlabelled: the plain transfer set
    what = "gold tags only" if gold_only else f"{params['kd']} KD" + (
        (" + transfer" + (f" + {' + '.join(extra)}" if extra else "")) if sources else ", labelled only")
    size = f"{params['embedding_dim']}/{params['hidden_size']}" + (
        f"x{params['lstm_layers']}" if params["lstm_layers"] > 1 else "")
    twin = twins.get(shape(params))
    vs_twin = "—" if gold_only or twin is None else f"{test - twin:+.3f}"
    t = "—" if gold_only else f"{params['temperature']:g}"
    alpha = f"{params['alpha']:g}"
    return (f"| {what} (`{folder.name}`) | {size} | {alpha} | {t} | {training['best_dev_f1']:.3f} | {test:.3f} | "
            f"{vs_twin} | {test - teacher_f1:+.3f} | {round(training['train_seconds'])} s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/kd-table", type=Path)
    ap.add_argument("--teacher", default="runs/cpu/teacher", type=Path)
    ap.add_argument("--twin", action="append", default=[], type=Path, help="another gold-only folder with eval.json")
    args = ap.parse_args()
    teacher_f1 = json.loads((args.teacher / "eval.json").read_text(encoding="utf-8"))["f1"]
    done = [args.run_dir / n for n in ORDER if (args.run_dir / n / "eval.json").exists()]
    twins = {}
    for f in [args.run_dir / "gold", args.run_dir / "large-gold", *args.twin]:
        if (f / "eval.json").exists():
            params = json.loads((f / "distill.json").read_text(encoding="utf-8"))["meta"]["params"]
            if params["alpha"] >= 1:
                twins[shape(params)] = json.loads((f / "eval.json").read_text(encoding="utf-8"))["f1"]
    print(f"teacher ({args.teacher}): test F1 {teacher_f1:.3f}\n")
    print("| recipe | emb/BiLSTM | alpha | T | dev F1 | test F1 | ΔF1 vs gold-only twin | ΔF1 vs teacher | training |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for folder in done:
        print(row(folder, teacher_f1, twins))


if __name__ == "__main__":
    main()
