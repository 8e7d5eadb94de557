"""``distill student`` on a classifier teacher: a BiLSTM (Tang et al. 2019) or a few-layer
BERT (the teacher's own layers), trained on gold labels alone (``alpha == 1``, the baseline)
or distilled from the teacher's logits.

The loss is ``alpha * CE(gold) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``
(:mod:`distill.classify`); texts of a transfer set (:func:`distill.textdata.text_transfer`:
a text file, or ``sentiment:unlabelled[:N]``) have no gold label and get the KD term alone.
The teacher's logits of the training and transfer texts come from
:func:`distill.classify.teacher_logits` (cached in the teacher's folder). Every argument is
checked before any data is read or any model built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from distill.config import ConfigError, DataConfig, StudentBase, TextTransferConfig
from distill.errors import DistillError
from distill.train import TrainConfig


@dataclass(frozen=True)
class ClassifierStudentConfig(StudentBase):
    """A classifier student's shape. Its params record every field, those that do not apply to
    the architecture as None (so a distilled student and its gold-only twin match,
    :func:`distill.report_steps.student_identity`); each architecture's config
    (:data:`CLASSIFY_BUILDERS`) sets its defaults, its training defaults (:attr:`TRAIN`) and
    which fields apply (:attr:`APPLIES`).

    bert-small: ``num_layers`` of the teacher's layers (``layers``, default evenly spaced;
    None: as many as ``layers``, else 3); ``dropout`` None keeps the teacher's. bilstm:
    ``embedding_dim``, ``hidden_size`` (both directions), ``lstm_layers``, ``dropout`` (None:
    :attr:`BiLSTMClassifierConfig.DROPOUT`), ``min_count`` (rarer tokens are [UNK]),
    ``max_length`` (tokens per text; longer texts keep head and tail).
    """

    num_layers: int | None = None
    layers: list[int] | None = None
    # The BiLSTM's shape (Tang et al. 2019: one BiLSTM layer, max and mean pooling), sized for a
    # 2-core CPU: 128-dimensional embeddings, 256 units per direction (hidden_size counts both).
    embedding_dim: int = 128
    hidden_size: int = 512
    lstm_layers: int = 1
    dropout: float | None = None
    min_count: int = 2
    max_length: int = 512

    arch: ClassVar[str]
    APPLIES: ClassVar[tuple[str, ...]]  # the fields this architecture uses
    DROPOUT: ClassVar[float | None] = None  # the dropout when none is given (None: the teacher's)
    TEMPERATURE: ClassVar[float] = 1.0  # the distillation temperature when none is given

    def params(self) -> dict[str, Any]:
        """The shape as the student's params record it: fields that do not apply are None, the
        dropout as used."""
        shape = {f.name: getattr(self, f.name) if f.name in self.APPLIES else None for f in fields(self)}
        return dict(shape, dropout=self.DROPOUT if self.dropout is None else self.dropout)

    def build(self, ds, transfer, teacher: Path | None, meta: dict):
        """The student for dataset ``ds`` (``transfer``: the transfer corpus or None)."""
        raise NotImplementedError


@dataclass(frozen=True)
class BiLSTMClassifierConfig(ClassifierStudentConfig):
    """The BiLSTM learns from scratch at Adam's usual 2e-3 (no weight decay or warmup, clipping
    at 5 as usual for LSTMs)."""

    arch: ClassVar[str] = "bilstm"
    TRAIN: ClassVar[dict[str, Any]] = dict(epochs=10, batch_size=32, lr=2e-3, embedding_lr=2e-3, head_lr=2e-3,
                                           weight_decay=0.0, warmup=0.0, clip=5.0, patience=3)
    APPLIES: ClassVar[tuple[str, ...]] = ("embedding_dim", "hidden_size", "lstm_layers", "dropout", "min_count",
                                          "max_length")
    DROPOUT: ClassVar[float | None] = 0.1

    def build(self, ds, transfer, teacher: Path | None, meta: dict):
        from students.bilstm_classifier import BiLSTMClassifier

        # tokens met only in the transfer text get embeddings too: the teacher's logits teach them
        texts = list(ds.train.texts) + (list(transfer.texts) if transfer is not None else [])
        return BiLSTMClassifier.from_texts(texts, ds.labels, min_count=self.min_count,
                                           embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                                           lstm_layers=self.lstm_layers, dropout=self.params()["dropout"],
                                           max_length=self.max_length, meta=meta)


@dataclass(frozen=True)
class BertSmallClassifierConfig(ClassifierStudentConfig):
    """The small BERT continues from fine-tuned teacher layers at a BERT fine-tuning rate."""

    arch: ClassVar[str] = "bert-small"
    TRAIN: ClassVar[dict[str, Any]] = dict(epochs=3, batch_size=32, lr=1e-4, embedding_lr=1e-4, head_lr=1e-3,
                                           weight_decay=0.01, warmup=0.06, clip=1.0, patience=2)
    APPLIES: ClassVar[tuple[str, ...]] = ("num_layers", "layers", "dropout")

    def build(self, ds, transfer, teacher: Path | None, meta: dict):
        from teachers.bert_classifier import BertClassifier

        student = BertClassifier.from_teacher(teacher, self.num_layers, self.layers, meta=meta)
        if self.dropout is not None:
            student.dropout.p = student.dropout_p = self.dropout
        return student


# name -> the config (shape, training defaults, builder) of a classifier student
CLASSIFY_BUILDERS: dict[str, type[ClassifierStudentConfig]] = {
    c.arch: c for c in (BiLSTMClassifierConfig, BertSmallClassifierConfig)}
CLASSIFY_STUDENTS = tuple(CLASSIFY_BUILDERS)


def classifier_student_class(arch: str) -> type[ClassifierStudentConfig]:
    """The config class of a classifier student architecture (an unknown name lists the valid ones)."""
    if arch in CLASSIFY_BUILDERS:
        return CLASSIFY_BUILDERS[arch]
    from students.train import ARCHS

    if arch in ARCHS:
        raise ConfigError(f"--arch {arch} is a tagging student; a text classifier's students are "
                          f"{', '.join(CLASSIFY_STUDENTS)}")
    raise ConfigError(f"unknown classifier student architecture {arch!r}; expected one of "
                      f"{', '.join(CLASSIFY_STUDENTS)}")


def default_classifier_train_config(arch: str, **overrides: Any) -> TrainConfig:
    """The training config of a classifier student ``arch``, with the given (non-None) fields overridden."""
    return classifier_student_class(arch).train_config(**overrides)


def _check_teacher(teacher: Path | None, arch: str, alpha: float) -> dict | None:
    """The teacher's description (None without one), refused unless it is a classifier."""
    from distill.modeling import read_meta

    if teacher is None:
        if alpha < 1:
            raise DistillError(f"--teacher is required with alpha {alpha} < 1 (alpha 1 trains without a teacher)")
        if arch == "bert-small":
            raise DistillError("--teacher is required for bert-small (its layers are copied from the teacher)")
        return None
    info = read_meta(teacher)
    if (info.get("meta") or {}).get("task") != "classify":
        raise DistillError(f"{teacher}: a tagger (kind {info['kind']!r}), not a text classifier; train the teacher "
                           f"with distill teacher train --task classify")
    if arch == "bert-small" and info["kind"] != "bert-cls":
        raise DistillError(f"{teacher}: bert-small copies layers of a PyTorch BERT classifier (kind 'bert-cls'), "
                           f"got kind {info['kind']!r}")
    return info


def _merge_transfer(parts: list, ratio: float | None):
    """One unlabelled corpus of several transfer sets (a text in two of them once), and its meta."""
    from distill.textdata import TextCorpus

    if len(parts) == 1:
        return parts[0], parts[0].meta(ratio)
    texts = list(dict.fromkeys(t for p in parts for t in p.texts))
    corpus = TextCorpus("+".join(p.spec for p in parts), texts, None)
    meta = {"sources": [p.spec for p in parts], "texts": len(corpus), "fingerprint": corpus.fingerprint(),
            "dropped_overlap": sum(p.dropped_overlap for p in parts),
            "dropped_labelled": sum(p.dropped_labelled for p in parts), "ratio": ratio}
    return corpus, meta


def train_classifier_student(*, out: Path, teacher: Path | None, student: ClassifierStudentConfig,
                             dataset: DataConfig | dict, alpha: float = 0.5, temperature: float = 1.0,
                             transfer: TextTransferConfig = TextTransferConfig(),
                             train_config: TrainConfig | None = None, resume: bool = False,
                             quiet: bool = False) -> dict:
    """Train a classifier student into the model folder ``out``; returns the training summary.

    ``student``: its architecture's config (:data:`CLASSIFY_BUILDERS`). ``teacher``: a
    classifier folder (None only with ``alpha`` 1 and bilstm). ``dataset``: a text
    :class:`distill.config.DataConfig` (or its JSON form). ``alpha``, ``temperature``: the loss
    (module docstring). ``transfer``: transfer-set specs (:func:`distill.textdata.text_transfer`),
    ``transfer.ratio`` transfer texts per labelled text each epoch (None: all of them); the
    BiLSTM vocabulary also counts their tokens. ``train_config`` None: ``student.TRAIN``.
    """
    import torch

    from distill.classify import ClassificationLoss, teacher_logits, train_classifier
    from distill.textdata import text_transfer

    # --- every argument, before any work ---------------------------------
    data = DataConfig.of(dataset)
    ClassificationLoss(alpha, temperature)  # checks alpha and T
    teacher = Path(teacher) if teacher is not None else None
    teacher_info = _check_teacher(teacher, student.arch, alpha)
    if transfer.sources and alpha == 1:
        raise ConfigError("--transfer needs distillation (alpha < 1): transfer texts have no gold label, "
                          "only the teacher's logits")
    cfg = train_config or student.train_config()
    ds = data.load_text()
    if teacher_info is not None and list(teacher_info["labels"]) != ds.labels:
        raise DistillError(f"{teacher}: teacher labels {teacher_info['labels']} differ from the training data's "
                           f"{ds.labels}; train the student on the teacher's label set")
    transfer_set, transfer_meta = None, None
    if transfer.sources:
        transfer_set, transfer_meta = _merge_transfer([text_transfer(t, ds, quiet=quiet) for t in transfer.sources],
                                                      transfer.ratio)

    meta = {"role": "student", "arch": student.arch, "teacher": str(teacher) if teacher is not None else None,
            "dataset": ds.name, "dataset_fingerprint": ds.fingerprint()}
    torch.manual_seed(cfg.seed)
    model = student.build(ds, transfer_set, teacher, meta)

    train_logits = transfer_logits = None
    if alpha < 1:
        train_logits = teacher_logits(teacher, ds.train.texts, quiet=quiet)
        if transfer_set is not None:
            transfer_logits = teacher_logits(teacher, transfer_set.texts, quiet=quiet)

    # the identity of the student (:func:`distill.report_steps.student_identity`): options that do not
    # apply to the architecture are None, so a distilled student and its gold-only twin match
    params = {"task": "classify", "out": str(out), "teacher": str(teacher) if teacher is not None else None,
              "arch": student.arch, "dataset": data.to_json(), "alpha": alpha, "temperature": temperature,
              **student.params(), "train_config": asdict(cfg), "resume": resume}
    if transfer.sources:
        params.update(transfer=list(transfer.sources), transfer_ratio=transfer.ratio)
    if not quiet:
        what = "gold labels only (alpha 1)" if alpha == 1 else f"alpha {alpha}, T {temperature}"
        n_params = sum(p.numel() for p in model.parameters())
        extra = f" + transfer {len(transfer_set)}" if transfer_set is not None else ""
        print(f"student {student.arch} ({n_params / 1e6:.2f}M parameters): {ds.name} train {len(ds.train)}{extra} / "
              f"dev {len(ds.dev)} texts; {what}")
    return train_classifier(model=model, data=ds, out=out, cfg=cfg, teacher_logits=train_logits,
                            transfer=transfer_set, transfer_logits=transfer_logits, alpha=alpha,
                            temperature=temperature, transfer_ratio=transfer.ratio, resume=resume, quiet=quiet,
                            extra_meta={"params": params, "distillation": {"alpha": alpha, "temperature": temperature},
                                        **({"transfer": transfer_meta} if transfer_meta is not None else {})})


def emit_teacher_logits(*, teacher: Path, dataset: DataConfig | dict, transfer: list[str] | None = None,
                        batch_size: int = 64, quiet: bool = False) -> list[Path]:
    """Compute (or find) the classifier teacher's logits that :func:`train_classifier_student`
    reads: those of the training texts of ``dataset`` and, for each ``transfer`` spec, of its
    texts after the same overlap rule; returns the cache files (``TEACHER/logits-*.npy``)."""
    from distill.classify import logits_path, teacher_logits
    from distill.modeling import read_meta
    from distill.textdata import text_transfer

    info = read_meta(teacher)
    if (info.get("meta") or {}).get("task") != "classify":
        raise DistillError(f"{teacher}: a tagger (kind {info['kind']!r}), not a text classifier")
    ds = DataConfig.of(dataset).load_text()
    if list(info["labels"]) != ds.labels:
        raise DistillError(f"{teacher}: teacher labels {info['labels']} differ from the data's {ds.labels}")
    sets = [ds.train.texts] if not transfer else [text_transfer(t, ds, quiet=quiet).texts for t in transfer]
    paths = []
    for texts in sets:
        teacher_logits(teacher, texts, batch_size, quiet=quiet)
        paths.append(logits_path(teacher, texts, info["labels"]))
    return paths
