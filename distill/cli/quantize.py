"""``distill quantize int8|onnx|onnx-int8|bnb8|fp16 MODEL`` and ``distill prune MODEL``.

Each writes a new model folder (default: beside MODEL) that ``distill eval`` and
``distill predict`` take like any other. The plain functions are
:func:`quantize.api.quantize` and :func:`quantize.prune.prune`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli import app
from distill.cli.common import (DATASET, DEFAULT_DATASET, DEV, DEV_TAGS_FILE, FORMAT, MAX_DEV, MAX_TRAIN, TAGS_FILE,
                                TEST, TEST_TAGS_FILE, TRAIN, data_config, quiet_libraries)

quantize_app = typer.Typer(no_args_is_help=True, help="Quantize a trained model: int8, onnx, onnx-int8, bnb8, fp16.")
app.add_typer(quantize_app, name="quantize")

MODEL = typer.Argument(..., help="fp32 model folder (bert-crf or bilstm-crf).")
OUT = typer.Option(None, "--out", "-o", help="Output model folder (default MODEL-<method> beside MODEL).")
CHECK = typer.Option(200, "--check", help="Dev sentences to check the result against the fp32 model on.")
CHECK_TRAIN = typer.Option(None, "--train", help="Data to take the check's dev sentences from (default: the model's training data).")
CHECK_DEV = typer.Option(None, "--dev", help="Dev file for the check (default: carved from --train, or the model's).")


def _check_data(train: Optional[Path], dev: Optional[Path], fmt: str, tags_file: Optional[Path],
                dev_tags_file: Optional[Path]) -> Optional[dict]:
    """The check's data from --train/--dev (and their tag files), or None: the model's own training data."""
    if train is None and dev is not None:
        from distill.errors import DistillError

        raise DistillError("--dev needs --train (the check otherwise uses the model's own training data)")
    if train is None and tags_file is None and dev_tags_file is None:
        return None
    return data_config(DEFAULT_DATASET, train, dev, None, fmt, tags_file=tags_file,
                       dev_tags_file=dev_tags_file).to_json()


def _run(method: str, model: Path, out: Optional[Path], **options) -> None:
    quiet_libraries()
    from quantize.api import quantize

    quantize(method=method, model=model, out=out, **options)


@quantize_app.command("int8")
def int8_cmd(
    model: Path = MODEL, out: Optional[Path] = OUT,
    scheme: str = typer.Option("per-channel", "--scheme", help="Linear weight scales: per-channel | per-tensor."),
    lstm: bool = typer.Option(True, "--lstm/--no-lstm", help="Quantize LSTM layers too (BiLSTM models)."),
    check: int = CHECK, train: Optional[Path] = CHECK_TRAIN, dev: Optional[Path] = CHECK_DEV, fmt: str = FORMAT,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
):
    """PyTorch dynamic int8 (CPU): int8 Linear (and LSTM) weights, activations quantized per batch."""
    _run("int8", model, out, scheme=scheme, lstm=lstm, check=check,
         dataset=_check_data(train, dev, fmt, tags_file, dev_tags_file))


@quantize_app.command("onnx")
def onnx_cmd(
    model: Path = MODEL, out: Optional[Path] = OUT,
    check: int = CHECK, train: Optional[Path] = CHECK_TRAIN, dev: Optional[Path] = CHECK_DEV, fmt: str = FORMAT,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
):
    """Export to one ONNX file with the CRF's Viterbi decoding inside (run by ONNX Runtime)."""
    _run("onnx", model, out, check=check, dataset=_check_data(train, dev, fmt, tags_file, dev_tags_file))


@quantize_app.command("onnx-int8")
def onnx_int8_cmd(
    model: Path = MODEL, out: Optional[Path] = OUT,
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="Weight scales per output channel."),
    check: int = CHECK, train: Optional[Path] = CHECK_TRAIN, dev: Optional[Path] = CHECK_DEV, fmt: str = FORMAT,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
):
    """ONNX export as `quantize onnx`, then ONNX Runtime dynamic int8 quantization of its weights."""
    _run("onnx-int8", model, out, per_channel=per_channel, check=check,
         dataset=_check_data(train, dev, fmt, tags_file, dev_tags_file))


@quantize_app.command("bnb8")
def bnb8_cmd(
    model: Path = MODEL, out: Optional[Path] = OUT,
    threshold: float = typer.Option(6.0, "--threshold", help="LLM.int8 outlier threshold (0: all int8)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (where the check runs)."),
    check: int = CHECK, train: Optional[Path] = CHECK_TRAIN, dev: Optional[Path] = CHECK_DEV, fmt: str = FORMAT,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
):
    """bitsandbytes 8-bit Linear layers (LLM.int8), on CUDA or CPU."""
    _run("bnb8", model, out, threshold=threshold, device=device, check=check,
         dataset=_check_data(train, dev, fmt, tags_file, dev_tags_file))


@quantize_app.command("fp16")
def fp16_cmd(
    model: Path = MODEL, out: Optional[Path] = OUT,
    device: str = typer.Option("cuda", "--device", help="cuda (default; needs a GPU) | cpu (make and check it on CPU anyway)."),
    check: int = CHECK, train: Optional[Path] = CHECK_TRAIN, dev: Optional[Path] = CHECK_DEV, fmt: str = FORMAT,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
):
    """Half precision (CRF kept fp32) for GPU inference."""
    _run("fp16", model, out, device=device, check=check, dataset=_check_data(train, dev, fmt, tags_file, dev_tags_file))


@app.command("prune")
def prune_cmd(
    model: Path = MODEL,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output model folder (default MODEL-pruned-<method><sparsity>)."),
    method: str = typer.Option("magnitude", "--method", help="magnitude (global unstructured, Linear/LSTM weights) | heads (BERT attention heads) | vocab (embedding rows of unused sub-tokens)."),
    text: Optional[Path] = typer.Option(None, "--text", exists=True, dir_okay=False, help="--method vocab: keep the pieces of this text (one sentence per line) too, besides the model's training data."),
    sparsity: float = typer.Option(0.5, "--sparsity", help="Share of weights (magnitude) or of attention heads (heads) to remove, in [0, 1)."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Fine-tune this many epochs after pruning (0: none)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Distil from this (unpruned) model during the fine-tune."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fine-tune encoder learning rate (default: the model's own)."),
    alpha: float = typer.Option(0.5, "--alpha", help="With --teacher: weight of the gold-tag loss."),
    temperature: float = typer.Option(4.0, "--T", "--temperature", help="With --teacher: distillation temperature."),
    dataset: str = DATASET, train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST,
    fmt: str = FORMAT, max_train: Optional[int] = MAX_TRAIN, max_dev: Optional[int] = MAX_DEV,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
    test_tags_file: Optional[Path] = TEST_TAGS_FILE,
):
    """Prune weights by magnitude, BERT attention heads by importance (Michel et al. 2019), or a BERT
    model's vocabulary to the sub-tokens its text uses; optionally fine-tune."""
    quiet_libraries()
    from quantize.prune import prune

    data = None
    if any(v is not None for v in (train, max_train, max_dev, tags_file, dev_tags_file, test_tags_file)):
        data = data_config(dataset, train, dev, test, fmt, max_train, max_dev, tags_file=tags_file,
                           dev_tags_file=dev_tags_file, test_tags_file=test_tags_file).to_json()
    prune(model=model, out=out, method=method, sparsity=sparsity, finetune_epochs=finetune_epochs, teacher=teacher,
          dataset=data, lr=lr, alpha=alpha, temperature=temperature, text=text)
