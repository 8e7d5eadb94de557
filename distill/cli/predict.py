"""``distill eval MODEL`` and ``distill predict MODEL`` for any kind of model folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from distill.cli import app
from distill.cli.common import DATASET, DEV, FORMAT, MAX_TEST, TEST, TRAIN, dataset_kwargs, quiet_libraries
from distill.errors import DistillError


@app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="Model folder (teacher, student, quantized, ONNX)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write metrics JSON here (default MODEL/eval.json)."),
    split: str = typer.Option("test", help="test | dev"),
    batch_size: int = typer.Option(64),
    dataset: str = DATASET, train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST,
    fmt: str = FORMAT, max_test: Optional[int] = MAX_TEST,
):
    """Entity-level precision/recall/F1 (seqeval, strict) on the test (or dev) split."""
    quiet_libraries()
    from distill.predict import eval_model

    metrics = eval_model(model=model, out=out, split=split, batch_size=batch_size,
                         dataset=dataset_kwargs(dataset, train, dev, test, fmt, None, None, max_test))
    from distill.evaluate import format_metrics

    print(format_metrics(metrics))


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="Model folder."),
    text: Optional[str] = typer.Argument(None, help="Raw text to tag; omit and use --input for a file."),
    input: Optional[str] = typer.Option(None, "--input", "-i", help="File of raw text (one sentence per line), a labelled file with --labelled, or - for stdin."),
    labelled: bool = typer.Option(False, help="The input is a labelled corpus (CoNLL/MSRA/JSONL): tag its tokens."),
    output_format: str = typer.Option("conll", "--output-format", help="conll | json"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here instead of stdout."),
    batch_size: int = typer.Option(64),
):
    """Tag raw text (split as the model's training data was) and print CoNLL or JSON with entity spans."""
    quiet_libraries()
    from distill.predict import predict_file

    if text is None and input is None:
        raise DistillError("give TEXT or --input FILE (- for stdin)")
    predict_file(model=model, text=text, input=input, labelled=labelled, output_format=output_format, out=out,
                 batch_size=batch_size, stdout=sys.stdout)
