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


def delta(key: str):
    """A column of signed differences; the teacher's own row and a model without a twin show a dash."""
    return lambda name, m: "—" if name == "teacher" or m.get(key) is None else f"{m[key]:+.3f}"


def common(units: str):
    """The columns both tasks share after their scores."""
    return [(f"transfer {units}", lambda n, m: f"{m['transfer']:,}"), ("params", lambda n, m: params(m["parameters"])),
            ("size MB", lambda n, m: f"{m['size_mb']:.1f}"),
            ("latency ms", lambda n, m: latency(m["latency_ms_median"]))]


TAG_COLUMNS = [("F1", lambda n, m: f"{m['f1']:.3f}"), ("ΔF1 vs teacher", delta("f1_delta")),
               ("ΔF1 vs no KD", delta("f1_vs_gold")), *common("sentences"),
               ("speedup", lambda n, m: f"{m['speedup_b1']:.1f}x"), ("sent/s @32", lambda n, m: f"{round(m['throughput'])}"),
               ("peak RSS MB", lambda n, m: f"{round(m['peak_rss_mb'])}")]
# text classification: accuracy first (the measure), macro-F1 beside it, deltas in accuracy
CLASSIFY_COLUMNS = [("accuracy", lambda n, m: f"{m['accuracy']:.3f}"), ("macro-F1", lambda n, m: f"{m['macro_f1']:.3f}"),
                    ("Δacc vs teacher", delta("acc_delta")), ("Δacc vs no KD", delta("acc_vs_gold")), *common("texts"),
                    ("speedup b1", lambda n, m: f"{m['speedup_b1']:.1f}x"),
                    ("texts/s @32", lambda n, m: f"{round(m['throughput'])}"),
                    ("peak RSS MB", lambda n, m: f"{round(m['peak_rss_mb'])}")]


def table(models: dict, labels: dict, columns: list) -> None:
    """One row per model, the labelled ones first in ``labels``' order."""
    print("| model | " + " | ".join(header for header, _ in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name in list(labels) + sorted(set(models) - set(labels)):
        if name in models:
            cells = [cell(name, models[name]) for _, cell in columns]
            print(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "reports/msra-cpu/report.json"
    report = json.load(open(path, encoding="utf-8"))
    models = {m["name"]: m for m in report["models"]}
    if report.get("task") == "classify":
        table(models, CLASSIFY_LABELS, CLASSIFY_COLUMNS)
    else:
        table(models, LABELS, TAG_COLUMNS)


if __name__ == "__main__":
    main()
