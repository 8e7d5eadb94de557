"""``distill student``: train a BiLSTM-CRF or small-BERT student from a teacher (on a classifier
teacher, a BiLSTM or small-BERT classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli import app
from distill.cli.common import (CHECKPOINT_EVERY, CHECKPOINT_MINUTES, DATASET, DEV, DEV_TAGS_FILE, FORMAT, MAX_DEV,
                                MAX_TEST, MAX_TRAIN, TAGS_FILE, TEST, TEST_TAGS_FILE, TRAIN, data_config,
                                model_task, quiet_libraries, reject_options, resolve_task, task_option)
from distill.errors import DistillError


def parse_layers(text: Optional[str]) -> Optional[list[int]]:
    """``"0,2,4"`` -> ``[0, 2, 4]``."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DistillError(f"--layers expects comma-separated layer numbers such as 0,2,4, got {text!r}") from None


@app.command("student")
def student_cmd(
    arch: Optional[str] = typer.Option(None, "--arch", help="bilstm-crf | bert-small (default bilstm-crf); on a "
                                       "classifier teacher: bilstm | bert-small (default bilstm)"),
    task: Optional[str] = task_option("the teacher's; without a teacher, classify for --dataset sentiment, else tag"),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher model folder (optional only with --alpha 1 and bilstm-crf)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the gold-tag CRF loss; 1 - alpha goes to distillation (1: no teacher)."),
    temperature: Optional[float] = typer.Option(None, "--T", "--temperature", help="Distillation temperature (> 0; "
                                                "default 4, classifiers 1)."),
    kd: str = typer.Option("emission", "--kd", help="emission (KL of tag distributions) | marginal (KL of CRF marginals) | both "
                           "| viterbi (NLL of the teacher's decoded path)"),
    hidden_weight: float = typer.Option(0.0, "--hidden-weight", help="bert-small: weight of hidden-state matching (runs the teacher each batch)."),
    emissions: Optional[Path] = typer.Option(None, "--emissions", help="Teacher emissions folder (default TEACHER/emissions-train; made if missing)."),
    transfer: Optional[list[str]] = typer.Option(None, "--transfer", help="Unlabelled text learnt from the teacher alone "
                                                 "(repeatable): a text file, one sentence per line, or msra:unlabelled "
                                                 "(the MSRA train sentences outside --max-train); classifiers: a text "
                                                 "file, one text per line, or sentiment:unlabelled[:N]."),
    transfer_corpus: Optional[list[Path]] = typer.Option(None, "--transfer-corpus", exists=True, dir_okay=False,
                                                         help="A labelled file used as unlabelled text (its tags "
                                                         "ignored; repeatable)."),
    transfer_ratio: Optional[float] = typer.Option(None, "--transfer-ratio", help="Transfer sentences per labelled "
                                                   "sentence in each epoch (default: the whole transfer set)."),
    out: Path = typer.Option(Path("runs/student"), "--out", "-o", help="Output model folder."),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", help="bert-small: teacher layers to keep (default 3, or the count of --layers)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="bert-small: which teacher layers, e.g. 0,4,8 (default: the first --num-layers for a tagger, evenly spaced for a classifier)."),
    embedding_dim: int = typer.Option(128, "--embedding-dim", help="bilstm-crf, bilstm: word (or character) embedding size."),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", help="bilstm-crf, bilstm: BiLSTM output size, both "
                                              "directions together (default 256; bilstm 512)."),
    lstm_layers: int = typer.Option(1, "--lstm-layers", help="bilstm-crf, bilstm: stacked BiLSTM layers."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Dropout (default 0.1 for bilstm-crf, the teacher's for bert-small)."),
    init_embeddings: bool = typer.Option(False, "--init-embeddings", help="bilstm-crf: start word embeddings from the teacher's (PCA-projected)."),
    min_count: int = typer.Option(2, "--min-count", help="bilstm-crf, bilstm: words seen fewer times in train are [UNK]."),
    max_length: int = typer.Option(512, "--max-length", help="bilstm-crf: words per piece; longer sentences are split. "
                                   "bilstm: tokens per text; longer texts keep head and tail."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default 10 bilstm-crf, 5 bert-small; classifiers "
                                         "10 bilstm, 3 bert-small)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default 32)."),
    lr: Optional[float] = typer.Option(None, help="Encoder (BiLSTM / BERT layers) learning rate (default 2e-3 / 1e-4)."),
    embedding_lr: Optional[float] = typer.Option(None, help="Embedding learning rate (default 2e-3 / 1e-4)."),
    head_lr: Optional[float] = typer.Option(None, help="Linear layer learning rate (default 2e-3 / 1e-3)."),
    crf_lr: Optional[float] = typer.Option(None, help="CRF transitions learning rate (default 1e-2)."),
    warmup: Optional[float] = typer.Option(None, help="Share of steps for linear warmup (default 0 / 0.06)."),
    clip: Optional[float] = typer.Option(None, help="Gradient norm clipping, 0: off (default 5 / 1)."),
    patience: Optional[int] = typer.Option(None, help="Stop after this many epochs without dev F1 gain (default 3 / 2)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
    seed: int = typer.Option(13),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in OUT.work/."),
    dataset: str = DATASET, train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST,
    fmt: str = FORMAT, max_train: Optional[int] = MAX_TRAIN, max_dev: Optional[int] = MAX_DEV, max_test: Optional[int] = MAX_TEST,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
    test_tags_file: Optional[Path] = TEST_TAGS_FILE,
    checkpoint_minutes: float = CHECKPOINT_MINUTES, checkpoint_every: int = CHECKPOINT_EVERY,
):
    """Train a student on gold tags and the teacher's soft emissions:
    alpha * CRF NLL + (1 - alpha) * T^2 * KL(teacher || student); transfer sentences get the KD term alone.
    On a classifier teacher (or --task classify): alpha * CE(gold) + (1 - alpha) * T^2 * KL over the logits."""
    quiet_libraries()
    from distill.config import TextTransferConfig, TransferConfig
    from distill.kd import KDConfig

    layer_list = parse_layers(layers)
    sources = list(transfer or []) + [f"corpus:{p}" for p in transfer_corpus or []]
    train_options = dict(epochs=epochs, batch_size=batch_size, lr=lr, embedding_lr=embedding_lr, head_lr=head_lr,
                         crf_lr=crf_lr, warmup=warmup, clip=clip, patience=patience, max_steps=max_steps, seed=seed,
                         checkpoint_minutes=checkpoint_minutes, checkpoint_every=checkpoint_every)
    # the shape options given (the architecture's config has the defaults of those not given)
    shape = {k: v for k, v in dict(num_layers=num_layers, layers=layer_list, embedding_dim=embedding_dim,
                                   hidden_size=hidden_size, lstm_layers=lstm_layers, dropout=dropout,
                                   min_count=min_count, max_length=max_length).items() if v is not None}
    data = dict(dataset=dataset, train=train, dev=dev, test=test, fmt=fmt, max_train=max_train, max_dev=max_dev,
                max_test=max_test, tags_file=tags_file, dev_tags_file=dev_tags_file, test_tags_file=test_tags_file)
    if resolve_task(task, dataset, model_task(teacher), teacher) == "classify":
        from students.classify import classifier_student_class, train_classifier_student

        reject_options("classify", {"--kd": kd != "emission", "--hidden-weight": hidden_weight != 0,
                                    "--emissions": emissions is not None, "--init-embeddings": init_embeddings,
                                    "--crf-lr": crf_lr is not None})
        student = classifier_student_class(arch or "bilstm")
        summary = train_classifier_student(
            out=out, teacher=teacher, student=student(**shape), dataset=data_config(**data, task="classify"),
            alpha=alpha, temperature=student.TEMPERATURE if temperature is None else temperature,
            transfer=TextTransferConfig(tuple(sources), transfer_ratio),
            train_config=student.train_config(**train_options), resume=resume)
        print(f"best dev macro-F1 {summary['best_f1']:.4f} at epoch {summary['best_epoch']}; model saved to {out}")
        return
    from students.train import student_class, train_student

    student = student_class(arch or "bilstm-crf")
    summary = train_student(
        out=out, teacher=teacher, student=student(**shape, init_embeddings=init_embeddings),
        dataset=data_config(**data),
        kd=KDConfig(alpha=alpha, temperature=student.TEMPERATURE if temperature is None else temperature, kd=kd,
                    hidden_weight=hidden_weight),
        transfer=TransferConfig(tuple(sources), transfer_ratio), emissions=emissions,
        train_config=student.train_config(**train_options), resume=resume)
    print(f"best dev F1 {summary['best_f1']:.4f} at epoch {summary['best_epoch']}; model saved to {out}")
