"""``distill report RUN_DIR``: benchmark every model folder under a run on one test set
and write report.md, report.json, report.csv and plots.

This module is the command's entry point and what the tagging report does its own way
(:data:`TAGGING`: its columns, rows and page). The classification report
(:mod:`distill.report_classify`) takes the same steps, in :mod:`distill.report_steps`
(finding, measuring and assembling, each model in a fresh process); the pages and plots
are written by :mod:`distill.report_render`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from distill.errors import DistillError
from distill.modeling import META_FILE
from distill.report_render import fmt, markdown_page, per_group_table, render_folder, table_csv
from distill.report_steps import (ReportKind, _default_command, check_report_args, find_models, measure_and_write,
                                  read_models, resolve_dataset)

FORMAT = "distill-report/1"
# (key, Markdown header, formatter name) of the main table, in order
COLUMNS = [
    ("name", "model", "text"), ("kind", "kind", "text"), ("precision", "P", "f4"), ("recall", "R", "f4"),
    ("f1", "F1", "f4"), ("f1_delta", "ΔF1 vs teacher", "signed"), ("f1_vs_gold", "ΔF1 vs no KD", "signed"),
    ("labelled", "labelled", "int"), ("transfer", "transfer", "int"), ("parameters", "params", "int"),
    ("size_mb", "size MB", "f2"), ("latency_ms_median", "latency ms (median)", "f2"),
    ("latency_ms_p90", "latency ms (p90)", "f2"), ("throughput", "sent/s @32", "f1"),
    ("speedup_b1", "speedup b1", "x"), ("speedup_b32", "speedup @32", "x"), ("peak_rss_mb", "peak RSS MB", "f0"),
    ("device", "device", "text"),
]
GPU_COLUMNS = [
    ("name", "model", "text"), ("kind", "kind", "text"), ("f1", "F1", "f4"),
    ("latency_ms_median", "latency ms (median)", "f2"), ("latency_ms_p90", "latency ms (p90)", "f2"),
    ("throughput", "sent/s @32", "f1"), ("speedup_b1", "speedup b1", "x"), ("gpu_peak_mb", "GPU peak MB", "f0"),
    ("device", "device", "text"),
]
# what a row keeps of a tagger's bench result
ROW_KEYS = ("precision", "recall", "f1", "support", "per_type", "parameters", "parameters_note", "latency_ms_median",
            "latency_ms_p90", "latency_ms_mean", "latency_sentences", "throughput", "tokens_per_second",
            "peak_rss_mb", "peak_rss_over_baseline_mb", "gpu_peak_mb", "device", "load_seconds", "threads")


def make_report(*, run_dir: str | Path, out: str | Path | None = None, dataset: dict | None = None,
                max_test: int | None = None, threads: int | None = None, latency_sentences: int = 500,
                batch_size: int = 32, warmup: int = 10, gpu: bool | None = None, command: str | None = None,
                quiet: bool = False) -> dict[str, Any]:
    """Benchmark every model folder under ``run_dir`` and write the report folder (default RUN_DIR/report).

    ``dataset``: kwargs of :func:`distill.data.load_dataset` (default: the run's
    profile.json, else msra); ``gpu``: also measure on CUDA (default: when available).
    Returns the report as written to report.json. A run of text classifiers (the teacher's
    meta task "classify") gets :func:`distill.report_classify.make_classify_report` instead.
    """
    from distill.data import load_dataset
    from distill.report_classify import is_classify_run, make_classify_report

    started = time.time()
    run_dir, out, threads = check_report_args(run_dir, out, threads, latency_sentences, batch_size, warmup)
    settings = dict(threads=threads, latency_sentences=latency_sentences, batch_size=batch_size, warmup=warmup,
                    gpu=gpu, command=command or _default_command(), quiet=quiet)
    if is_classify_run(run_dir, dataset, exclude=[out]):  # a run of text classifiers: its own report
        return make_classify_report(run_dir=run_dir, out=out, dataset=dataset, max_test=max_test, **settings)
    entries = find_models(run_dir, exclude=[out])
    if not entries:
        raise DistillError(f"{run_dir}: no model folders (folders with {META_FILE}) found; "
                           f"train one first, e.g. distill teacher train --out {run_dir / 'teacher'}")
    dataset = resolve_dataset(run_dir, dataset, max_test)
    ds = load_dataset(**dataset)
    if not ds.test.tags:
        raise DistillError(f"the test set of {ds.name} has no tags; the report needs a labelled test set")
    types = set(ds.test.entity_types())

    def check(info: dict[str, Any]) -> str | None:
        if types - {l[2:] for l in info["labels"] if l != "O"}:
            return f"its labels {info['labels']} do not cover the test set's types {sorted(types)}"
        return None

    teacher = read_models(entries, check)
    return measure_and_write(TAGGING, run_dir=run_dir, out=out, entries=entries, teacher=teacher, ds=ds,
                             dataset=dataset, started=started, **settings)


def _one_line(r: dict[str, Any]) -> str:
    return (f"F1 {r['f1']:.4f}, {r['latency_ms_median']:.2f} ms/sentence, {r['throughput']:.1f} sentences/s, "
            f"peak RSS {fmt(r.get('peak_rss_mb'), 'f0')} MB")


def _dataset_facts(ds) -> dict[str, Any]:
    test = ds.test
    return {"test_sentences": len(test), "test_tokens": test.n_tokens(), "train_sentences": len(ds.train),
            "entity_types": test.entity_types(), "train_tag_counts": tag_counts(ds.train.tags, ds.labels),
            "test_tag_counts": tag_counts(test.tags, ds.labels)}


def csv_text(report: dict[str, Any]) -> str:
    return table_csv(report, COLUMNS, report["dataset"]["entity_types"], "per_type", ("f1",))


def tag_counts(tags: Sequence[Sequence[str]], labels: Sequence[str]) -> dict[str, int]:
    counts = {l: 0 for l in labels}
    for row in tags:
        for t in row:
            counts[t] = counts.get(t, 0) + 1
    return counts


def render(report: dict[str, Any], folder: Path, *, entries, teacher, teacher_pred, ds) -> None:
    """The tagging report's :func:`render_folder`."""
    render_folder(report, folder, entries=entries, teacher=teacher,
                  confusion=None if teacher_pred is None else (ds.test.tags, teacher_pred),
                  metric_plots={"f1_vs_latency": {}}, dev_metric="entity F1", unit="tag", units="tags",
                  train_counts=report["dataset"]["train_tag_counts"],
                  train_title=f"tags in the training data ({len(ds.train):,} sentences)", count_unit="tokens",
                  csv_text=csv_text, markdown=markdown)


CAPTIONS = {"f1_vs_latency": "F1 vs batch-1 latency (log scale), point area ~ size on disk",
            "training_curves": "Training loss and dev F1 per epoch of each trained model",
            "confusion_teacher": "The teacher's tag confusion on the test set (rows normalised)",
            "label_distribution": "Tag counts in the training data"}


def markdown(report: dict[str, Any]) -> str:
    d, how = report["dataset"], report["method"]
    types = d["entity_types"]
    per_type = []
    if report["models"] and types:
        support = ", ".join(f"{t} {d['test_tag_counts'].get('B-' + t, 0):,}" for t in types)
        per_type = ["## Per entity type", "", f"Entities in the test set: {support}.", "",
                    per_group_table(report["models"], types, "per_type"), ""]
    method = (
        f"Times are end to end, from tokens to tags: tokenization, batching, the model and CRF decoding are included. "
        f"After {how['warmup']} warm-up sentences and one warm-up batch, **latency** is timed sentence by sentence "
        f"at batch size 1 over {how['latency_sentences']:,} test sentences spread evenly over the test set (median "
        f"and 90th percentile); **throughput** is all {d['test_sentences']:,} test sentences at batch size "
        f"{how['throughput_batch_size']} (length-bucketed), and the precision/recall/F1 come from those same "
        f"predictions (entity level, seqeval strict IOB2, micro average). **Speedups** are the teacher's median "
        f"latency over the model's (b1) and the model's throughput over the teacher's (@32).")
    return markdown_page(report, title="distill comparison report", bench="python -m distill.bench", method=method,
                         test_set=f"{d['test_sentences']:,} sentences, {d['test_tokens']:,} tokens "
                                  f"(fingerprint `{d['test_fingerprint']}`)",
                         columns=COLUMNS, per_group=per_type, gpu_columns=GPU_COLUMNS, captions=CAPTIONS)


TAGGING = ReportKind(head={"format": FORMAT}, bench_args=(), row_keys=ROW_KEYS, deltas=(),
                     test_json=lambda test: {"tokens": test.tokens, "tags": test.tags},
                     dataset_facts=_dataset_facts, one_line=_one_line, render=render)
