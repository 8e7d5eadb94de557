"""``distill report RUN_DIR``: benchmark every model folder under a run on one test set
and write report.md, report.json, report.csv and plots.

Every model is measured the same way: in its own fresh process (``python -m
distill.bench``), with the same sentences and the same thread count, end to end from
tokens to tags. Peak resident memory is read from outside, from the kernel's account
of that child process (``os.wait4``), so it covers loading the model and running the
whole test set.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from distill.errors import DistillError
from distill.modeling import META_FILE, read_meta

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


def fmt(value: Any, how: str) -> str:
    """One table cell; ``n/a`` for a value that does not apply (e.g. no teacher to compare with)."""
    if value is None:
        return "n/a"
    return {
        "text": lambda v: str(v), "f4": lambda v: f"{v:.4f}", "f2": lambda v: f"{v:.2f}", "f1": lambda v: f"{v:.1f}",
        "f0": lambda v: f"{v:.0f}", "int": lambda v: f"{int(v):,}", "signed": lambda v: f"{v:+.4f}",
        "x": lambda v: f"{v:.2f}x",
    }[how](value)


def md_table(columns: Sequence[tuple[str, str, str]], rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if how == "text" else "---:" for _, _, how in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), how).replace("|", "\\|") for k, _, how in columns) + " |")
    return "\n".join(lines)


@dataclass
class Entry:
    """A model folder found under the run, and what its benchmarks returned."""

    name: str
    folder: Path
    info: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.get("meta", {})


def find_models(run_dir: Path, exclude: Sequence[Path] = ()) -> list[Entry]:
    """Every folder with a distill.json under ``run_dir`` (``*.work``, hidden and emissions folders skipped)."""
    run_dir = Path(run_dir)
    excluded = {Path(p).resolve() for p in exclude}
    found = []
    for root, dirs, files in os.walk(run_dir):
        here = Path(root)
        if META_FILE in files:
            name = here.relative_to(run_dir).as_posix()
            found.append(Entry(name if name != "." else run_dir.resolve().name, here))
        dirs[:] = sorted(d for d in dirs if not (
            d.startswith(".") or d.endswith(".work") or d.startswith("emissions")
            or (here / d / "emissions.npy").exists() or (here / d).resolve() in excluded))
    return found


def pick_teacher(entries: Sequence[Entry]) -> Entry | None:
    """The model whose meta role is "teacher"; among several, the trained one (not derived from another model)."""
    teachers = [e for e in entries if e.meta.get("role") == "teacher" and e.error is None]
    if not teachers:
        return None

    def rank(e: Entry):
        derived = "source" in (e.meta.get("params") or {})
        return (e.folder.name != "teacher", derived, e.info.get("kind") != "bert-crf", e.name)

    return sorted(teachers, key=rank)[0]


def _default_command() -> str:
    if Path(sys.argv[0]).name == "distill":
        return shlex.join(["distill", *sys.argv[1:]])
    return shlex.join([Path(sys.executable).name, *sys.argv])


def resolve_dataset(run_dir: Path, dataset: dict | None, max_test: int | None) -> dict[str, Any]:
    """The test data: given kwargs, else the run's profile.json dataset, else the built-in msra."""
    if dataset is None:
        profile = Path(run_dir) / "profile.json"
        dataset = {"name": "msra"}
        if profile.exists():
            try:
                saved = json.loads(profile.read_text(encoding="utf-8"))
                dataset = dict(saved["report_dataset"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DistillError(f"{profile}: corrupt or missing 'report_dataset'; pass --dataset/--test") from None
    dataset = dict(dataset)
    if max_test is not None:
        dataset["max_test"] = max_test
    return dataset


def check_report_args(run_dir, out, threads, latency_sentences, batch_size, warmup) -> tuple[Path, Path, int]:
    """The run folder, the report folder (default RUN_DIR/report) and the thread count, checked."""
    from distill.bench import default_threads

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DistillError(f"{run_dir}: no such run folder")
    out = Path(out) if out is not None else run_dir / "report"
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").exists())):
        raise DistillError(f"{out}: exists and is not a report folder; choose another --out")
    for name, value, low in (("latency_sentences", latency_sentences, 1), ("batch_size", batch_size, 1), ("warmup", warmup, 0)):
        if value < low:
            raise DistillError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise DistillError(f"--threads must be >= 1, got {threads}")
    return run_dir, out, threads


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
    from distill.bench import run_child, size_on_disk_mb
    from distill.data import load_dataset
    from distill.fileio import atomic_dir, write_json
    from distill.report_classify import is_classify_run, make_classify_report

    started = time.time()
    run_dir, out, threads = check_report_args(run_dir, out, threads, latency_sentences, batch_size, warmup)
    if is_classify_run(run_dir, dataset, exclude=[out]):  # a run of text classifiers: its own report
        return make_classify_report(run_dir=run_dir, out=out, dataset=dataset, max_test=max_test, threads=threads,
                                    latency_sentences=latency_sentences, batch_size=batch_size, warmup=warmup,
                                    gpu=gpu, command=command or _default_command(), quiet=quiet)
    entries = find_models(run_dir, exclude=[out])
    if not entries:
        raise DistillError(f"{run_dir}: no model folders (folders with {META_FILE}) found; "
                           f"train one first, e.g. distill teacher train --out {run_dir / 'teacher'}")
    dataset = resolve_dataset(run_dir, dataset, max_test)
    ds = load_dataset(**dataset)
    test = ds.test
    if not test.tags:
        raise DistillError(f"the test set of {ds.name} has no tags; the report needs a labelled test set")
    types = set(test.entity_types())
    for e in entries:
        try:
            e.info = read_meta(e.folder)
        except DistillError as err:
            e.error = str(err)
            continue
        covered = {l[2:] for l in e.info["labels"] if l != "O"}
        if types - covered:
            e.error = f"its labels {e.info['labels']} do not cover the test set's types {sorted(types)}"
    entries.sort(key=lambda e: e.name)
    teacher = pick_teacher(entries)
    if teacher is not None:
        entries.remove(teacher)
        entries.insert(0, teacher)
    import torch

    use_gpu = torch.cuda.is_available() if gpu is None else gpu
    if use_gpu and not torch.cuda.is_available():
        raise DistillError("--gpu given but CUDA is not available on this machine")

    from distill.progress import progress_bar

    with tempfile.TemporaryDirectory(prefix="distill-report-") as scratch:
        test_file = Path(scratch) / "test.json"
        test_file.write_text(json.dumps({"tokens": test.tokens, "tags": test.tags}, ensure_ascii=False), encoding="utf-8")
        common = ["--test", str(test_file), "--threads", str(threads), "--latency-sentences", str(latency_sentences),
                  "--batch-size", str(batch_size), "--warmup", str(warmup)]
        baseline, baseline_mb = run_child(["--baseline", "--test", str(test_file), "--threads", str(threads)], threads, True)
        if "error" in baseline:
            raise DistillError(f"the benchmark process does not start: {baseline['error']}")
        teacher_pred = None
        todo = [e for e in entries if e.error is None]
        with progress_bar(disable=quiet) as bar:
            task = bar.add_task("benchmarking", total=len(todo) * (2 if use_gpu else 1))
            for e in todo:
                devices = ["cpu", "cuda"] if use_gpu else ["cpu"]
                for device in devices:
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
        report = assemble(
            entries=entries, teacher=teacher, sizes=sizes, ds=ds, dataset=dataset, threads=threads,
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
    return (f"{name} ({device}): F1 {r['f1']:.4f}, {r['latency_ms_median']:.2f} ms/sentence, "
            f"{r['throughput']:.1f} sentences/s, peak RSS {fmt(r.get('peak_rss_mb'), 'f0')} MB")


def _row(e: Entry, r: dict[str, Any], size_mb: float) -> dict[str, Any]:
    keys = ("precision", "recall", "f1", "support", "per_type", "parameters", "parameters_note", "latency_ms_median",
            "latency_ms_p90", "latency_ms_mean", "latency_sentences", "throughput", "tokens_per_second",
            "peak_rss_mb", "peak_rss_over_baseline_mb", "gpu_peak_mb", "device", "load_seconds", "threads")
    params = (e.meta.get("source_params") if e.meta.get("source_kind") else e.meta.get("params")) or {}
    training = e.meta.get("training") or {}
    row = {"name": e.name, "folder": str(e.folder), "kind": e.info.get("kind"), "role": e.meta.get("role"),
           "size_mb": size_mb, "labelled": training.get("train_sentences"),
           "transfer": training.get("transfer_sentences", 0) if training else None,
           "student": student_identity(params) if e.meta.get("role") == "student" else None,
           "alpha": params.get("alpha"), "compressed": bool(e.meta.get("source_kind")),
           **{k: r[k] for k in keys if k in r}}
    return row


def student_identity(params: dict[str, Any]) -> dict[str, Any] | None:
    """What makes two students twins apart from distillation: architecture, size, data and
    training schedule (alpha, T, the KD loss, the teacher and the transfer set left out)."""
    if "arch" not in params:
        return None
    same = ("arch", "dataset", "num_layers", "layers", "embedding_dim", "hidden_size", "lstm_layers", "dropout",
            "init_embeddings", "min_count", "max_length")
    config = {k: v for k, v in (params.get("train_config") or {}).items() if k not in ("checkpoint_minutes", "checkpoint_every")}
    return {**{k: params.get(k) for k in same}, "train_config": config}


def _compare(rows: list[dict[str, Any]], ref: dict[str, Any] | None) -> None:
    """Deltas and speedups vs the teacher ``ref``, and each distilled student's F1 against its
    gold-only twin (same identity, alpha 1: :func:`student_identity`), compressed forms included."""
    gold = {json.dumps(r["student"], sort_keys=True, default=str): r for r in rows
            if r.get("student") and r.get("alpha") == 1.0 and not r.get("compressed")}
    for row in rows:
        twin = gold.get(json.dumps(row.get("student"), sort_keys=True, default=str)) if row.get("student") else None
        row["f1_vs_gold"] = None if twin is None or twin is row else row["f1"] - twin["f1"]
        row["f1_delta"] = None if ref is None else row["f1"] - ref["f1"]
        row["speedup_b1"] = None if ref is None else ref["latency_ms_median"] / row["latency_ms_median"]
        row["speedup_b32"] = None if ref is None else row["throughput"] / ref["throughput"]


def assemble(*, entries, teacher, sizes, ds, dataset, threads, latency_sentences, batch_size, warmup, use_gpu,
             baseline_mb, command, run_dir) -> dict[str, Any]:
    """The report as one JSON-able dict: header facts, one row per measured model, what failed."""
    ok = lambda r: bool(r) and "error" not in r and "skipped" not in r  # noqa: E731
    notes: list[str] = []
    rows = [_row(e, e.cpu, sizes[e.name]) for e in entries if e.error is None and ok(e.cpu)]
    gpu_rows = [_row(e, e.gpu, sizes[e.name]) for e in entries if e.error is None and ok(e.gpu)]
    ref = next((r for r in rows if teacher is not None and r["name"] == teacher.name), None)
    if teacher is not None and ref is None:
        notes.append(f"the teacher {teacher.name} could not be measured on the CPU, so deltas and speedups are n/a")
    gpu_ref = next((r for r in gpu_rows if teacher is not None and r["name"] == teacher.name), None)
    _compare(rows, ref)
    _compare(gpu_rows, gpu_ref)
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
        measured = any(row["name"] == e.name for row in rows + gpu_rows)
        if not measured:
            failed.append({"name": e.name, "folder": str(e.folder), "kind": e.info.get("kind"),
                           "reason": "; ".join(reasons) or "not measured"})
        elif reasons:
            notes.append(f"{e.name}: " + "; ".join(reasons))
    from distill.bench import library_versions, machine_info

    test = ds.test
    return {
        "format": FORMAT, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command,
        "run_dir": str(run_dir), "machine": machine_info(threads), "libraries": library_versions(),
        "dataset": {"name": ds.name, "kwargs": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataset.items()},
                    "fingerprint": ds.fingerprint(), "test_fingerprint": test.fingerprint(),
                    "test_sentences": len(test), "test_tokens": test.n_tokens(), "train_sentences": len(ds.train),
                    "entity_types": test.entity_types()},
        "method": {"threads": threads, "latency_sentences": min(latency_sentences, len(test)), "warmup": warmup,
                   "throughput_batch_size": batch_size, "end_to_end": True, "fresh_process_per_model": True,
                   "baseline_rss_mb": baseline_mb},
        "teacher": None if teacher is None else teacher.name,
        "gpu_measured": bool(use_gpu),
        "models": rows, "gpu_models": gpu_rows, "failed": failed, "notes": notes,
    }


def csv_text(report: dict[str, Any]) -> str:
    """One CSV row per model measured on CPU (and its GPU numbers when measured): full precision."""
    types = report["dataset"]["entity_types"]
    keys = [k for k, _, _ in COLUMNS] + ["role", "peak_rss_over_baseline_mb", "latency_sentences", "parameters_note"]
    keys += [f"{t}_{m}" for t in types for m in ("precision", "recall", "f1")]
    gpu = {r["name"]: r for r in report["gpu_models"]}
    if report["gpu_measured"]:
        keys += ["gpu_f1", "gpu_latency_ms_median", "gpu_latency_ms_p90", "gpu_throughput", "gpu_peak_mb"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in report["models"]:
        row = {k: r.get(k) for k in keys}
        for t in types:
            for m in ("precision", "recall", "f1"):
                row[f"{t}_{m}"] = r["per_type"].get(t, {}).get(m)
        if r["name"] in gpu:
            g = gpu[r["name"]]
            row.update(gpu_f1=g["f1"], gpu_latency_ms_median=g["latency_ms_median"],
                       gpu_latency_ms_p90=g["latency_ms_p90"], gpu_throughput=g["throughput"],
                       gpu_peak_mb=g.get("gpu_peak_mb"))
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def training_logs(entries: Sequence[Entry]) -> dict[str, list[dict[str, Any]]]:
    """Per trained model, the epochs of its train_log.jsonl (copies of another model's log are left out)."""
    curves, seen = {}, set()
    for e in entries:
        log = e.folder / "train_log.jsonl"
        if e.error is not None or not log.exists() or "source" in (e.meta.get("params") or {}):
            continue
        text = log.read_text(encoding="utf-8")
        if text in seen:
            continue
        seen.add(text)
        records = []
        for line in text.splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and {"epoch", "loss", "dev_f1"} <= set(r):
                records.append(r)
        if records:
            curves[e.name] = records
    return curves


def tag_counts(tags: Sequence[Sequence[str]], labels: Sequence[str]) -> dict[str, int]:
    counts = {l: 0 for l in labels}
    for row in tags:
        for t in row:
            counts[t] = counts.get(t, 0) + 1
    return counts


def render(report: dict[str, Any], folder: Path, *, entries, teacher, teacher_pred, ds) -> None:
    """Write report.md, report.csv and plots/*.png into ``folder``; record the plots in ``report``."""
    from distill import plots
    from distill.fileio import write_text

    plot_dir = folder / "plots"
    plot_dir.mkdir()
    figures: dict[str, str] = {}
    rows = report["models"]
    if rows:
        plots.f1_vs_latency(rows, plot_dir / "f1_vs_latency.png")
        figures["f1_vs_latency"] = "plots/f1_vs_latency.png"
    curves = training_logs(entries)
    plots.training_curves(curves, plot_dir / "training_curves.png")
    figures["training_curves"] = "plots/training_curves.png"
    if teacher is not None and teacher_pred is not None:
        labels = teacher.info["labels"]
        counts = plots.confusion_counts(ds.test.tags, teacher_pred, labels)
        plots.confusion_matrix(counts, labels, f"teacher {teacher.name!r}: tags on the test set, rows normalised",
                               plot_dir / "confusion_teacher.png")
        figures["confusion_teacher"] = "plots/confusion_teacher.png"
        report["teacher_confusion"] = {"labels": labels, "counts": counts}
    train_counts = tag_counts(ds.train.tags, ds.labels)
    report["dataset"]["train_tag_counts"] = train_counts
    report["dataset"]["test_tag_counts"] = tag_counts(ds.test.tags, ds.labels)
    plots.label_distribution(train_counts, f"tags in the training data ({len(ds.train):,} sentences)",
                             plot_dir / "label_distribution.png")
    figures["label_distribution"] = "plots/label_distribution.png"
    report["plots"] = figures
    report["training_curves"] = sorted(curves)
    write_text(folder / "report.csv", csv_text(report))
    write_text(folder / "report.md", markdown(report))


NO_TEACHER = "none (no model folder has meta role 'teacher'), so deltas and speedups are n/a"


def markdown(report: dict[str, Any]) -> str:
    m, d, how = report["machine"], report["dataset"], report["method"]
    libs = ", ".join(f"{k} {v}" for k, v in report["libraries"].items())
    lines = [
        "# distill comparison report", "",
        f"- **Date:** {report['date']}",
        f"- **Command:** `{report['command']}`",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores ({m['logical_cpus']} logical CPUs), {m['memory_gb']} GiB RAM; "
        f"**{how['threads']} threads** for every model; GPU: {m['gpu'] or 'none'}",
        f"- **Software:** Python {m['python']} on {m['platform']}; {libs}",
        f"- **Dataset:** {d['name']} (`{json.dumps(d['kwargs'], ensure_ascii=False)}`), fingerprint `{d['fingerprint']}`; "
        f"test set: {d['test_sentences']:,} sentences, {d['test_tokens']:,} tokens (fingerprint `{d['test_fingerprint']}`)",
        f"- **Teacher:** {report['teacher'] or NO_TEACHER}",
        "", "## How it was measured", "",
        f"Each model ran in its own fresh Python process (`python -m distill.bench`), one after another, with "
        f"torch.set_num_threads({how['threads']}), ONNX Runtime intra-op threads = {how['threads']} and "
        f"OMP/MKL threads = {how['threads']}. Times are end to end, from tokens to tags: tokenization, batching, "
        f"the model and CRF decoding are included. After {how['warmup']} warm-up sentences and one warm-up batch, "
        f"**latency** is timed sentence by sentence at batch size 1 over {how['latency_sentences']:,} test sentences "
        f"spread evenly over the test set (median and 90th percentile); **throughput** is all "
        f"{d['test_sentences']:,} test sentences at batch size {how['throughput_batch_size']} (length-bucketed), "
        f"and the precision/recall/F1 come from those same predictions (entity level, seqeval strict IOB2, micro "
        f"average). **Speedups** are the teacher's median latency over the model's (b1) and the model's throughput "
        f"over the teacher's (@32). **Peak RSS** is the peak resident memory of the model's process (the kernel's "
        f"high-water mark VmHWM, read from outside when the process has loaded the model and run everything); a "
        f"process that loads Python, torch, transformers and the test data but no model peaks at "
        f"{fmt(how['baseline_rss_mb'], 'f0')} MB. **Size** counts the weight files "
        f"in the model folder (safetensors, ONNX and their data files; tokenizer and vocabulary files excluded).",
        "",
    ]
    if report["gpu_measured"]:
        lines.append("GPU rows were measured the same way on CUDA (peak GPU memory: torch.cuda.max_memory_allocated).")
    else:
        lines.append("No CUDA GPU was available, so GPU latency, throughput and memory were not measured; "
                     "every number below is on the CPU.")
    lines += ["", "## Models", "", md_table(COLUMNS, report["models"]) if report["models"] else "No model could be measured on the CPU.", ""]
    types = d["entity_types"]
    if report["models"] and types:
        cols = [("name", "model", "text")] + [(f"{t}:{k}", f"{t} {k[0].upper() if k != 'f1' else 'F1'}", "f4")
                                              for t in types for k in ("precision", "recall", "f1")]
        flat = [{"name": r["name"], **{f"{t}:{k}": r["per_type"].get(t, {}).get(k) for t in types
                                       for k in ("precision", "recall", "f1")}} for r in report["models"]]
        support = ", ".join(f"{t} {d['test_tag_counts'].get('B-' + t, 0):,}" for t in types)
        lines += ["## Per entity type", "", f"Entities in the test set: {support}.", "", md_table(cols, flat), ""]
    if report["gpu_measured"]:
        lines += ["## GPU", "", md_table(GPU_COLUMNS, report["gpu_models"]) if report["gpu_models"]
                  else "No model could be measured on the GPU.", ""]
    notes = [f"- {r['name']}: parameters {r['parameters_note']}" for r in report["models"] if r.get("parameters_note")]
    notes += [f"- {n}" for n in report["notes"]]
    notes += [f"- **not measured:** {f['name']} ({f['kind'] or 'unknown kind'}): {f['reason']}" for f in report["failed"]]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    figs = report["plots"]
    lines += ["## Plots", ""]
    captions = {"f1_vs_latency": "F1 vs batch-1 latency (log scale), point area ~ size on disk",
                "training_curves": "Training loss and dev F1 per epoch of each trained model",
                "confusion_teacher": "The teacher's tag confusion on the test set (rows normalised)",
                "label_distribution": "Tag counts in the training data"}
    for key, path in figs.items():
        lines += [f"![{captions[key]}]({path})", "", f"*{captions[key]}.*", ""]
    return "\n".join(lines)
