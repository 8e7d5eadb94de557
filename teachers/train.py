"""``distill teacher train``: fine-tune a BERT-family encoder with a CRF head (``--task classify``:
with a pooled classification head, :func:`train_classifier_teacher`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.data import load_dataset
from distill.errors import DistillError
from distill.train import TrainConfig, train


def _adapted(backbone: str | None) -> dict[str, str]:
    """``{"backbone_finished": stamp}`` for a backbone made by `distill teacher adapt` (so a
    re-adapted backbone in the same folder is another teacher's start), else nothing."""
    from teachers.adapt import adapted_stamp

    stamp = adapted_stamp(backbone)
    return {"backbone_finished": stamp} if stamp else {}


def teacher_identity(*, backbone: str | None, dataset: DataConfig | dict[str, Any], train_config: TrainConfig, head: str = "crf",
                     extend_vocab: bool = True, random_init: bool = False, num_layers: int | None = None,
                     freeze_layers: int = 0, dropout: float = 0.1, alignment: str = "auto", prune_vocab: bool = True,
                     max_length: int = 128) -> dict[str, Any]:
    """The settings that make a tagging teacher, as :func:`train_teacher` records them in its
    folder's ``meta["params"]``: what the pipeline compares to reuse a teacher (one place, so a
    changed default cannot silently stop reuse). An adapted backbone adds its ``finished`` stamp."""
    return {"backbone": backbone, **_adapted(backbone), "head": head, "extend_vocab": extend_vocab,
            "random_init": random_init, "num_layers": num_layers, "freeze_layers": freeze_layers, "dropout": dropout,
            "alignment": alignment, "prune_vocab": prune_vocab, "max_length": max_length,
            "dataset": DataConfig.of(dataset).to_json(), "train_config": asdict(train_config)}


def train_teacher(*, out: Path, dataset: DataConfig | dict[str, Any], backbone: str | None = None, head: str = "crf",
                  extend_vocab: bool = True, random_init: bool = False, num_layers: int | None = None,
                  freeze_layers: int = 0, dropout: float = 0.1, max_length: int = 128,
                  train_config: TrainConfig | None = None, resume: bool = False, quiet: bool = False,
                  alignment: str = "auto", decoding: str = "constrained", prune_vocab: bool = True) -> dict:
    """Train a teacher on ``dataset`` (:class:`distill.config.DataConfig`, or its JSON form) into ``out``."""
    import torch

    from teachers.bert_crf import build_teacher

    from distill.modeling import DECODINGS

    if decoding not in DECODINGS:
        raise DistillError(f"--decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    cfg = train_config or TrainConfig()
    ds = load_dataset(**DataConfig.of(dataset).to_json())
    torch.manual_seed(cfg.seed)
    model = build_teacher(
        ds.labels, ds.train.tokens, backbone=backbone, head=head, extend_vocab=extend_vocab,
        random_init=random_init, num_layers=num_layers, freeze_layers=freeze_layers, dropout=dropout,
        max_length=max_length, alignment=alignment, prune_vocab=prune_vocab,
        meta={"role": "teacher", "char_level": ds.train.char_level, "scheme": ds.train.scheme,
              "separator": ds.train.separator, "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(), "decoding": decoding},
    )
    vocab = model.meta["vocabulary"]
    if not quiet:
        print(f"teacher: {ds.name} train {len(ds.train)} / dev {len(ds.dev)} sentences, labels {ds.labels}")
        print(f"vocabulary: {vocab['unk_rate_before']:.1%} of train tokens were [UNK]; added {vocab['added']} tokens"
              + (f" -> {vocab['unk_rate_after']:.1%} [UNK]" if vocab.get("added") else "")
              + (f"; pruned to {vocab['pruned']['kept']} of {vocab['pruned']['original']} pieces" if "pruned" in vocab else ""))
    params = teacher_identity(backbone=backbone, dataset=dataset, train_config=cfg, head=head, extend_vocab=extend_vocab,
                              random_init=random_init, num_layers=num_layers, freeze_layers=freeze_layers,
                              dropout=dropout, alignment=alignment, prune_vocab=prune_vocab, max_length=max_length)
    return train(model, ds.train, ds.dev, out, cfg, resume=resume, quiet=quiet, extra_meta={"params": params})


def train_classifier_teacher(*, out: Path, dataset: DataConfig | dict[str, Any], backbone: str | None = None,
                             train_config: TrainConfig | None = None, max_length: int = 256, dropout: float = 0.1,
                             prune_vocab: bool = True, random_init: bool = False, num_layers: int | None = None,
                             resume: bool = False, quiet: bool = False) -> dict:
    """Fine-tune a BERT classifier (:class:`teachers.bert_classifier.BertClassifier`: mean
    pooling, dropout, linear) on ``dataset`` (a text :class:`distill.config.DataConfig` or its JSON form)
    into ``out``; early stopping on dev macro-F1. ``backbone`` None: the built-in default
    (e5-small). ``max_length``: sub-tokens per text, longer texts keep head and tail.
    ``prune_vocab``: prune a SentencePiece vocabulary to the training texts' pieces;
    ``random_init`` / ``num_layers``: ablations, as for the tagging teacher."""
    import torch

    from distill.classify import train_classifier
    from teachers.bert_classifier import BertClassifier

    cfg = train_config or TrainConfig()
    data = DataConfig.of(dataset)
    ds = data.load_text()
    torch.manual_seed(cfg.seed)
    model = BertClassifier.from_backbone(
        backbone, ds.labels, texts=ds.train.texts, prune_vocab=prune_vocab, random_init=random_init,
        num_layers=num_layers, dropout=dropout, max_length=max_length,
        meta={"role": "teacher", "dataset": ds.name, "dataset_fingerprint": ds.fingerprint()})
    if not quiet:
        pruned = model.meta.get("vocabulary", {}).get("pruned")
        print(f"teacher: {ds.name} train {len(ds.train)} / dev {len(ds.dev)} texts, labels {ds.labels}"
              + (f"; vocabulary pruned to {pruned['kept']} of {pruned['original']} pieces" if pruned else ""))
    params = {"task": "classify", "backbone": backbone, **_adapted(backbone), "max_length": max_length,
              "dropout": dropout, "prune_vocab": prune_vocab, "random_init": random_init, "num_layers": num_layers,
              "dataset": data.to_json(), "train_config": asdict(cfg)}
    return train_classifier(model=model, data=ds, out=out, cfg=cfg, resume=resume, quiet=quiet,
                            extra_meta={"params": params})
