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

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from distill.config import DataConfig
from distill.errors import DistillError
from distill.train import TrainConfig

CLASSIFY_STUDENTS = ("bilstm", "bert-small")

# The BiLSTM's shape (Tang et al. 2019: one BiLSTM layer, max and mean pooling), sized for a
# 2-core CPU: 128-dimensional embeddings, 256 units per direction (hidden_size counts both).
BILSTM_SHAPE: dict[str, Any] = dict(embedding_dim=128, hidden_size=512, lstm_layers=1, dropout=0.1, min_count=2,
                                    max_length=512)

# Per-architecture training defaults. The BiLSTM learns from scratch at Adam's usual 2e-3
# (no weight decay or warmup, clipping at 5 as usual for LSTMs); the small BERT continues
# from fine-tuned teacher layers at a BERT fine-tuning rate.
DEFAULT_CLASSIFY_TRAIN: dict[str, dict[str, Any]] = {
    "bilstm": dict(epochs=10, batch_size=32, lr=2e-3, embedding_lr=2e-3, head_lr=2e-3, weight_decay=0.0, warmup=0.0,
                   clip=5.0, patience=3),
    "bert-small": dict(epochs=3, batch_size=32, lr=1e-4, embedding_lr=1e-4, head_lr=1e-3, weight_decay=0.01,
                       warmup=0.06, clip=1.0, patience=2),
}


def check_classify_arch(arch: str) -> None:
    if arch in CLASSIFY_STUDENTS:
        return
    from students.train import ARCHS

    if arch in ARCHS:
        raise DistillError(f"--arch {arch} is a tagging student; a text classifier's students are "
                           f"{', '.join(CLASSIFY_STUDENTS)}")
    raise DistillError(f"unknown classifier student architecture {arch!r}; expected one of {', '.join(CLASSIFY_STUDENTS)}")


def default_classifier_train_config(arch: str, **overrides: Any) -> TrainConfig:
    """The training config of a classifier student ``arch``, with the given (non-None) fields overridden."""
    check_classify_arch(arch)
    return TrainConfig(**dict(DEFAULT_CLASSIFY_TRAIN[arch], **{k: v for k, v in overrides.items() if v is not None}))


def _build_bilstm(ds, transfer, teacher: Path | None, opts: dict, meta: dict):
    from students.bilstm_classifier import BiLSTMClassifier

    # tokens met only in the transfer text get embeddings too: the teacher's logits teach them
    texts = list(ds.train.texts) + (list(transfer.texts) if transfer is not None else [])
    return BiLSTMClassifier.from_texts(texts, ds.labels, min_count=opts["min_count"],
                                       embedding_dim=opts["embedding_dim"], hidden_size=opts["hidden_size"],
                                       lstm_layers=opts["lstm_layers"], dropout=opts["dropout"],
                                       max_length=opts["max_length"], meta=meta)


def _build_bert_small(ds, transfer, teacher: Path | None, opts: dict, meta: dict):
    from teachers.bert_classifier import BertClassifier

    student = BertClassifier.from_teacher(teacher, opts["num_layers"], opts["layers"], meta=meta)
    if opts["dropout"] is not None:
        student.dropout.p = student.dropout_p = opts["dropout"]
    return student


# name -> builder(dataset, transfer corpus or None, teacher folder, options, meta) -> student
CLASSIFY_BUILDERS: dict[str, Callable] = {"bilstm": _build_bilstm, "bert-small": _build_bert_small}


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


def train_classifier_student(*, out: Path, teacher: Path | None, arch: str, dataset: DataConfig | dict, alpha: float = 0.5,
                             temperature: float = 1.0, transfer: list[str] | None = None,
                             transfer_ratio: float | None = None, num_layers: int = 3,
                             layers: list[int] | None = None, embedding_dim: int = BILSTM_SHAPE["embedding_dim"],
                             hidden_size: int = BILSTM_SHAPE["hidden_size"],
                             lstm_layers: int = BILSTM_SHAPE["lstm_layers"], dropout: float | None = None,
                             min_count: int = BILSTM_SHAPE["min_count"], max_length: int = BILSTM_SHAPE["max_length"],
                             train_config: TrainConfig | None = None, resume: bool = False,
                             quiet: bool = False) -> dict:
    """Train a classifier student into the model folder ``out``; returns the training summary.

    ``arch``: bilstm | bert-small. ``teacher``: a classifier folder (None only with ``alpha``
    1 and bilstm). ``dataset``: a text :class:`distill.config.DataConfig` (or its JSON form).
    ``alpha``, ``temperature``: the loss (module docstring). ``transfer``: transfer-set specs
    (:func:`distill.textdata.text_transfer`), ``transfer_ratio`` transfer texts per labelled
    text each epoch (None: all of them); the BiLSTM vocabulary also counts their tokens.
    bert-small: ``num_layers`` of the teacher's layers (``layers``, default evenly spaced);
    ``dropout`` None keeps the teacher's. bilstm: ``embedding_dim``, ``hidden_size`` (both
    directions), ``lstm_layers``, ``dropout`` (None: 0.1), ``min_count`` (rarer tokens are
    [UNK]), ``max_length`` (tokens per text; longer texts keep head and tail).
    ``train_config`` None: :data:`DEFAULT_CLASSIFY_TRAIN` of ``arch``.
    """
    import torch

    from distill.classify import ClassificationLoss, teacher_logits, train_classifier
    from distill.textdata import text_transfer

    # --- every argument, before any work ---------------------------------
    check_classify_arch(arch)
    data = DataConfig.of(dataset)
    ClassificationLoss(alpha, temperature)  # checks alpha and T
    teacher = Path(teacher) if teacher is not None else None
    teacher_info = _check_teacher(teacher, arch, alpha)
    if dropout is not None and not 0 <= dropout < 1:
        raise DistillError(f"dropout must be in [0, 1), got {dropout}")
    transfer = [str(t) for t in transfer or []]
    if transfer and alpha == 1:
        raise DistillError("--transfer needs distillation (alpha < 1): transfer texts have no gold label, "
                           "only the teacher's logits")
    if transfer_ratio is not None and not transfer:
        raise DistillError("--transfer-ratio needs a transfer set (--transfer FILE or sentiment:unlabelled)")
    if transfer_ratio is not None and not transfer_ratio > 0:
        raise DistillError(f"--transfer-ratio must be > 0 (transfer texts per labelled text), got {transfer_ratio}")
    cfg = train_config or default_classifier_train_config(arch)
    ds = data.load_text()
    if teacher_info is not None and list(teacher_info["labels"]) != ds.labels:
        raise DistillError(f"{teacher}: teacher labels {teacher_info['labels']} differ from the training data's "
                           f"{ds.labels}; train the student on the teacher's label set")
    transfer_set, transfer_meta = None, None
    if transfer:
        transfer_set, transfer_meta = _merge_transfer([text_transfer(t, ds, quiet=quiet) for t in transfer],
                                                      transfer_ratio)

    bilstm = arch == "bilstm"
    opts = {"num_layers": None if bilstm else num_layers, "layers": None if bilstm else layers,
            "embedding_dim": embedding_dim if bilstm else None, "hidden_size": hidden_size if bilstm else None,
            "lstm_layers": lstm_layers if bilstm else None, "min_count": min_count if bilstm else None,
            "max_length": max_length if bilstm else None,
            "dropout": BILSTM_SHAPE["dropout"] if dropout is None and bilstm else dropout}
    meta = {"role": "student", "arch": arch, "teacher": str(teacher) if teacher is not None else None,
            "dataset": ds.name, "dataset_fingerprint": ds.fingerprint()}
    torch.manual_seed(cfg.seed)
    model = CLASSIFY_BUILDERS[arch](ds, transfer_set, teacher, opts, meta)

    train_logits = transfer_logits = None
    if alpha < 1:
        train_logits = teacher_logits(teacher, ds.train.texts, quiet=quiet)
        if transfer_set is not None:
            transfer_logits = teacher_logits(teacher, transfer_set.texts, quiet=quiet)

    # the identity of the student (:func:`distill.report.student_identity`): options that do not
    # apply to ``arch`` are None, so a distilled student and its gold-only twin match
    params = {"task": "classify", "out": str(out), "teacher": str(teacher) if teacher is not None else None,
              "arch": arch, "dataset": data.to_json(),
              "alpha": alpha, "temperature": temperature, **{k: opts[k] for k in (
                  "num_layers", "layers", "embedding_dim", "hidden_size", "lstm_layers", "dropout", "min_count",
                  "max_length")},
              "train_config": asdict(cfg), "resume": resume}
    if transfer:
        params.update(transfer=transfer, transfer_ratio=transfer_ratio)
    if not quiet:
        what = "gold labels only (alpha 1)" if alpha == 1 else f"alpha {alpha}, T {temperature}"
        n_params = sum(p.numel() for p in model.parameters())
        extra = f" + transfer {len(transfer_set)}" if transfer_set is not None else ""
        print(f"student {arch} ({n_params / 1e6:.2f}M parameters): {ds.name} train {len(ds.train)}{extra} / "
              f"dev {len(ds.dev)} texts; {what}")
    return train_classifier(model=model, data=ds, out=out, cfg=cfg, teacher_logits=train_logits,
                            transfer=transfer_set, transfer_logits=transfer_logits, alpha=alpha,
                            temperature=temperature, transfer_ratio=transfer_ratio, resume=resume, quiet=quiet,
                            extra_meta={"params": params, "distillation": {"alpha": alpha, "temperature": temperature},
                                        **({"transfer": transfer_meta} if transfer_meta is not None else {})})


def emit_teacher_logits(*, teacher: Path, dataset: DataConfig | dict, transfer: list[str] | None = None, batch_size: int = 64,
                        quiet: bool = False) -> list[Path]:
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
