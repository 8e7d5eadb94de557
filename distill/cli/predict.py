"""``distill eval MODEL`` and ``distill predict MODEL`` for any kind of model folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from distill.cli import app
from distill.cli.common import (DATASET, DEV, DEV_TAGS_FILE, FORMAT, FORMATS_HELP, MAX_TEST, TAGS_FILE, TEST,
                                TEST_TAGS_FILE, TRAIN, data_config, quiet_libraries, tags_option)
from distill.errors import DistillError

DECODING = typer.Option(None, help="constrained | free: Viterbi over valid BIO paths only (the default, "
                        "recorded in the model folder) or over every path.")


@app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="Model folder (teacher, student, quantized, ONNX)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write metrics JSON here (default MODEL/eval.json)."),
    split: str = typer.Option("test", help="test | dev"),
    batch_size: int = typer.Option(64),
    dataset: str = DATASET, train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST,
    fmt: str = FORMAT, max_test: Optional[int] = MAX_TEST, decoding: Optional[str] = DECODING,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
    test_tags_file: Optional[Path] = TEST_TAGS_FILE,
):
    """Entity-level precision/recall/F1 (seqeval, strict) on the test (or dev) split; for a text
    classifier, accuracy, macro-F1 and per-class precision/recall/F1."""
    quiet_libraries()
    from distill.predict import eval_model

    data = data_config(dataset, train, dev, test, fmt, max_test=max_test, tags_file=tags_file,
                       dev_tags_file=dev_tags_file, test_tags_file=test_tags_file).to_json()
    metrics = eval_model(model=model, out=out, split=split, batch_size=batch_size, decoding=decoding, dataset=data)
    from distill.evaluate import format_metrics
    from distill.predict_classify import format_classification

    print(format_classification(metrics) if metrics.get("task") == "classify" else format_metrics(metrics))


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="Model folder."),
    text: Optional[str] = typer.Argument(None, help="Raw text to tag; omit and use --input for a file."),
    input: Optional[str] = typer.Option(None, "--input", "-i", help="File of raw text (one sentence per line), a labelled file with --labelled, or - for stdin."),
    labelled: bool = typer.Option(False, help="The input is a labelled corpus (CoNLL/MSRA/JSONL/two files): tag its tokens."),
    fmt: str = typer.Option("auto", "--format", help=f"Format of a --labelled input: {FORMATS_HELP}."),
    tags_file: Optional[Path] = tags_option("--tags-file", "a --labelled --input"),
    output_format: Optional[str] = typer.Option(None, "--output-format", help="conll | json | tags (one line of tags "
                                                "per text line: the default for a two-file input, else conll); "
                                                "classifiers: text (label<TAB>probabilities, the default) | json"),
    json_lines: bool = typer.Option(False, "--json", help="JSON output, one object per line (= --output-format json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here instead of stdout."),
    batch_size: int = typer.Option(64),
    decoding: Optional[str] = DECODING,
):
    """Tag raw text (split as the model's training data was) and print CoNLL or JSON with entity spans.
    A text classifier prints per line its label and the class probabilities (in the order of the
    labels in its distill.json), or JSON with --json."""
    quiet_libraries()
    from distill.predict import predict_file

    if text is None and input is None:
        raise DistillError("give TEXT or --input FILE (- for stdin)")
    if json_lines:
        if output_format not in (None, "json"):
            raise DistillError(f"--json and --output-format {output_format} contradict each other; give one")
        output_format = "json"
    predict_file(model=model, text=text, input=input, labelled=labelled, fmt=fmt, tags_file=tags_file,
                 output_format=output_format, out=out, batch_size=batch_size, stdout=sys.stdout, decoding=decoding)
