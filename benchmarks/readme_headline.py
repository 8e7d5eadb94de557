"""README's headline tables, rendered from a committed report (default reports/msra-cpu/report.json;
a text-classification report such as reports/sentiment-cpu/report.json gets its own columns)
so the figures are the report's and nobody copies them by hand.

    python benchmarks/readme_headline.py [REPORT_JSON]
"""

from __future__ import annotations

import json
import sys

LABELS = {
    "teacher": "teacher (e5-small CRF, 12 layers)",
    "teacher-int8": "teacher, torch int8",
    "teacher-onnx-int8": "teacher, ONNX int8 (Viterbi in graph)",
    "teacher-heads50": "teacher, 50% heads pruned",
    "teacher-prune50": "teacher, 50% magnitude pruned",
    "bert-small": "bert-small (3 layers), no KD",
    "bert-small-kd": "bert-small, KD + transfer",
    "bert-small-kd-int8": "bert-small, KD + transfer, torch int8",
    "bert-small-kd-onnx-int8": "bert-small, KD + transfer, ONNX int8",
    "bilstm-crf": "BiLSTM-CRF, no KD",
    "bilstm-crf-kd-labelled": "BiLSTM-CRF, KD on the labelled sentences only",
    "bilstm-crf-kd": "BiLSTM-CRF, KD + transfer",
    "bilstm-crf-kd-int8": "BiLSTM-CRF, KD + transfer, torch int8",
    "bilstm-crf-kd-onnx-int8": "BiLSTM-CRF, KD + transfer, ONNX int8",
}


CLASSIFY_LABELS = {
    "teacher": "teacher (e5-small, 12 layers)",
    "teacher-int8": "teacher, torch int8",
    "teacher-onnx": "teacher, ONNX fp32",
    "teacher-onnx-int8": "teacher, ONNX int8",
    "bert-small": "bert-small (3 layers), no KD",
    "bert-small-kd": "bert-small, KD",
    "bert-small-kd-int8": "bert-small, KD, torch int8",
    "bert-small-kd-onnx": "bert-small, KD, ONNX fp32",
    "bert-small-kd-onnx-int8": "bert-small, KD, ONNX int8",
    "bilstm": "BiLSTM, no KD",
    "bilstm-kd-labelled": "BiLSTM, KD on the labelled reviews only",
    "bilstm-kd": "BiLSTM, KD",
    "bilstm-kd-int8": "BiLSTM, KD, torch int8",
    "bilstm-kd-onnx": "BiLSTM, KD, ONNX fp32",
    "bilstm-kd-onnx-int8": "BiLSTM, KD, ONNX int8",
}


def params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n < 1e6 * 10 else f"{n / 1e6:.1f}M"


def latency(ms: float) -> str:
    return f"{ms:.2f}" if ms < 1 else f"{ms:.1f}"


def classify_table(models: dict) -> None:
    """Accuracy first (the issue's measure), macro-F1 beside it; deltas in accuracy."""
    print("| model | accuracy | macro-F1 | Δacc vs teacher | Δacc vs no KD | transfer texts | params | size MB "
          "| latency ms | speedup b1 | texts/s @32 | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in list(CLASSIFY_LABELS) + sorted(set(models) - set(CLASSIFY_LABELS)):
        if name not in models:
            continue
        m = models[name]
        delta = "—" if name == "teacher" else f"{m['acc_delta']:+.3f}"
        vs_gold = "—" if m.get("acc_vs_gold") is None else f"{m['acc_vs_gold']:+.3f}"
        print(f"| {CLASSIFY_LABELS.get(name, name)} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {delta} | {vs_gold} | "
              f"{m['transfer']:,} | {params(m['parameters'])} | {m['size_mb']:.1f} | {latency(m['latency_ms_median'])} | "
              f"{m['speedup_b1']:.1f}x | {round(m['throughput'])} | {round(m['peak_rss_mb'])} |")


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "reports/msra-cpu/report.json"
    report = json.load(open(path, encoding="utf-8"))
    models = {m["name"]: m for m in report["models"]}
    if report.get("task") == "classify":
        classify_table(models)
        return
    print("| model | F1 | ΔF1 vs teacher | ΔF1 vs no KD | transfer sentences | params | size MB | latency ms "
          "| speedup | sent/s @32 | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in list(LABELS) + sorted(set(models) - set(LABELS)):
        if name not in models:
            continue
        m = models[name]
        delta = "—" if name == "teacher" else f"{m['f1_delta']:+.3f}"
        vs_gold = "—" if m.get("f1_vs_gold") is None else f"{m['f1_vs_gold']:+.3f}"
        print(f"| {LABELS.get(name, name)} | {m['f1']:.3f} | {delta} | {vs_gold} | {m['transfer']:,} | "
              f"{params(m['parameters'])} | {m['size_mb']:.1f} | {latency(m['latency_ms_median'])} | "
              f"{m['speedup_b1']:.1f}x | {round(m['throughput'])} | {round(m['peak_rss_mb'])} |")


if __name__ == "__main__":
    main()
