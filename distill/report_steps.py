"""The steps every ``distill report`` takes, whatever the task: find the model folders
under a run, read them, measure each, assemble the report's rows and write the folder.

Every model is measured the same way: in its own fresh process (``python -m
distill.bench``), with the same sentences and the same thread count, end to end from
tokens to tags. Peak resident memory is read from outside, from the kernel's account
of that child process (``os.wait4``), so it covers loading the model and running the
whole test set.

A :class:`ReportKind` says what a task does differently: the tagging report's is
:data:`distill.report.TAGGING`, the classification report's is in
:mod:`distill.report_classify`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from distill.errors import DistillError
from distill.modeling import META_FILE, read_meta


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

    @property
    def params(self) -> dict[str, Any]:
        """How the model was trained: its params, or a compressed model's source's."""
        return (self.meta.get("source_params") if self.meta.get("source_kind") else self.meta.get("params")) or {}


@dataclass(frozen=True)
class ReportKind:
    """What a task's report does differently; the steps the reports share take one."""

    head: dict[str, str]  # report.json's first keys: its format (and task)
    bench_args: tuple[str, ...]  # what tells ``python -m distill.bench`` the task
    test_json: Callable[[Any], dict[str, list]]  # the test split -> the bench processes' test file
    row_keys: tuple[str, ...]  # what a row keeps of a bench result
    deltas: tuple[tuple[str, str], ...]  # (prefix, metric) compared as F1 is (:func:`_compare`)
    dataset_facts: Callable[[Any], dict[str, Any]]  # the dataset -> report["dataset"]'s own keys
    one_line: Callable[[dict[str, Any]], str]  # a measured model's scores and speed, for the progress bar
    render: Callable[..., None]  # writes report.md, report.csv and the plots (as :func:`distill.report.render`)


def find_models(run_dir: Path, exclude: Sequence[Path] = ()) -> list[Entry]:
    """Every folder with a distill.json under ``run_dir`` (``*.work``, hidden and emissions folders
    skipped). Symbolic links to folders are followed (a run of links to models elsewhere is a
    side-by-side comparison); a folder reached twice, or a link back up the tree, is read once."""
    run_dir = Path(run_dir)
    excluded = {Path(p).resolve() for p in exclude}
    found, seen = [], set()
    for root, dirs, files in os.walk(run_dir, followlinks=True):
        here = Path(root)
        real = here.resolve()
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
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


def read_models(entries: list[Entry], check: Callable[[dict[str, Any]], str | None]) -> Entry | None:
    """Read each model's distill.json into ``e.info``; one that is unreadable, or that ``check``
    says this report cannot measure, gets ``e.error``. Sorts ``entries`` by name with the
    teacher first; returns the teacher (None without one)."""
    for e in entries:
        try:
            e.info = read_meta(e.folder)
        except DistillError as err:
            e.error = str(err)
            continue
        e.error = check(e.info)
    entries.sort(key=lambda e: e.name)
    teacher = pick_teacher(entries)
    if teacher is not None:
        entries.remove(teacher)
        entries.insert(0, teacher)
    return teacher


def _default_command() -> str:
    """This process's command line as a user types it: ``distill ...`` for the console script
    and for ``python -m distill`` (the same CLI), else the interpreter and its arguments."""
    script = Path(sys.argv[0])
    if script.name == "distill" or (script.name == "__main__.py" and script.parent.name == "distill"):
        return shlex.join(["distill", *sys.argv[1:]])
    return shlex.join([Path(sys.executable).name, *sys.argv])


def resolve_dataset(run_dir: Path, dataset: dict | None, max_test: int | None) -> dict[str, Any]:
    """The test data (the JSON form of a :class:`distill.config.DataConfig`): as given, else the
    run's profile.json dataset, else the built-in msra."""
    from distill.config import DEFAULT_DATASET, ConfigError, DataConfig

    data = DataConfig.of(dataset) if dataset is not None else DataConfig.from_json({"name": DEFAULT_DATASET})
    profile = Path(run_dir) / "profile.json"
    if dataset is None and profile.exists():
        try:
            data = DataConfig.from_json(json.loads(profile.read_text(encoding="utf-8"))["report_dataset"])
        except (json.JSONDecodeError, KeyError, TypeError, ConfigError):
            raise DistillError(f"{profile}: corrupt or missing 'report_dataset'; pass --dataset/--test") from None
    if max_test is not None:
        data = data.replace(max_test=max_test)
    return data.to_json()


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


def measure_and_write(kind: ReportKind, *, run_dir: Path, out: Path, entries: list[Entry], teacher: Entry | None,
                      ds, dataset: dict[str, Any], threads: int, latency_sentences: int, batch_size: int,
                      warmup: int, gpu: bool | None, command: str, quiet: bool, started: float) -> dict[str, Any]:
    """Measure every model of ``entries`` without an error on the test split of ``ds`` (on the
    CPU, and on CUDA when ``gpu`` or, for None, when available), then write the report folder
    ``out`` in one piece; returns the report as written to report.json."""
    import torch

    from distill.bench import size_on_disk_mb
    from distill.fileio import atomic_dir, write_json

    use_gpu = torch.cuda.is_available() if gpu is None else gpu
    if use_gpu and not torch.cuda.is_available():
        raise DistillError("--gpu given but CUDA is not available on this machine")
    settings = dict(threads=threads, latency_sentences=latency_sentences, batch_size=batch_size, warmup=warmup)
    baseline_mb, teacher_pred = measure(kind, entries, teacher, ds.test, use_gpu=use_gpu, quiet=quiet, **settings)
    sizes = {e.name: size_on_disk_mb(e.folder) for e in entries if e.error is None}
    report = assemble(kind, entries=entries, teacher=teacher, sizes=sizes, ds=ds, dataset=dataset, use_gpu=use_gpu,
                      baseline_mb=baseline_mb, command=command, run_dir=run_dir, **settings)
    with atomic_dir(out) as tmp:
        kind.render(report, tmp, entries=entries, teacher=teacher, teacher_pred=teacher_pred, ds=ds)
        report["elapsed_seconds"] = round(time.time() - started, 1)
        write_json(tmp / "report.json", report)
    return report


def measure(kind: ReportKind, entries: Sequence[Entry], teacher: Entry | None, test, *, threads: int,
            latency_sentences: int, batch_size: int, warmup: int, use_gpu: bool, quiet: bool) -> tuple[float | None, Any]:
    """Run ``python -m distill.bench`` once per model and device in a fresh process, each result
    (with the process's peak RSS) into ``e.cpu`` or ``e.gpu``; returns the peak RSS of a process
    that loads no model and the teacher's predictions on the CPU (None without)."""
    from distill.bench import run_child
    from distill.progress import progress_bar

    with tempfile.TemporaryDirectory(prefix="distill-report-") as scratch:
        test_file = Path(scratch) / "test.json"
        test_file.write_text(json.dumps(kind.test_json(test), ensure_ascii=False), encoding="utf-8")
        common = ["--test", str(test_file), *kind.bench_args, "--threads", str(threads),
                  "--latency-sentences", str(latency_sentences), "--batch-size", str(batch_size), "--warmup", str(warmup)]
        baseline, baseline_mb = run_child(["--baseline", *kind.bench_args, "--test", str(test_file),
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
                        bar.console.print(_progress_line(kind, e.name, device, result))
    return baseline_mb, teacher_pred


def _progress_line(kind: ReportKind, name: str, device: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{name} ({device}): failed: {r['error']}"
    if "skipped" in r:
        return f"{name} ({device}): not measured: {r['skipped']}"
    return f"{name} ({device}): {kind.one_line(r)}"


def model_row(e: Entry, r: dict[str, Any], size_mb: float, keys: Sequence[str]) -> dict[str, Any]:
    """One model's report row: what it is, what it was trained on, and ``keys`` of its bench result ``r``."""
    params = e.params
    training = e.meta.get("training") or {}
    return {"name": e.name, "folder": str(e.folder), "kind": e.info.get("kind"), "role": e.meta.get("role"),
            "size_mb": size_mb, "labelled": training.get("train_texts", training.get("train_sentences")),
            "transfer": training.get("transfer_texts", training.get("transfer_sentences", 0)) if training else None,
            "student": student_identity(params) if e.meta.get("role") == "student" else None,
            "alpha": params.get("alpha"), "compressed": bool(e.meta.get("source_kind")),
            **{k: r[k] for k in keys if k in r}}


def student_identity(params: dict[str, Any]) -> dict[str, Any] | None:
    """What makes two students twins apart from distillation: architecture, size, data and
    training schedule (alpha, T, the KD loss, the teacher and the transfer set left out)."""
    if "arch" not in params:
        return None
    same = ("arch", "dataset", "num_layers", "layers", "embedding_dim", "hidden_size", "lstm_layers", "dropout",
            "init_embeddings", "min_count", "max_length")
    config = {k: v for k, v in (params.get("train_config") or {}).items() if k not in ("checkpoint_minutes", "checkpoint_every")}
    return {**{k: params.get(k) for k in same}, "train_config": config}


def _compare(rows: list[dict[str, Any]], ref: dict[str, Any] | None, also: Sequence[tuple[str, str]] = ()) -> None:
    """Deltas and speedups vs the teacher ``ref``, and each distilled student's F1 against its
    gold-only twin (same identity, alpha 1: :func:`student_identity`), compressed forms included;
    ``also``: (prefix, metric) pairs compared the same way, e.g. ("acc", "accuracy") sets
    acc_vs_gold and acc_delta."""
    gold = {json.dumps(r["student"], sort_keys=True, default=str): r for r in rows
            if r.get("student") and r.get("alpha") == 1.0 and not r.get("compressed")}
    for row in rows:
        twin = gold.get(json.dumps(row.get("student"), sort_keys=True, default=str)) if row.get("student") else None
        row["f1_vs_gold"] = None if twin is None or twin is row else row["f1"] - twin["f1"]
        row["f1_delta"] = None if ref is None else row["f1"] - ref["f1"]
        row["speedup_b1"] = None if ref is None else ref["latency_ms_median"] / row["latency_ms_median"]
        row["speedup_b32"] = None if ref is None else row["throughput"] / ref["throughput"]
        for prefix, metric in also:
            row[f"{prefix}_vs_gold"] = None if twin is None or twin is row else row[metric] - twin[metric]
            row[f"{prefix}_delta"] = None if ref is None else row[metric] - ref[metric]


def assemble(kind: ReportKind, *, entries, teacher, sizes, ds, dataset, threads, latency_sentences, batch_size, warmup,
             use_gpu, baseline_mb, command, run_dir) -> dict[str, Any]:
    """The report as one JSON-able dict: header facts, one row per measured model, what failed."""
    from distill.bench import library_versions, machine_info

    ok = lambda r: bool(r) and "error" not in r and "skipped" not in r  # noqa: E731
    notes: list[str] = []
    rows = [model_row(e, e.cpu, sizes[e.name], kind.row_keys) for e in entries if e.error is None and ok(e.cpu)]
    gpu_rows = [model_row(e, e.gpu, sizes[e.name], kind.row_keys) for e in entries if e.error is None and ok(e.gpu)]
    ref = next((r for r in rows if teacher is not None and r["name"] == teacher.name), None)
    if teacher is not None and ref is None:
        notes.append(f"the teacher {teacher.name} could not be measured on the CPU, so deltas and speedups are n/a")
    gpu_ref = next((r for r in gpu_rows if teacher is not None and r["name"] == teacher.name), None)
    _compare(rows, ref, kind.deltas)
    _compare(gpu_rows, gpu_ref, kind.deltas)
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
    test = ds.test
    return {
        **kind.head, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command,
        "run_dir": str(run_dir), "machine": machine_info(threads), "libraries": library_versions(),
        "dataset": {"name": ds.name, "kwargs": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataset.items()},
                    "fingerprint": ds.fingerprint(), "test_fingerprint": test.fingerprint(), **kind.dataset_facts(ds)},
        "method": {"threads": threads, "latency_sentences": min(latency_sentences, len(test)), "warmup": warmup,
                   "throughput_batch_size": batch_size, "end_to_end": True, "fresh_process_per_model": True,
                   "baseline_rss_mb": baseline_mb},
        "teacher": None if teacher is None else teacher.name,
        "gpu_measured": bool(use_gpu),
        "models": rows, "gpu_models": gpu_rows, "failed": failed, "notes": notes,
    }
