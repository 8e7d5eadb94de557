"""``distill student``: train a BiLSTM-CRF or small-BERT student, distilled from a
teacher's emissions (``alpha < 1``) or on gold tags alone (``alpha == 1``, the baseline).

Every argument is checked before any data is read or any model built; the loss is
:class:`distill.kd.DistillationLoss` (formula in :mod:`distill.kd`, wired by
:func:`distill.kd.build_loss`), and the one training loop of :mod:`distill.train` does
the rest. A transfer set of unlabelled text
(:mod:`distill.transfer`) adds sentences the student learns from the teacher alone.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from distill.config import DataConfig
from distill.errors import DistillError
from distill.train import TrainConfig

ARCHS = ("bilstm-crf", "bert-small")

# The BiLSTM-CRF's default dropout: 0.1 beat 0.5 on MSRA dev at 8,000 sentences (dev F1 0.790 vs 0.739)
# and on all 48,289 (0.908 vs 0.861), README's teacher-margin tables (benchmarks/margin.sh).
BILSTM_DROPOUT = 0.1

# Per-architecture training defaults. The BiLSTM learns everything from scratch at
# Adam's usual 2e-3 (no weight decay, no warmup, clipping at 5 as usual for LSTMs);
# the small BERT continues from fine-tuned weights at the teacher's rates.
DEFAULT_TRAIN: dict[str, dict[str, Any]] = {
    "bilstm-crf": dict(epochs=10, batch_size=32, lr=2e-3, embedding_lr=2e-3, head_lr=2e-3, crf_lr=1e-2,
                       weight_decay=0.0, warmup=0.0, clip=5.0, patience=3),
    "bert-small": dict(epochs=5, batch_size=32, lr=1e-4, embedding_lr=1e-4, head_lr=1e-3, crf_lr=1e-2,
                       weight_decay=0.01, warmup=0.06, clip=1.0, patience=2),
}


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise DistillError(f"unknown student architecture {arch!r}; expected one of {', '.join(ARCHS)}")


def default_train_config(arch: str, **overrides: Any) -> TrainConfig:
    """The training config for ``arch``, with the given (non-None) fields overridden."""
    check_arch(arch)
    return TrainConfig(**dict(DEFAULT_TRAIN[arch], **{k: v for k, v in overrides.items() if v is not None}))


def _load_teacher(teacher: Path):
    from distill.modeling import load_model
    from teachers.bert_crf import BertTagger

    model = load_model(teacher)
    if not isinstance(model, BertTagger):
        raise DistillError(f"{teacher}: the teacher must be a PyTorch BERT-CRF folder (kind 'bert-crf'), "
                           f"got kind {getattr(model, 'kind', '?')!r}")
    model.eval()
    return model


def _build_bilstm(ds, teacher: Path | None, opts: dict, meta: dict):
    from students.bilstm_crf import BiLSTMTagger, build_vocabulary

    # words met only in the transfer text get embeddings too: the teacher's emissions teach them
    vocab = build_vocabulary(list(ds.train.tokens) + list(opts["transfer_tokens"]), opts["min_count"])
    model = BiLSTMTagger(vocab, ds.labels, embedding_dim=opts["embedding_dim"], hidden_size=opts["hidden_size"],
                         lstm_layers=opts["lstm_layers"], dropout=opts["dropout"], max_length=opts["max_length"],
                         meta=meta)
    if opts["init_embeddings"]:
        t = _load_teacher(teacher)
        model.meta["embedding_init"] = model.init_embeddings_from(t.tokenizer, t.encoder.get_input_embeddings().weight)
    return model, None


def _build_bert_small(ds, teacher: Path | None, opts: dict, meta: dict):
    from students.bert_small import build_bert_small

    t = _load_teacher(teacher)
    student = build_bert_small(t, opts["num_layers"], opts["layers"], meta=meta)
    if opts["dropout"] is not None:
        student.dropout.p = student.dropout_p = opts["dropout"]
    return student, t


# name -> builder(dataset, teacher folder, options, meta) -> (student, loaded teacher or None)
STUDENTS: dict[str, Callable] = {"bilstm-crf": _build_bilstm, "bert-small": _build_bert_small}


def _check_teacher(teacher: Path | None, arch: str, kd_cfg, init_embeddings: bool) -> None:
    if teacher is not None:
        return
    if kd_cfg.alpha < 1:
        raise DistillError(f"--teacher is required with alpha {kd_cfg.alpha} < 1 (alpha 1 trains without a teacher)")
    if arch == "bert-small":
        raise DistillError("--teacher is required for bert-small (its layers are copied from the teacher)")
    if kd_cfg.hidden_weight > 0:
        raise DistillError("--teacher is required for hidden-state matching (--hidden-weight > 0)")
    if init_embeddings:
        raise DistillError("--teacher is required for --init-embeddings")


def train_student(*, out: Path, teacher: Path | None, arch: str = "bilstm-crf", dataset: DataConfig | dict,
                  alpha: float = 0.5, temperature: float = 4.0, kd: str = "emission", hidden_weight: float = 0.0,
                  emissions: Path | None = None, num_layers: int = 3, layers: list[int] | None = None,
                  embedding_dim: int = 128, hidden_size: int = 256, lstm_layers: int = 1,
                  dropout: float | None = None, init_embeddings: bool = False, min_count: int = 2,
                  max_length: int = 512, transfer: list[str | Path] | None = None,
                  transfer_ratio: float | None = None, train_config: TrainConfig | None = None,
                  resume: bool = False, quiet: bool = False) -> dict:
    """Train a student into the model folder ``out`` and return the training summary.

    ``arch``: bilstm-crf | bert-small. ``dataset``: a :class:`distill.config.DataConfig` (or its JSON form).
    ``alpha``, ``temperature``, ``kd``, ``hidden_weight``: the loss (:mod:`distill.kd`).
    ``emissions``: the teacher's emissions folder (default TEACHER/emissions-train, made
    if missing). bert-small: ``num_layers`` teacher layers (``layers``, default evenly
    spaced); ``dropout`` None keeps the teacher's. bilstm-crf: ``embedding_dim``,
    ``hidden_size`` (both directions), ``lstm_layers``, ``dropout`` (None: :data:`BILSTM_DROPOUT`),
    ``min_count`` (rarer words are [UNK]), ``max_length`` (words per piece),
    ``init_embeddings`` (start from the teacher's input embeddings, PCA-projected).
    ``transfer``: sources of unlabelled text (:mod:`distill.transfer`: a text file,
    ``corpus:FILE`` or ``msra:unlabelled``), learnt from the teacher alone, ``transfer_ratio``
    sentences per labelled sentence each epoch (None: all of them); the BiLSTM vocabulary
    then also counts their words.
    ``train_config`` None: the per-architecture defaults (:data:`DEFAULT_TRAIN`).
    """
    import torch

    from distill.kd import KDConfig, build_loss
    from distill.modeling import read_meta
    from distill.train import default_loss, train

    # --- every argument, before any work ---------------------------------
    kd_cfg = KDConfig(alpha=alpha, temperature=temperature, kd=kd, hidden_weight=hidden_weight)
    data = DataConfig.of(dataset)
    check_arch(arch)
    teacher = Path(teacher) if teacher is not None else None
    _check_teacher(teacher, arch, kd_cfg, init_embeddings)
    if hidden_weight > 0 and arch != "bert-small":
        raise DistillError(f"hidden-state matching (--hidden-weight) needs arch bert-small, not {arch}")
    if init_embeddings and arch != "bilstm-crf":
        raise DistillError("--init-embeddings is for bilstm-crf (bert-small always starts from the teacher)")
    if dropout is not None and not 0 <= dropout < 1:
        raise DistillError(f"dropout must be in [0, 1), got {dropout}")
    transfer = list(transfer or [])
    if transfer and kd_cfg.alpha == 1:
        raise DistillError("--transfer needs distillation (alpha < 1): transfer sentences have no gold tags, "
                           "only the teacher's emissions")
    if transfer_ratio is not None and not transfer:
        raise DistillError("--transfer-ratio needs a transfer set (--transfer FILE or msra:unlabelled)")
    if transfer_ratio is not None and not transfer_ratio > 0:
        raise DistillError(f"--transfer-ratio must be > 0 (transfer sentences per labelled sentence), got {transfer_ratio}")
    teacher_info = read_meta(teacher) if teacher is not None else None
    if teacher_info is not None and kd_cfg.alpha < 1 and kd_cfg.kd != "emission" \
            and teacher_info.get("config", {}).get("head") == "softmax":
        raise DistillError(f"{teacher}: the teacher has a softmax head (no CRF), so --kd {kd} is impossible; "
                           f"use --kd emission")
    cfg = train_config or default_train_config(arch)
    ds = data.load()
    if teacher_info is not None and list(teacher_info["labels"]) != ds.labels:
        raise DistillError(f"{teacher}: teacher labels {teacher_info['labels']} differ from the training data's "
                           f"{ds.labels}; train the student on the teacher's label set")

    meta = {"role": "student", "arch": arch, "teacher": str(teacher) if teacher is not None else None,
            "char_level": ds.train.char_level, "scheme": ds.train.scheme, "separator": ds.train.separator,
            "dataset": ds.name, "dataset_fingerprint": ds.fingerprint()}
    transfer_set = None
    if transfer:
        from distill.transfer import load_transfer

        char_level = bool(teacher_info.get("meta", {}).get("char_level", ds.train.char_level))
        transfer_set = load_transfer(transfer, teacher=teacher, dataset=data.to_json(), labelled=ds.train, labels=ds.labels,
                                     char_level=char_level, quiet=quiet)
        meta["transfer"] = transfer_set.meta(transfer_ratio)
    opts = {"num_layers": num_layers, "layers": layers, "embedding_dim": embedding_dim, "hidden_size": hidden_size,
            "lstm_layers": lstm_layers, "dropout": BILSTM_DROPOUT if dropout is None and arch == "bilstm-crf" else dropout,
            "init_embeddings": init_embeddings, "min_count": min_count, "max_length": max_length,
            "transfer_tokens": transfer_set.corpus.tokens if transfer_set is not None else []}
    torch.manual_seed(cfg.seed)
    model, loaded_teacher = STUDENTS[arch](ds, teacher, opts, meta)

    # --- the loss ------------------------------------------------------------
    loss_fn, collate, em = default_loss, None, None
    if kd_cfg.alpha < 1 or kd_cfg.hidden_weight > 0:
        wiring = build_loss(kd_cfg, model, teacher=teacher, dataset=data.to_json(), corpus=ds.train, labels=ds.labels,
                            emissions=emissions, transfer=transfer_set, teacher_model=loaded_teacher, quiet=quiet)
        loss_fn, collate, em = wiring.loss_fn, wiring.collate, wiring.emissions
    del loaded_teacher  # only the loss keeps it, and only for hidden-state matching

    params = {"out": str(out), "teacher": str(teacher) if teacher is not None else None, "arch": arch,
              "dataset": data.to_json(), "alpha": alpha, "temperature": temperature, "kd": kd, "hidden_weight": hidden_weight,
              "emissions": str(em.folder) if em is not None else (str(emissions) if emissions else None),
              "num_layers": num_layers, "layers": layers, "embedding_dim": embedding_dim, "hidden_size": hidden_size,
              "lstm_layers": lstm_layers, "dropout": dropout, "init_embeddings": init_embeddings,
              "min_count": min_count, "max_length": max_length, "train_config": asdict(cfg), "resume": resume}
    if transfer:
        params.update(transfer=[str(t) for t in transfer], transfer_ratio=transfer_ratio)
    if not quiet:
        what = "gold tags only (alpha 1)" if kd_cfg.alpha == 1 else \
            f"alpha {alpha}, T {temperature}, kd {kd}" + (f", hidden {hidden_weight}" if hidden_weight else "")
        n_params = sum(p.numel() for p in model.parameters())
        extra = f" + transfer {len(transfer_set)}" if transfer_set is not None else ""
        print(f"student {arch} ({n_params / 1e6:.2f}M parameters): {ds.name} train {len(ds.train)}{extra} / "
              f"dev {len(ds.dev)}; {what}")
    return train(model, ds.train, ds.dev, out, cfg, loss_fn=loss_fn, collate=collate,
                 transfer=transfer_set.corpus if transfer_set is not None else None, transfer_ratio=transfer_ratio,
                 resume=resume, quiet=quiet, extra_meta={"params": params, "distillation": asdict(kd_cfg)})

