"""``distill report RUN_DIR`` for a run of text classifiers: report.md, report.json,
report.csv and plots, measured as :mod:`distill.report` measures taggers.

Every model runs in its own fresh process (``python -m distill.bench --task classify``)
on the same test texts with the same thread count, end to end from text to class
probabilities; the accuracy, macro-F1 and per-class P/R/F1 come from the batched
predictions whose speed is quoted. ΔF1 is the difference in macro-F1; the gold-only twin
of a distilled student is found as for taggers (:func:`distill.report_steps.student_identity`).
The steps are the tagging report's (:func:`distill.report.measure_and_write`); what
differs is :data:`CLASSIFY`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from distill.config import DataConfig
from distill.errors import DistillError
from distill.modeling import META_FILE
from distill.report_steps import (Entry, ReportKind, check_report_args, find_models, measure_and_write,
                                  read_models, resolve_dataset)
from distill.report_render import fmt, markdown_page, per_group_table, render_folder, table_csv

FORMAT = "distill-report-classify/1"
# what a row keeps of a classifier's bench result
ROW_KEYS = ("accuracy", "macro_f1", "f1", "per_class", "parameters", "parameters_note", "latency_ms_median",
            "latency_ms_p90", "latency_ms_mean", "latency_sentences", "throughput", "chars_per_second",
            "peak_rss_mb", "peak_rss_over_baseline_mb", "gpu_peak_mb", "device", "load_seconds", "threads")


def columns(batch_size: int) -> list[tuple[str, str, str]]:
    """(key, Markdown header, formatter) of the main table, in order."""
    return [
        ("name", "model", "text"), ("kind", "kind", "text"), ("accuracy", "accuracy", "f4"),
        ("macro_f1", "macro-F1", "f4"), ("acc_delta", "Δacc vs teacher", "signed"),
        ("f1_delta", "ΔF1 vs teacher", "signed"), ("acc_vs_gold", "Δacc vs no KD", "signed"),
        ("f1_vs_gold", "ΔF1 vs no KD", "signed"), ("labelled", "labelled", "int"), ("transfer", "transfer", "int"),
        ("parameters", "params", "int"), ("size_mb", "size MB", "f2"),
        ("latency_ms_median", "latency ms (median)", "f2"), ("latency_ms_p90", "latency ms (p90)", "f2"),
        ("throughput", f"texts/s @{batch_size}", "f1"), ("speedup_b1", "speedup b1", "x"),
        ("speedup_b32", f"speedup @{batch_size}", "x"), ("peak_rss_mb", "peak RSS MB", "f0"), ("device", "device", "text"),
    ]


def gpu_columns(batch_size: int) -> list[tuple[str, str, str]]:
    return [
        ("name", "model", "text"), ("kind", "kind", "text"), ("accuracy", "accuracy", "f4"),
        ("macro_f1", "macro-F1", "f4"), ("latency_ms_median", "latency ms (median)", "f2"),
        ("latency_ms_p90", "latency ms (p90)", "f2"), ("throughput", f"texts/s @{batch_size}", "f1"),
        ("speedup_b1", "speedup b1", "x"), ("gpu_peak_mb", "GPU peak MB", "f0"), ("device", "device", "text"),
    ]


def _task(info: dict[str, Any]) -> str:
    return (info.get("meta") or {}).get("task") or "tag"


def is_classify_run(run_dir: Path, dataset: dict | None, exclude: Sequence[Path] = ()) -> bool:
    """Whether ``run_dir`` is a run of text classifiers: the dataset names a text dataset, or
    the run's teacher has meta task "classify" (without a teacher: every readable model has)."""
    from distill.textdata import is_text_dataset

    profile = Path(run_dir) / "profile.json"
    if dataset is None and profile.exists():
        try:
            dataset = json.loads(profile.read_text(encoding="utf-8")).get("report_dataset")
        except (OSError, json.JSONDecodeError, AttributeError):
            dataset = None  # the tagging report says what is wrong with it
    if isinstance(dataset, dict) and is_text_dataset(dataset):
        return True
    entries = find_models(run_dir, exclude=exclude)
    teacher = read_models(entries, lambda info: None)
    if teacher is not None:
        return _task(teacher.info) == "classify"
    tasks = {_task(e.info) for e in entries if e.error is None}
    return tasks == {"classify"}


def _recorded_dataset(entries: Sequence[Entry], teacher: Entry | None) -> dict[str, Any] | None:
    """The training data the teacher (else the first classifier) records in its params."""
    for e in ([teacher] if teacher is not None else []) + list(entries):
        if isinstance(e.params.get("dataset"), dict):
            return dict(e.params["dataset"])
    return None


def report_dataset(run_dir: Path, dataset: dict | None, max_test: int | None, recorded: dict | None) -> dict[str, Any]:
    """The test data's kwargs: as given (a test file alone is read beside the models' own training
    data), else the run's profile.json, else what the teacher was trained on."""
    from distill.textdata import is_text_dataset

    if dataset is None and not (Path(run_dir) / "profile.json").exists():
        if recorded is None:
            raise DistillError(f"{run_dir}: no model records its training data; pass --dataset or --test")
        dataset = recorded
    if dataset is not None and not is_text_dataset(dataset):
        # `distill report --test FILE` on a classifier run: the name is the tagging default, not the data
        given = {k: v for k, v in dataset.items() if v is not None and k != "name"}
        base = (recorded or {}) if not given.get("train") else {}  # a test file alone: the models' training data
        dataset = DataConfig.from_json(base).replace(**given, task="classify")
    return resolve_dataset(run_dir, dataset, max_test)


def make_classify_report(*, run_dir: str | Path, out: str | Path | None = None, dataset: dict | None = None,
                         max_test: int | None = None, threads: int | None = None, latency_sentences: int = 500,
                         batch_size: int = 32, warmup: int = 10, gpu: bool | None = None, command: str | None = None,
                         quiet: bool = False) -> dict[str, Any]:
    """Benchmark every classifier folder under ``run_dir``; write the report folder (default RUN_DIR/report).

    ``dataset``: kwargs of :func:`distill.textdata.load_text_dataset` (default: the run's
    profile.json, else the teacher's training data); ``latency_sentences``: test texts timed
    one by one at batch size 1; ``gpu``: also measure on CUDA (default: when available).
    Returns the report as written to report.json.
    """
    from distill.report_steps import _default_command
    from distill.textdata import load_text_dataset

    started = time.time()
    run_dir, out, threads = check_report_args(run_dir, out, threads, latency_sentences, batch_size, warmup)
    entries = find_models(run_dir, exclude=[out])
    if not entries:
        raise DistillError(f"{run_dir}: no model folders (folders with {META_FILE}) found; train one first, e.g. "
                           f"distill teacher train --task classify --out {run_dir / 'teacher'}")
    teacher = read_models(entries, lambda info: None if _task(info) == "classify" else
                          "a tagger, not a text classifier (this is a classification run)")
    dataset = report_dataset(run_dir, dataset, max_test, _recorded_dataset(entries, teacher))
    ds = load_text_dataset(dataset)
    test = ds.test
    if test.labels is None:
        raise DistillError(f"the test set of {ds.name} has no labels; the report needs a labelled test set")
    for e in entries:
        if e.error is None and set(test.labels) - set(e.info["labels"]):
            e.error = f"its labels {e.info['labels']} do not cover the test set's {sorted(set(test.labels))}"
    return measure_and_write(CLASSIFY, run_dir=run_dir, out=out, entries=entries, teacher=teacher, ds=ds,
                             dataset=dataset, threads=threads, latency_sentences=latency_sentences,
                             batch_size=batch_size, warmup=warmup, gpu=gpu, command=command or _default_command(),
                             quiet=quiet, started=started)


def _one_line(r: dict[str, Any]) -> str:
    return (f"accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, {r['latency_ms_median']:.2f} ms/text, "
            f"{r['throughput']:.1f} texts/s, peak RSS {fmt(r.get('peak_rss_mb'), 'f0')} MB")


def _dataset_facts(ds) -> dict[str, Any]:
    test = ds.test
    return {"test_texts": len(test), "test_chars": sum(len(t) for t in test.texts), "train_texts": len(ds.train),
            "labels": list(ds.labels), "train_label_counts": _counts(ds.train.labels, ds.labels),
            "test_label_counts": _counts(test.labels, ds.labels)}


def _counts(labels: Sequence[str] | None, order: Sequence[str]) -> dict[str, int]:
    counts = Counter(labels or [])
    return {l: counts.get(l, 0) for l in order} | {l: n for l, n in counts.items() if l not in order}


def csv_text(report: dict[str, Any]) -> str:
    return table_csv(report, columns(report["method"]["throughput_batch_size"]), report["dataset"]["labels"],
                     "per_class", ("accuracy", "macro_f1"))


CAPTIONS = {"accuracy_vs_latency": "Accuracy vs batch-1 latency (log scale), point area ~ size on disk",
            "f1_vs_latency": "Macro-F1 vs batch-1 latency (log scale), point area ~ size on disk",
            "training_curves": "Training loss and dev macro-F1 per epoch of each trained model",
            "confusion_teacher": "The teacher's class confusion on the test set (rows normalised)",
            "label_distribution": "Class counts in the training data"}


def render(report: dict[str, Any], folder: Path, *, entries, teacher, teacher_pred, ds) -> None:
    """The classification report's :func:`distill.report_render.render_folder`."""
    render_folder(report, folder, entries=entries, teacher=teacher,
                  confusion=None if teacher_pred is None else ([[g] for g in ds.test.labels], [[p] for p in teacher_pred]),
                  metric_plots={"accuracy_vs_latency": dict(metric="accuracy", ylabel="accuracy (test)", title="Accuracy",
                                                            item="text"),
                                "f1_vs_latency": dict(metric="macro_f1", ylabel="macro-F1 (test)", title="Macro-F1",
                                                      item="text")},
                  dev_metric="macro-F1", unit="class", units="classes",
                  train_counts=report["dataset"]["train_label_counts"],
                  train_title=f"classes in the training data ({len(ds.train):,} texts)", count_unit="texts",
                  csv_text=csv_text, markdown=markdown)


def markdown(report: dict[str, Any]) -> str:
    d, how = report["dataset"], report["method"]
    b = how["throughput_batch_size"]
    support = ", ".join(f"{l} {n:,}" for l, n in d["test_label_counts"].items())
    per_class = []
    if report["models"]:
        per_class = ["## Per class", "", f"Texts per class in the test set: {support}.", "",
                     per_group_table(report["models"], d["labels"], "per_class"), ""]
    method = (
        f"Times are end to end, from text to class probabilities: tokenization, batching, the model and the softmax "
        f"are included. After {how['warmup']} warm-up texts and one warm-up batch, **latency** is timed text by text "
        f"at batch size 1 over {how['latency_sentences']:,} test texts spread evenly over the test set (median and "
        f"90th percentile); **throughput** is all {d['test_texts']:,} test texts at batch size {b}, and the "
        f"accuracy, macro-F1 (the unweighted mean of the classes' F1) and per-class precision/recall/F1 come from "
        f"those same predictions (the argmax class). **ΔF1** is the difference in macro-F1 and **Δacc** in accuracy, "
        f"against the teacher and against the same student trained on the gold labels alone (same architecture, "
        f"size, data and schedule; n/a without one). **Speedups** are the teacher's median latency over the model's "
        f"(b1) and the model's throughput over the teacher's (@{b}).")
    return markdown_page(report, title="distill comparison report: text classification",
                         bench="python -m distill.bench --task classify", method=method,
                         test_set=f"{d['test_texts']:,} texts, {d['test_chars']:,} characters (fingerprint "
                                  f"`{d['test_fingerprint']}`); classes in the test set: {support}",
                         columns=columns(b), per_group=per_class, gpu_columns=gpu_columns(b), captions=CAPTIONS)


CLASSIFY = ReportKind(head={"format": FORMAT, "task": "classify"}, bench_args=("--task", "classify"),
                      row_keys=ROW_KEYS, deltas=(("acc", "accuracy"),),
                      test_json=lambda test: {"texts": test.texts, "labels": test.labels},
                      dataset_facts=_dataset_facts, one_line=_one_line, render=render)
