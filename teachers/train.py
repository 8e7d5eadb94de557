"""``distill teacher train``: fine-tune a BERT-family encoder with a CRF head (``--task classify``:
with a pooled classification head, :func:`train_classifier_teacher`). What the teacher is made
of is a :class:`TeacherConfig` (:class:`ClassifierTeacherConfig`); how it trains, a
:class:`distill.train.TrainConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from distill.config import ConfigError, DataConfig
from distill.data import load_dataset
from distill.train import TrainConfig, train


@dataclass(frozen=True)
class TeacherConfig:
    """A tagging teacher: the ``backbone`` (None: the built-in default), its ``head`` (crf |
    bilstm-crf | softmax), ``extend_vocab`` (add training tokens the tokenizer maps to [UNK]),
    ``random_init`` / ``num_layers`` (ablations: random weights, the first N encoder layers),
    ``freeze_layers`` (the embeddings and the first N layers), ``dropout``, ``alignment`` (how
    characters or words meet sub-tokens; auto: natural for characters under SentencePiece,
    else first), ``prune_vocab`` (a SentencePiece vocabulary to the training data's pieces),
    ``max_length`` (sub-tokens per piece) and ``decoding`` (constrained | free Viterbi,
    recorded in the folder)."""

    backbone: str | None = None
    head: str = "crf"
    extend_vocab: bool = True
    random_init: bool = False
    num_layers: int | None = None
    freeze_layers: int = 0
    dropout: float = 0.1
    alignment: str = "auto"
    prune_vocab: bool = True
    max_length: int = 128
    decoding: str = "constrained"

    LR: ClassVar[float] = 2e-4  # the encoder learning rate of the e5-small recipe (distill run's)

    def __post_init__(self):
        from distill.modeling import DECODINGS

        if self.decoding not in DECODINGS:
            raise ConfigError("--decoding", f"one of {', '.join(DECODINGS)}", self.decoding)

    def identity(self, dataset: DataConfig | dict[str, Any], train_config: TrainConfig) -> dict[str, Any]:
        """The settings that make this teacher, as :func:`train_teacher` records them in its
        folder's ``meta["params"]``: what the pipeline compares to reuse a teacher (one place, so
        a changed default cannot silently stop reuse). An adapted backbone adds its ``finished``
        stamp; the decoding is not part of it (it changes no weight)."""
        return {"backbone": self.backbone, **_adapted(self.backbone), "head": self.head,
                "extend_vocab": self.extend_vocab, "random_init": self.random_init, "num_layers": self.num_layers,
                "freeze_layers": self.freeze_layers, "dropout": self.dropout, "alignment": self.alignment,
                "prune_vocab": self.prune_vocab, "max_length": self.max_length,
                "dataset": DataConfig.of(dataset).to_json(), "train_config": asdict(train_config)}


@dataclass(frozen=True)
class ClassifierTeacherConfig:
    """A text classifier teacher (:class:`teachers.bert_classifier.BertClassifier`: mean
    pooling, dropout, linear): the ``backbone`` (None: the built-in default, e5-small),
    ``max_length`` (sub-tokens per text; longer texts keep head and tail), ``dropout``,
    ``prune_vocab`` (a SentencePiece vocabulary to the training texts' pieces) and the
    ablations ``random_init`` / ``num_layers``, as for the tagging teacher."""

    backbone: str | None = None
    max_length: int = 256
    dropout: float = 0.1
    prune_vocab: bool = True
    random_init: bool = False
    num_layers: int | None = None

    LR: ClassVar[float] = 1e-4  # the encoder learning rate of the e5-small classifier recipe (distill run's)

    def identity(self, dataset: DataConfig | dict[str, Any], train_config: TrainConfig) -> dict[str, Any]:
        """The settings that make this teacher, as :func:`train_classifier_teacher` records them."""
        return {"task": "classify", "backbone": self.backbone, **_adapted(self.backbone),
                "max_length": self.max_length, "dropout": self.dropout, "prune_vocab": self.prune_vocab,
                "random_init": self.random_init, "num_layers": self.num_layers,
                "dataset": DataConfig.of(dataset).to_json(), "train_config": asdict(train_config)}


def _adapted(backbone: str | None) -> dict[str, str]:
    """``{"backbone_finished": stamp}`` for a backbone made by `distill teacher adapt` (so a
    re-adapted backbone in the same folder is another teacher's start), else nothing."""
    from teachers.adapt import adapted_stamp

    stamp = adapted_stamp(backbone)
    return {"backbone_finished": stamp} if stamp else {}


def train_teacher(*, out: Path, dataset: DataConfig | dict[str, Any], config: TeacherConfig = TeacherConfig(),
                  train_config: TrainConfig | None = None, resume: bool = False, quiet: bool = False) -> dict:
    """Train a teacher made as ``config`` says on ``dataset`` (:class:`distill.config.DataConfig`,
    or its JSON form) into ``out``; ``train_config`` None: :class:`TrainConfig`'s defaults."""
    import torch

    from teachers.bert_crf import build_teacher

    data = DataConfig.of(dataset)
    cfg = train_config or TrainConfig()
    ds = load_dataset(**data.to_json())
    torch.manual_seed(cfg.seed)
    model = build_teacher(
        ds.labels, ds.train.tokens, backbone=config.backbone, head=config.head, extend_vocab=config.extend_vocab,
        random_init=config.random_init, num_layers=config.num_layers, freeze_layers=config.freeze_layers,
        dropout=config.dropout, max_length=config.max_length, alignment=config.alignment,
        prune_vocab=config.prune_vocab,
        meta={"role": "teacher", "char_level": ds.train.char_level, "scheme": ds.train.scheme,
              "separator": ds.train.separator, "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(),
              "decoding": config.decoding},
    )
    vocab = model.meta["vocabulary"]
    if not quiet:
        print(f"teacher: {ds.name} train {len(ds.train)} / dev {len(ds.dev)} sentences, labels {ds.labels}")
        print(f"vocabulary: {vocab['unk_rate_before']:.1%} of train tokens were [UNK]; added {vocab['added']} tokens"
              + (f" -> {vocab['unk_rate_after']:.1%} [UNK]" if vocab.get("added") else "")
              + (f"; pruned to {vocab['pruned']['kept']} of {vocab['pruned']['original']} pieces" if "pruned" in vocab else ""))
    return train(model, ds.train, ds.dev, out, cfg, resume=resume, quiet=quiet,
                 extra_meta={"params": config.identity(data, cfg)})


def train_classifier_teacher(*, out: Path, dataset: DataConfig | dict[str, Any],
                             config: ClassifierTeacherConfig = ClassifierTeacherConfig(),
                             train_config: TrainConfig | None = None, resume: bool = False,
                             quiet: bool = False) -> dict:
    """Fine-tune a BERT classifier made as ``config`` says on ``dataset`` (a text
    :class:`distill.config.DataConfig` or its JSON form) into ``out``; early stopping on dev
    macro-F1."""
    import torch

    from distill.classify import train_classifier
    from teachers.bert_classifier import BertClassifier

    data = DataConfig.of(dataset)
    cfg = train_config or TrainConfig()
    ds = data.load_text()
    torch.manual_seed(cfg.seed)
    model = BertClassifier.from_backbone(
        config.backbone, ds.labels, texts=ds.train.texts, prune_vocab=config.prune_vocab,
        random_init=config.random_init, num_layers=config.num_layers, dropout=config.dropout,
        max_length=config.max_length,
        meta={"role": "teacher", "dataset": ds.name, "dataset_fingerprint": ds.fingerprint()})
    if not quiet:
        pruned = model.meta.get("vocabulary", {}).get("pruned")
        print(f"teacher: {ds.name} train {len(ds.train)} / dev {len(ds.dev)} texts, labels {ds.labels}"
              + (f"; vocabulary pruned to {pruned['kept']} of {pruned['original']} pieces" if pruned else ""))
    return train_classifier(model=model, data=ds, out=out, cfg=cfg, resume=resume, quiet=quiet,
                            extra_meta={"params": config.identity(data, cfg)})

