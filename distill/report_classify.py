"""``distill report RUN_DIR`` for a run of text classifiers: report.md, report.json,
report.csv and plots, measured as :mod:`distill.report` measures taggers.

Every model runs in its own fresh process (``python -m distill.bench --task classify``)
on the same test texts with the same thread count, end to end from text to class
probabilities; the accuracy, macro-F1 and per-class P/R/F1 come from the batched
predictions whose speed is quoted. ΔF1 is the difference in macro-F1; the gold-only twin
of a distilled student is found as for taggers (:func:`distill.report.student_identity`).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from distill.errors import DistillError
from distill.modeling import META_FILE, read_meta
from distill.report import (Entry, _compare, check_report_args, find_models, fmt, md_table, pick_teacher,
                            resolve_dataset, student_identity, training_logs)

FORMAT = "distill-report-classify/1"


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
    for e in entries:
        try:
            e.info = read_meta(e.folder)
        except DistillError:
            e.error = "unreadable"
    teacher = pick_teacher(entries)
    if teacher is not None:
        return _task(teacher.info) == "classify"
    tasks = {_task(e.info) for e in entries if e.error is None}
    return tasks == {"classify"}


def _recorded_dataset(entries: Sequence[Entry], teacher: Entry | None) -> dict[str, Any] | None:
    """The training data the teacher (else the first classifier) records in its params."""
    for e in ([teacher] if teacher is not None else []) + list(entries):
        params = (e.meta.get("source_params") if e.meta.get("source_kind") else e.meta.get("params")) or {}
        if isinstance(params.get("dataset"), dict):
            return dict(params["dataset"])
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
        dataset = {**(recorded or {}), **given, "task": "classify"} if not given.get("train") else {**given, "task": "classify"}
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
    from distill.bench import run_child, size_on_disk_mb
    from distill.fileio import atomic_dir, write_json
    from distill.report import _default_command
    from distill.textdata import load_text_dataset

    started = time.time()
    run_dir, out, threads = check_report_args(run_dir, out, threads, latency_sentences, batch_size, warmup)
    entries = find_models(run_dir, exclude=[out])
    if not entries:
        raise DistillError(f"{run_dir}: no model folders (folders with {META_FILE}) found; train one first, e.g. "
                           f"distill teacher train --task classify --out {run_dir / 'teacher'}")
    for e in entries:
        try:
            e.info = read_meta(e.folder)
        except DistillError as err:
            e.error = str(err)
            continue
        if _task(e.info) != "classify":
            e.error = "a tagger, not a text classifier (this is a classification run)"
    entries.sort(key=lambda e: e.name)
    teacher = pick_teacher(entries)
    if teacher is not None:
        entries.remove(teacher)
        entries.insert(0, teacher)
    dataset = report_dataset(run_dir, dataset, max_test, _recorded_dataset(entries, teacher))
    ds = load_text_dataset(dataset)
    test = ds.test
    if test.labels is None:
        raise DistillError(f"the test set of {ds.name} has no labels; the report needs a labelled test set")
    for e in entries:
        if e.error is None and set(test.labels) - set(e.info["labels"]):
            e.error = f"its labels {e.info['labels']} do not cover the test set's {sorted(set(test.labels))}"
    import torch

    use_gpu = torch.cuda.is_available() if gpu is None else gpu
    if use_gpu and not torch.cuda.is_available():
        raise DistillError("--gpu given but CUDA is not available on this machine")

    from distill.progress import progress_bar

    with tempfile.TemporaryDirectory(prefix="distill-report-") as scratch:
        test_file = Path(scratch) / "test.json"
        test_file.write_text(json.dumps({"texts": test.texts, "labels": test.labels}, ensure_ascii=False), encoding="utf-8")
        common = ["--test", str(test_file), "--task", "classify", "--threads", str(threads),
                  "--latency-sentences", str(latency_sentences), "--batch-size", str(batch_size), "--warmup", str(warmup)]
        baseline, baseline_mb = run_child(["--baseline", "--task", "classify", "--test", str(test_file),
                                           "--threads", str(threads)], threads, True)
        if "error" in baseline:
            raise DistillError(f"the benchmark process does not start: {baseline['error']}")
        teacher_pred = None
        todo = [e for e in entries if e.error is None]
        with progress_bar(disable=quiet) as bar:
            task = bar.add_task("benchmarking", total=len(todo) * (2 if use_gpu else 1))
            for e in todo:
                for device in ["cpu", "cuda"] if use_gpu else ["cpu"]:
                    bar.update(task, description=f"{e.name} ({device})")
                    args = [str(e.folder), *common, "--device", device]
                    pred_file = Path(scratch) / "teacher_pred.json"
                    if e is teacher and device == "cpu":
                        args += ["--predictions", str(pred_file)]
                    result, peak_mb = run_child(args, threads, hide_gpu=device == "cpu")
                    if "error" not in result and "skipped" not in result:
                        result["peak_rss_mb"] = peak_mb
                        result["peak_rss_over_baseline_mb"] = None if None in (peak_mb, baseline_mb) else peak_mb - baseline_mb
                    setattr(e, device if device == "cpu" else "gpu", result)
                    if e is teacher and device == "cpu" and pred_file.exists():
                        teacher_pred = json.loads(pred_file.read_text(encoding="utf-8"))
                    bar.advance(task)
                    if not quiet:
                        bar.console.print(_one_line(e.name, device, result))
        sizes = {e.name: size_on_disk_mb(e.folder) for e in entries if e.error is None}
        report = assemble(entries=entries, teacher=teacher, sizes=sizes, ds=ds, dataset=dataset, threads=threads,
                          latency_sentences=latency_sentences, batch_size=batch_size, warmup=warmup, use_gpu=use_gpu,
                          baseline_mb=baseline_mb, command=command or _default_command(), run_dir=run_dir)
        with atomic_dir(out) as tmp:
            render(report, tmp, entries=entries, teacher=teacher, teacher_pred=teacher_pred, ds=ds)
            report["elapsed_seconds"] = round(time.time() - started, 1)
            write_json(tmp / "report.json", report)
    return report


def _one_line(name: str, device: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{name} ({device}): failed: {r['error']}"
    if "skipped" in r:
        return f"{name} ({device}): not measured: {r['skipped']}"
    return (f"{name} ({device}): accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
            f"{r['latency_ms_median']:.2f} ms/text, {r['throughput']:.1f} texts/s, "
            f"peak RSS {fmt(r.get('peak_rss_mb'), 'f0')} MB")


def _row(e: Entry, r: dict[str, Any], size_mb: float) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "f1", "per_class", "parameters", "parameters_note", "latency_ms_median",
            "latency_ms_p90", "latency_ms_mean", "latency_sentences", "throughput", "chars_per_second",
            "peak_rss_mb", "peak_rss_over_baseline_mb", "gpu_peak_mb", "device", "load_seconds", "threads")
    params = (e.meta.get("source_params") if e.meta.get("source_kind") else e.meta.get("params")) or {}
    training = e.meta.get("training") or {}
    labelled = training.get("train_texts", training.get("train_sentences"))
    transfer = training.get("transfer_texts", training.get("transfer_sentences", 0)) if training else None
    return {"name": e.name, "folder": str(e.folder), "kind": e.info.get("kind"), "role": e.meta.get("role"),
            "size_mb": size_mb, "labelled": labelled, "transfer": transfer,
            "student": student_identity(params) if e.meta.get("role") == "student" else None,
            "alpha": params.get("alpha"), "compressed": bool(e.meta.get("source_kind")),
            **{k: r[k] for k in keys if k in r}}


def compare(rows: list[dict[str, Any]], ref: dict[str, Any] | None) -> None:
    """:func:`distill.report._compare` (macro-F1 deltas, speedups, the gold-only twin), plus the
    same deltas in accuracy."""
    _compare(rows, ref)
    gold = {json.dumps(r["student"], sort_keys=True, default=str): r for r in rows
            if r.get("student") and r.get("alpha") == 1.0 and not r.get("compressed")}
    for row in rows:
        twin = gold.get(json.dumps(row.get("student"), sort_keys=True, default=str)) if row.get("student") else None
        row["acc_vs_gold"] = None if twin is None or twin is row else row["accuracy"] - twin["accuracy"]
        row["acc_delta"] = None if ref is None else row["accuracy"] - ref["accuracy"]


def assemble(*, entries, teacher, sizes, ds, dataset, threads, latency_sentences, batch_size, warmup, use_gpu,
             baseline_mb, command, run_dir) -> dict[str, Any]:
    """The report as one JSON-able dict: header facts, one row per measured model, what failed."""
    from distill.bench import library_versions, machine_info

    ok = lambda r: bool(r) and "error" not in r and "skipped" not in r  # noqa: E731
    notes: list[str] = []
    rows = [_row(e, e.cpu, sizes[e.name]) for e in entries if e.error is None and ok(e.cpu)]
    gpu_rows = [_row(e, e.gpu, sizes[e.name]) for e in entries if e.error is None and ok(e.gpu)]
    ref = next((r for r in rows if teacher is not None and r["name"] == teacher.name), None)
    if teacher is not None and ref is None:
        notes.append(f"the teacher {teacher.name} could not be measured on the CPU, so deltas and speedups are n/a")
    compare(rows, ref)
    compare(gpu_rows, next((r for r in gpu_rows if teacher is not None and r["name"] == teacher.name), None))
    failed = []
    for e in entries:
        reasons = [e.error] if e.error else []
        for device, r in (("cpu", e.cpu), ("gpu", e.gpu)):
            if r.get("error"):
                reasons.append(f"{device}: {r['error']}")
            elif r.get("skipped") and device == "cpu":
                reasons.append(f"{device}: {r['skipped']}")
        trained_on = e.meta.get("dataset")
        if e.error is None and trained_on and trained_on != ds.name:
            reasons.append(f"trained on dataset {trained_on!r}, tested on {ds.name!r}")
        if not any(row["name"] == e.name for row in rows + gpu_rows):
            failed.append({"name": e.name, "folder": str(e.folder), "kind": e.info.get("kind"),
                           "reason": "; ".join(reasons) or "not measured"})
        elif reasons:
            notes.append(f"{e.name}: " + "; ".join(reasons))
    test = ds.test
    return {
        "format": FORMAT, "task": "classify", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command,
        "run_dir": str(run_dir), "machine": machine_info(threads), "libraries": library_versions(),
        "dataset": {"name": ds.name, "kwargs": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataset.items()},
                    "fingerprint": ds.fingerprint(), "test_fingerprint": test.fingerprint(),
                    "test_texts": len(test), "test_chars": sum(len(t) for t in test.texts),
                    "train_texts": len(ds.train), "labels": list(ds.labels),
                    "train_label_counts": _counts(ds.train.labels, ds.labels),
                    "test_label_counts": _counts(test.labels, ds.labels)},
        "method": {"threads": threads, "latency_sentences": min(latency_sentences, len(test)), "warmup": warmup,
                   "throughput_batch_size": batch_size, "end_to_end": True, "fresh_process_per_model": True,
                   "baseline_rss_mb": baseline_mb},
        "teacher": None if teacher is None else teacher.name,
        "gpu_measured": bool(use_gpu),
        "models": rows, "gpu_models": gpu_rows, "failed": failed, "notes": notes,
    }


def _counts(labels: Sequence[str] | None, order: Sequence[str]) -> dict[str, int]:
    counts = Counter(labels or [])
    return {l: counts.get(l, 0) for l in order} | {l: n for l, n in counts.items() if l not in order}


def csv_text(report: dict[str, Any]) -> str:
    """One CSV row per model measured on CPU (and its GPU numbers when measured): full precision."""
    labels = report["dataset"]["labels"]
    keys = [k for k, _, _ in columns(report["method"]["throughput_batch_size"])]
    keys += ["role", "peak_rss_over_baseline_mb", "latency_sentences", "parameters_note"]
    keys += [f"{l}_{m}" for l in labels for m in ("precision", "recall", "f1")]
    gpu = {r["name"]: r for r in report["gpu_models"]}
    if report["gpu_measured"]:
        keys += ["gpu_accuracy", "gpu_macro_f1", "gpu_latency_ms_median", "gpu_latency_ms_p90", "gpu_throughput",
                 "gpu_peak_mb"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in report["models"]:
        row = {k: r.get(k) for k in keys}
        for l in labels:
            for m in ("precision", "recall", "f1"):
                row[f"{l}_{m}"] = r["per_class"].get(l, {}).get(m)
        if r["name"] in gpu:
            g = gpu[r["name"]]
            row.update(gpu_accuracy=g["accuracy"], gpu_macro_f1=g["macro_f1"], gpu_latency_ms_median=g["latency_ms_median"],
                       gpu_latency_ms_p90=g["latency_ms_p90"], gpu_throughput=g["throughput"],
                       gpu_peak_mb=g.get("gpu_peak_mb"))
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


CAPTIONS = {"accuracy_vs_latency": "Accuracy vs batch-1 latency (log scale), point area ~ size on disk",
            "f1_vs_latency": "Macro-F1 vs batch-1 latency (log scale), point area ~ size on disk",
            "training_curves": "Training loss and dev macro-F1 per epoch of each trained model",
            "confusion_teacher": "The teacher's class confusion on the test set (rows normalised)",
            "label_distribution": "Class counts in the training data"}


def render(report: dict[str, Any], folder: Path, *, entries, teacher, teacher_pred, ds) -> None:
    """Write report.md, report.csv and plots/*.png into ``folder``; record the plots in ``report``."""
    from distill import plots
    from distill.fileio import write_text

    plot_dir = folder / "plots"
    plot_dir.mkdir()
    figures: dict[str, str] = {}
    rows = report["models"]
    if rows:
        plots.f1_vs_latency(rows, plot_dir / "accuracy_vs_latency.png", metric="accuracy", ylabel="accuracy (test)",
                            title="Accuracy", item="text")
        plots.f1_vs_latency(rows, plot_dir / "f1_vs_latency.png", metric="macro_f1", ylabel="macro-F1 (test)",
                            title="Macro-F1", item="text")
        figures.update(accuracy_vs_latency="plots/accuracy_vs_latency.png", f1_vs_latency="plots/f1_vs_latency.png")
    curves = training_logs(entries)
    plots.training_curves(curves, plot_dir / "training_curves.png", dev_metric="macro-F1")
    figures["training_curves"] = "plots/training_curves.png"
    if teacher is not None and teacher_pred is not None:
        labels = teacher.info["labels"]
        counts = plots.confusion_counts([[g] for g in ds.test.labels], [[p] for p in teacher_pred], labels)
        plots.confusion_matrix(counts, labels, f"teacher {teacher.name!r}: classes on the test set, rows normalised",
                               plot_dir / "confusion_teacher.png", unit="class")
        figures["confusion_teacher"] = "plots/confusion_teacher.png"
        report["teacher_confusion"] = {"labels": labels, "counts": counts}
    plots.label_distribution(report["dataset"]["train_label_counts"],
                             f"classes in the training data ({len(ds.train):,} texts)",
                             plot_dir / "label_distribution.png", unit="texts")
    figures["label_distribution"] = "plots/label_distribution.png"
    report["plots"] = figures
    report["training_curves"] = sorted(curves)
    write_text(folder / "report.csv", csv_text(report))
    write_text(folder / "report.md", markdown(report))


def per_class_table(report: dict[str, Any]) -> str:
    """Per-class precision, recall and F1 of every CPU row: one row per model."""
    labels = report["dataset"]["labels"]
    cols = [("name", "model", "text")] + [(f"{l}:{k}", f"{l} {k[0].upper() if k != 'f1' else 'F1'}", "f4")
                                          for l in labels for k in ("precision", "recall", "f1")]
    flat = [{"name": r["name"], **{f"{l}:{k}": r["per_class"].get(l, {}).get(k) for l in labels
                                   for k in ("precision", "recall", "f1")}} for r in report["models"]]
    return md_table(cols, flat)


def markdown(report: dict[str, Any]) -> str:
    from distill.report import NO_TEACHER

    m, d, how = report["machine"], report["dataset"], report["method"]
    b = how["throughput_batch_size"]
    libs = ", ".join(f"{k} {v}" for k, v in report["libraries"].items())
    support = ", ".join(f"{l} {n:,}" for l, n in d["test_label_counts"].items())
    lines = [
        "# distill comparison report: text classification", "",
        f"- **Date:** {report['date']}",
        f"- **Command:** `{report['command']}`",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores ({m['logical_cpus']} logical CPUs), {m['memory_gb']} GiB RAM; "
        f"**{how['threads']} threads** for every model; GPU: {m['gpu'] or 'none'}",
        f"- **Software:** Python {m['python']} on {m['platform']}; {libs}",
        f"- **Dataset:** {d['name']} (`{json.dumps(d['kwargs'], ensure_ascii=False)}`), fingerprint `{d['fingerprint']}`; "
        f"test set: {d['test_texts']:,} texts, {d['test_chars']:,} characters (fingerprint `{d['test_fingerprint']}`); "
        f"classes in the test set: {support}",
        f"- **Teacher:** {report['teacher'] or NO_TEACHER}",
        "", "## How it was measured", "",
        f"Each model ran in its own fresh Python process (`python -m distill.bench --task classify`), one after "
        f"another, with torch.set_num_threads({how['threads']}), ONNX Runtime intra-op threads = {how['threads']} and "
        f"OMP/MKL threads = {how['threads']}. Times are end to end, from text to class probabilities: tokenization, "
        f"batching, the model and the softmax are included. After {how['warmup']} warm-up texts and one warm-up batch, "
        f"**latency** is timed text by text at batch size 1 over {how['latency_sentences']:,} test texts spread "
        f"evenly over the test set (median and 90th percentile); **throughput** is all {d['test_texts']:,} test texts "
        f"at batch size {b}, and the accuracy, macro-F1 (the unweighted mean of the classes' F1) and per-class "
        f"precision/recall/F1 come from those same predictions (the argmax class). **ΔF1** is the difference in "
        f"macro-F1 and **Δacc** in accuracy, against the teacher and against the same student trained on the gold "
        f"labels alone (same architecture, size, data and schedule; n/a without one). **Speedups** are the teacher's "
        f"median latency over the model's (b1) and the model's throughput over the teacher's (@{b}). **Peak RSS** is "
        f"the peak resident memory of the model's process (the kernel's high-water mark VmHWM, read from outside when "
        f"the process has loaded the model and run everything); a process that loads Python, torch, transformers and "
        f"the test data but no model peaks at {fmt(how['baseline_rss_mb'], 'f0')} MB. **Size** counts the weight files "
        f"in the model folder (safetensors, ONNX and their data files; tokenizer and vocabulary files excluded).",
        "",
    ]
    if report["gpu_measured"]:
        lines.append("GPU rows were measured the same way on CUDA (peak GPU memory: torch.cuda.max_memory_allocated).")
    else:
        lines.append("No CUDA GPU was available, so GPU latency, throughput and memory were not measured; "
                     "every number below is on the CPU.")
    lines += ["", "## Models", "", md_table(columns(b), report["models"]) if report["models"]
              else "No model could be measured on the CPU.", ""]
    if report["models"]:
        lines += ["## Per class", "", f"Texts per class in the test set: {support}.", "", per_class_table(report), ""]
    if report["gpu_measured"]:
        lines += ["## GPU", "", md_table(gpu_columns(b), report["gpu_models"]) if report["gpu_models"]
                  else "No model could be measured on the GPU.", ""]
    notes = [f"- {r['name']}: parameters {r['parameters_note']}" for r in report["models"] if r.get("parameters_note")]
    notes += [f"- {n}" for n in report["notes"]]
    notes += [f"- **not measured:** {f['name']} ({f['kind'] or 'unknown kind'}): {f['reason']}" for f in report["failed"]]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    lines += ["## Plots", ""]
    for key, path in report["plots"].items():
        lines += [f"![{CAPTIONS[key]}]({path})", "", f"*{CAPTIONS[key]}.*", ""]
    return "\n".join(lines)
