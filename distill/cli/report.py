"""``distill report RUN_DIR`` (benchmark every model of a run) and ``distill run RUN_DIR`` (the whole pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli import app
from distill.cli.common import (DEFAULT_DATASET, DEV, DEV_TAGS_FILE, FORMAT, MAX_DEV, MAX_TEST, MAX_TRAIN, TAGS_FILE,
                                TEST, TEST_TAGS_FILE, TRAIN, data_config, quiet_libraries, resolve_task, task_option)
from distill.errors import DistillError

THREADS = typer.Option(None, "--threads", help="Threads for every model (torch and ONNX Runtime); default: the CPU's cores.")


def _dataset(dataset: Optional[str], train, dev, test, fmt: str, tags_file, dev_tags_file, test_tags_file,
             max_train=None, max_dev=None, max_test=None, task: str = "tag"):
    """The data of the options given (so the run's own caps stay), or None when none was: the
    command's own default."""
    given = data_config(dataset or DEFAULT_DATASET, train, dev, test, fmt, max_train, max_dev, max_test,
                        tags_file=tags_file, dev_tags_file=dev_tags_file, test_tags_file=test_tags_file,
                        task=task).given()
    if task == "tag" and dataset is None and fmt == "auto" and set(given.keys) == {"name", "fmt"}:
        return None
    return given


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder holding model folders (searched recursively)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default RUN_DIR/report)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Built-in dataset; default: the run's profile.json data, "
                                          "else msra (a run of text classifiers: the teacher's training data)."),
    train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST, fmt: str = FORMAT,
    max_test: Optional[int] = MAX_TEST,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
    test_tags_file: Optional[Path] = TEST_TAGS_FILE,
    threads: Optional[int] = THREADS,
    latency_sentences: int = typer.Option(500, "--latency-sentences", help="Test sentences timed one by one at batch size 1."),
    batch_size: int = typer.Option(32, "--batch-size", help="Batch size of the throughput measurement."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed warm-up sentences per model."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--no-gpu", help="Also measure on CUDA (default: when available)."),
):
    """Benchmark every model under RUN_DIR on one test set: report.md, report.json, report.csv, plots.
    A run of text classifiers (its teacher's task) gets accuracy, macro-F1 and per-class scores."""
    quiet_libraries()
    from distill.report import make_report

    data = _dataset(dataset, train, dev, test, fmt, tags_file, dev_tags_file, test_tags_file)
    report = make_report(run_dir=run_dir, out=out, dataset=data.to_json() if data else None, max_test=max_test,
                         threads=threads, latency_sentences=latency_sentences, batch_size=batch_size, warmup=warmup,
                         gpu=gpu)
    where = out or run_dir / "report"
    print(f"{len(report['models'])} models measured"
          + (f", {len(report['failed'])} not measured" if report["failed"] else "") + f"; report written to {where / 'report.md'}")


@app.command("run")
def run_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder: every model and the report go here."),
    profile: str = typer.Option("quick", "--profile", help="Tagging: quick (about 13 min on a 2-core CPU) | cpu (8,000 sentences, about 1.5 h) | full (all data; for a GPU). "
                                "Classification: quick | cpu (2,000 labelled reviews, the rest as transfer text) | cpu-all "
                                "(every label, no transfer) | full."),
    backbone: Optional[str] = typer.Option(None, help="Teacher encoder: e5-small (default) | minilm-l6 | a local folder | a hub id."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Built-in dataset name (default msra; sentiment: "
                                          "text classification)."),
    task: Optional[str] = task_option("classify for --dataset sentiment, else tag; classify without --train runs on "
                                      "sentiment"),
    train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST, fmt: str = FORMAT,
    max_train: Optional[int] = MAX_TRAIN, max_dev: Optional[int] = MAX_DEV, max_test: Optional[int] = MAX_TEST,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
    test_tags_file: Optional[Path] = TEST_TAGS_FILE,
    threads: Optional[int] = THREADS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
):
    """The whole pipeline: teacher -> emissions -> students -> int8/ONNX/pruning -> report. Reruns skip finished steps."""
    quiet_libraries()
    from distill.pipeline import run_pipeline

    data = _dataset(dataset, train, dev, test, fmt, tags_file, dev_tags_file, test_tags_file, max_train, max_dev,
                    max_test, task=resolve_task(task, dataset or DEFAULT_DATASET))
    run_pipeline(run_dir=run_dir, profile=profile, backbone=backbone, threads=threads, quiet=quiet, dataset=data)
    if not Path(run_dir, "report", "report.json").exists():
        raise DistillError(f"{run_dir}: the pipeline finished without a report")
