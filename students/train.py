"""``distill student``: train a BiLSTM-CRF or small-BERT student, distilled from a
teacher's emissions (``alpha < 1``) or on gold tags alone (``alpha == 1``, the baseline).

Every argument is checked before any data is read or any model built; the loss is
:class:`distill.kd.DistillationLoss` (formula in :mod:`distill.kd`, wired by
:func:`distill.kd.build_loss`), and the one training loop of :mod:`distill.train` does
the rest. A transfer set of unlabelled text
(:mod:`distill.transfer`) adds sentences the student learns from the teacher alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from distill.config import ConfigError, DataConfig, StudentBase, TransferConfig
from distill.errors import DistillError
from distill.kd import KDConfig
from distill.train import TrainConfig

# The BiLSTM-CRF's default dropout: 0.1 beat 0.5 on MSRA dev at 8,000 sentences (dev F1 0.790 vs 0.739)
# and on all 48,289 (0.908 vs 0.861), README's teacher-margin tables (benchmarks/margin.sh).
BILSTM_DROPOUT = 0.1


@dataclass(frozen=True)
class StudentConfig(StudentBase):
    """A tagging student's shape. The student's params record every field whatever the
    architecture (the pipeline's reuse check and the report's gold-only twin compare them), so
    each architecture's config (:data:`STUDENTS`) has them all, with its own defaults, its
    training defaults (:attr:`TRAIN`) and the checks of what applies to it.

    bert-small: ``num_layers`` teacher layers (``layers``, default the first ``num_layers``;
    ``num_layers`` None: as many as ``layers``, else 3); ``dropout`` None keeps the teacher's. bilstm-crf: ``embedding_dim``,
    ``hidden_size`` (both directions), ``lstm_layers``, ``dropout`` (None: :data:`BILSTM_DROPOUT`),
    ``min_count`` (rarer words are [UNK]), ``max_length`` (words per piece), ``init_embeddings``
    (start from the teacher's input embeddings, PCA-projected).
    """

    num_layers: int | None = None
    layers: list[int] | None = None
    embedding_dim: int = 128
    hidden_size: int = 256
    lstm_layers: int = 1
    dropout: float | None = None
    init_embeddings: bool = False
    min_count: int = 2
    max_length: int = 512

    arch: ClassVar[str]
    TEMPERATURE: ClassVar[float] = 4.0  # the distillation temperature when none is given

    def params(self) -> dict[str, Any]:
        """The shape as the student's params record it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def check(self, teacher: Path | None, kd: KDConfig) -> None:
        """What this architecture needs of the teacher and the loss (every architecture: a teacher to distil from)."""
        if teacher is None and kd.alpha < 1:
            raise ConfigError(f"--teacher is required with alpha {kd.alpha} < 1 (alpha 1 trains without a teacher)")

    def build(self, ds, teacher: Path | None, transfer_tokens, meta: dict):
        """``(student, loaded teacher or None)`` for dataset ``ds``."""
        raise NotImplementedError


@dataclass(frozen=True)
class BiLSTMCRFConfig(StudentConfig):
    """The BiLSTM-CRF: it learns everything from scratch at Adam's usual 2e-3 (no weight decay,
    no warmup, clipping at 5 as usual for LSTMs)."""

    arch: ClassVar[str] = "bilstm-crf"
    TRAIN: ClassVar[dict[str, Any]] = dict(epochs=10, batch_size=32, lr=2e-3, embedding_lr=2e-3, head_lr=2e-3,
                                           crf_lr=1e-2, weight_decay=0.0, warmup=0.0, clip=5.0, patience=3)

    def check(self, teacher: Path | None, kd: KDConfig) -> None:
        super().check(teacher, kd)
        if teacher is None and kd.hidden_weight > 0:
            raise ConfigError("--teacher is required for hidden-state matching (--hidden-weight > 0)")
        if teacher is None and self.init_embeddings:
            raise ConfigError("--teacher is required for --init-embeddings")
        if kd.hidden_weight > 0:
            raise ConfigError(f"hidden-state matching (--hidden-weight) needs arch bert-small, not {self.arch}")

    def build(self, ds, teacher: Path | None, transfer_tokens, meta: dict):
        from students.bilstm_crf import BiLSTMTagger, build_vocabulary

        # words met only in the transfer text get embeddings too: the teacher's emissions teach them
        vocab = build_vocabulary(list(ds.train.tokens) + list(transfer_tokens), self.min_count)
        model = BiLSTMTagger(vocab, ds.labels, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                             lstm_layers=self.lstm_layers,
                             dropout=BILSTM_DROPOUT if self.dropout is None else self.dropout,
                             max_length=self.max_length, meta=meta)
        if self.init_embeddings:
            t = _load_teacher(teacher)
            model.meta["embedding_init"] = model.init_embeddings_from(t.tokenizer,
                                                                      t.encoder.get_input_embeddings().weight)
        return model, None


@dataclass(frozen=True)
class BertSmallConfig(StudentConfig):
    """The small BERT: the teacher's embeddings and chosen layers; it continues from fine-tuned
    weights at the teacher's rates."""

    arch: ClassVar[str] = "bert-small"
    TRAIN: ClassVar[dict[str, Any]] = dict(epochs=5, batch_size=32, lr=1e-4, embedding_lr=1e-4, head_lr=1e-3,
                                           crf_lr=1e-2, weight_decay=0.01, warmup=0.06, clip=1.0, patience=2)

    def check(self, teacher: Path | None, kd: KDConfig) -> None:
        super().check(teacher, kd)
        if teacher is None:
            raise ConfigError("--teacher is required for bert-small (its layers are copied from the teacher)")
        if self.init_embeddings:
            raise ConfigError("--init-embeddings is for bilstm-crf (bert-small always starts from the teacher)")

    def build(self, ds, teacher: Path | None, transfer_tokens, meta: dict):
        from students.bert_small import build_bert_small

        t = _load_teacher(teacher)
        student = build_bert_small(t, self.num_layers, self.layers, meta=meta)
        if self.dropout is not None:
            student.dropout.p = student.dropout_p = self.dropout
        return student, t


# name -> the config (shape, training defaults, builder) of a tagging student
STUDENTS: dict[str, type[StudentConfig]] = {c.arch: c for c in (BiLSTMCRFConfig, BertSmallConfig)}
ARCHS = tuple(STUDENTS)


def student_class(arch: str) -> type[StudentConfig]:
    """The config class of a tagging student architecture (an unknown name lists the valid ones)."""
    if arch not in STUDENTS:
        raise ConfigError(f"unknown student architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    return STUDENTS[arch]


def default_train_config(arch: str, **overrides: Any) -> TrainConfig:
    """The training config for ``arch``, with the given (non-None) fields overridden."""
    return student_class(arch).train_config(**overrides)


def _load_teacher(teacher: Path):
    from distill.modeling import load_model
    from teachers.bert_crf import BertTagger

    model = load_model(teacher)
    if not isinstance(model, BertTagger):
        raise DistillError(f"{teacher}: the teacher must be a PyTorch BERT-CRF folder (kind 'bert-crf'), "
                           f"got kind {getattr(model, 'kind', '?')!r}")
    model.eval()
    return model


def train_student(*, out: Path, teacher: Path | None, student: StudentConfig, dataset: DataConfig | dict,
                  kd: KDConfig = KDConfig(), transfer: TransferConfig = TransferConfig(),
                  emissions: Path | None = None, train_config: TrainConfig | None = None, resume: bool = False,
                  quiet: bool = False) -> dict:
    """Train a student into the model folder ``out`` and return the training summary.

    ``student``: its architecture's config (:data:`STUDENTS`). ``dataset``: a
    :class:`distill.config.DataConfig` (or its JSON form). ``kd``: the loss (:mod:`distill.kd`).
    ``emissions``: the teacher's emissions folder (default TEACHER/emissions-train, made if
    missing). ``transfer``: unlabelled text (:mod:`distill.transfer`: a text file,
    ``corpus:FILE`` or ``msra:unlabelled``), learnt from the teacher alone, ``transfer.ratio``
    sentences per labelled sentence each epoch (None: all of them); the BiLSTM vocabulary then
    also counts their words. ``train_config`` None: the architecture's defaults (``student.TRAIN``).
    """
    import torch

    from distill.kd import build_loss
    from distill.modeling import read_meta
    from distill.train import default_loss, train

    # --- every argument, before any work ---------------------------------
    data = DataConfig.of(dataset)
    teacher = Path(teacher) if teacher is not None else None
    student.check(teacher, kd)
    if transfer.sources and kd.alpha == 1:
        raise ConfigError("--transfer needs distillation (alpha < 1): transfer sentences have no gold tags, "
                          "only the teacher's emissions")
    teacher_info = read_meta(teacher) if teacher is not None else None
    if teacher_info is not None and kd.alpha < 1 and kd.kd != "emission" \
            and teacher_info.get("config", {}).get("head") == "softmax":
        raise DistillError(f"{teacher}: the teacher has a softmax head (no CRF), so --kd {kd.kd} is impossible; "
                           f"use --kd emission")
    cfg = train_config or student.train_config()
    ds = data.load()
    if teacher_info is not None and list(teacher_info["labels"]) != ds.labels:
        raise DistillError(f"{teacher}: teacher labels {teacher_info['labels']} differ from the training data's "
                           f"{ds.labels}; train the student on the teacher's label set")

    meta = {"role": "student", "arch": student.arch, "teacher": str(teacher) if teacher is not None else None,
            "char_level": ds.train.char_level, "scheme": ds.train.scheme, "separator": ds.train.separator,
            "dataset": ds.name, "dataset_fingerprint": ds.fingerprint()}
    transfer_set = None
    if transfer.sources:
        from distill.transfer import load_transfer

        char_level = bool(teacher_info.get("meta", {}).get("char_level", ds.train.char_level))
        transfer_set = load_transfer(list(transfer.sources), teacher=teacher, dataset=data.to_json(),
                                     labelled=ds.train, labels=ds.labels, char_level=char_level, quiet=quiet)
        meta["transfer"] = transfer_set.meta(transfer.ratio)
    torch.manual_seed(cfg.seed)
    model, loaded_teacher = student.build(ds, teacher, transfer_set.corpus.tokens if transfer_set is not None else [],
                                          meta)

    # --- the loss ------------------------------------------------------------
    loss_fn, collate, em = default_loss, None, None
    if kd.alpha < 1 or kd.hidden_weight > 0:
        wiring = build_loss(kd, model, teacher=teacher, dataset=data.to_json(), corpus=ds.train, labels=ds.labels,
                            emissions=emissions, transfer=transfer_set, teacher_model=loaded_teacher, quiet=quiet)
        loss_fn, collate, em = wiring.loss_fn, wiring.collate, wiring.emissions
    del loaded_teacher  # only the loss keeps it, and only for hidden-state matching

    params = {"out": str(out), "teacher": str(teacher) if teacher is not None else None, "arch": student.arch,
              "dataset": data.to_json(), **asdict(kd),
              "emissions": str(em.folder) if em is not None else (str(emissions) if emissions else None),
              **student.params(), "train_config": asdict(cfg), "resume": resume}
    if transfer.sources:
        params.update(transfer=list(transfer.sources), transfer_ratio=transfer.ratio)
    if not quiet:
        what = "gold tags only (alpha 1)" if kd.alpha == 1 else f"alpha {kd.alpha}, T {kd.temperature}, kd {kd.kd}" \
            + (f", hidden {kd.hidden_weight}" if kd.hidden_weight else "")
        n_params = sum(p.numel() for p in model.parameters())
        extra = f" + transfer {len(transfer_set)}" if transfer_set is not None else ""
        print(f"student {student.arch} ({n_params / 1e6:.2f}M parameters): {ds.name} train {len(ds.train)}{extra} / "
              f"dev {len(ds.dev)}; {what}")
    return train(model, ds.train, ds.dev, out, cfg, loss_fn=loss_fn, collate=collate,
                 transfer=transfer_set.corpus if transfer_set is not None else None, transfer_ratio=transfer.ratio,
                 resume=resume, quiet=quiet, extra_meta={"params": params, "distillation": asdict(kd)})
