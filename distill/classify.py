"""Text classification: the classifier base class, scoring, the KD loss and training.

A classifier reads a whole text and returns one row of class scores (logits); the
teacher is a BERT classifier (:mod:`teachers.bert_classifier`), the students a BiLSTM
(:mod:`students.bilstm_classifier`) or the teacher cut to a few layers. Model folders
follow the tagger's contract (:class:`distill.modeling.SavedModel`) and record
``"task": "classify"`` in their meta.

The student's training loss on a batch (Tang et al. 2019; Hinton et al. 2015) is

    loss = alpha * CE(gold) + (1 - alpha) * KD

* ``CE(gold)``: cross-entropy of the gold labels, the mean over the batch's labelled
  texts only (texts of a transfer set have no gold label and add nothing; 0 when the
  batch has no labelled text);
* ``KD`` (:func:`logit_kd`): ``T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T))``,
  the mean over every text of the batch, labelled and transfer alike.

With ``alpha == 1`` the loss is the plain cross-entropy and no teacher logits are read.
Training runs the one loop of :func:`distill.train.train` (length-bucketed batches,
early stopping on dev macro-F1, resume, Accelerate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.config import ConfigError
from distill.errors import DistillError
from distill.modeling import SavedModel

if TYPE_CHECKING:
    from distill.textdata import TextCorpus, TextDataset
    from distill.train import TrainConfig

TASK = "classify"
NO_LABEL = -1  # batch["labels"] of a text without a gold label (transfer text)


@dataclass
class ClassifierOutput:
    """What every classifier returns. logits: (B, C); hidden_states: optional tuple of
    (B, S, H) encoder layers (BERT models only)."""

    logits: Tensor
    hidden_states: tuple[Tensor, ...] | None = None


def head_tail(ids: Sequence[int], limit: int, head: int) -> list[int]:
    """``ids`` when at most ``limit`` long, else its first ``head`` and last ``limit - head``
    (the start and the end of a long review both say most about it; Sun et al. 2019)."""
    ids = list(ids)
    if len(ids) <= limit:
        return ids
    return ids[:head] + ids[len(ids) - (limit - head):]


class Classifier(SavedModel):
    """Base of every PyTorch classifier: a featurizer (``encode``), a generic ``collate``,
    ``forward`` to :class:`ClassifierOutput` and the cross-entropy ``loss``.

    Subclasses set ``kind``, ``files`` and ``pad_id`` and implement ``encode``, ``forward``,
    ``config_dict``, ``build`` and ``save_extra``. Every feature holds ``input_ids``.
    """

    pad_id: int = 0
    max_length: int = 512  # tokens per text fed to the model (longer texts: head + tail)

    def __init__(self, labels: Sequence[str], meta: dict[str, Any] | None = None):
        super().__init__(labels, meta)
        if len(self.labels) < 2:
            raise DistillError(f"a classifier needs at least 2 labels, got {self.labels}")
        self.meta["task"] = TASK

    # --- featurizing -------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[dict]:
        """One feature dict per text: ``input_ids`` (list of int, truncated to ``max_length``)."""
        raise NotImplementedError

    def collate(self, features: Sequence[dict]) -> dict[str, Tensor]:
        """Pad features into a batch: ``input_ids`` (B, S) long, ``attention_mask`` (B, S)
        long (1 at real tokens); ``labels`` (B,) long when any feature has a ``label``
        (:data:`NO_LABEL` where one has none); ``teacher_logits`` (B, C) float32 when the
        features carry them (added by distillation, so models need no KD code)."""
        B = len(features)
        S = max(1, max(len(f["input_ids"]) for f in features))
        input_ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, S), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            attention[i, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if any("label" in f for f in features):
            batch["labels"] = torch.tensor([f.get("label", NO_LABEL) for f in features], dtype=torch.long)
        if "teacher_logits" in features[0]:
            batch["teacher_logits"] = torch.as_tensor(np.stack([f["teacher_logits"] for f in features]),
                                                      dtype=torch.float32)
        return batch

    # --- the model ---------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> ClassifierOutput:
        raise NotImplementedError

    def loss(self, out: ClassifierOutput, labels: Tensor) -> Tensor:
        """Mean cross-entropy of ``labels`` (B,) long under ``out.logits`` (B, C)."""
        return F.cross_entropy(out.logits.float(), labels)

    def param_group_of(self, name: str) -> str:
        """Which learning-rate group a parameter belongs to: embeddings|encoder|head."""
        if "word_embeddings" in name or name.startswith("embedding."):
            return "embeddings"
        if name.startswith(("encoder.", "lstm.")):
            return "encoder"
        return "head"


# ---------------------------------------------------------------------------
# Predicting and scoring


@torch.inference_mode()
def predict_logits(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Class scores (N, C) float32 of any classifier: a model with ``encode``, ``collate``
    and a call returning :class:`ClassifierOutput` (PyTorch, quantized or ONNX wrappers;
    a wrapper that computes probabilities returns their log as logits). Texts run in
    batches of similar length; rows come back in the order of ``texts``."""
    from distill.features import bucket_batches

    features = model.encode(list(texts))
    params = getattr(model, "parameters", None)
    device = next(params(), torch.empty(0)).device if params is not None else torch.device("cpu")
    out = np.zeros((len(features), len(model.labels)), dtype=np.float32)
    for idx in bucket_batches([len(f["input_ids"]) for f in features], batch_size):
        batch = model.collate([features[i] for i in idx])
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        out[idx] = model(batch).logits.float().cpu().numpy()
    return out


def predict_proba(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, C) float32 of any classifier (see :func:`predict_logits`)."""
    logits = torch.from_numpy(predict_logits(model, texts, batch_size))
    return torch.softmax(logits, dim=-1).numpy()


def predict_labels(model, texts: Sequence[str], batch_size: int = 64) -> list[str]:
    """The most probable label of each text."""
    return [model.labels[i] for i in predict_logits(model, texts, batch_size).argmax(-1).tolist()]


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy and per-class precision/recall/F1 of ``pred`` against ``gold``, and their
    unweighted means over ``labels`` (macro; a gold label outside ``labels`` counts as a
    class too). A ratio with a zero denominator is 0.

    Returns ``{"accuracy", "macro_f1", "macro_precision", "macro_recall", "n",
    "per_class": {label: {"precision", "recall", "f1", "support"}}}``.
    """
    if len(gold) != len(pred):
        raise ValueError(f"expected as many predictions as gold labels, got {len(pred)} for {len(gold)}")
    classes = list(labels) + sorted(set(gold) - set(labels))
    per_class = {}
    for c in classes:
        tp = sum(1 for g, p in zip(gold, pred) if g == c and p == c)
        n_pred = sum(1 for p in pred if p == c)
        support = sum(1 for g in gold if g == c)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    n = len(gold)
    macro = {k: sum(m[k] for m in per_class.values()) / len(classes) if classes else 0.0
             for k in ("precision", "recall", "f1")}
    return {"accuracy": sum(1 for g, p in zip(gold, pred) if g == p) / n if n else 0.0,
            "macro_f1": macro["f1"], "macro_precision": macro["precision"], "macro_recall": macro["recall"],
            "n": n, "per_class": per_class}


def evaluate_classifier(model, corpus: "TextCorpus", batch_size: int = 64) -> dict[str, Any]:
    """:func:`classification_metrics` of the model's labels for a labelled corpus, plus
    ``f1``, ``precision`` and ``recall`` (the macro means), as the tagger's metrics name them."""
    if corpus.labels is None:
        raise DistillError(f"{corpus.name}: evaluation needs labelled texts")
    metrics = classification_metrics(corpus.labels, predict_labels(model, corpus.texts, batch_size), model.labels)
    metrics.update(f1=metrics["macro_f1"], precision=metrics["macro_precision"], recall=metrics["macro_recall"])
    return metrics


# ---------------------------------------------------------------------------
# The loss


def logit_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)).

    student_logits, teacher_logits: (B, C). Returns a scalar. The T^2 keeps the
    gradients' size as T changes (Hinton et al. 2015).
    """
    T = temperature
    log_p_teacher = torch.log_softmax(teacher_logits.float() / T, dim=-1)  # shape: (B, C)
    log_p_student = torch.log_softmax(student_logits.float() / T, dim=-1)  # shape: (B, C)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # shape: (B,)
    return kl.mean() * T * T


class ClassificationLoss:
    """``loss_fn(model, output, batch) -> (loss, parts)`` for :func:`distill.train.train`:
    ``alpha * CE(gold) + (1 - alpha) * logit_kd`` (module docstring). Gold rows are those
    with a label (``batch["labels"]`` >= 0) and, with a transfer set, ``batch["gold"]``."""

    def __init__(self, alpha: float = 1.0, temperature: float = 1.0):
        if not 0 <= alpha <= 1:
            raise ConfigError("alpha", "in [0, 1] (weight of the gold-label loss)", alpha)
        if not temperature > 0:
            raise ConfigError("temperature (--T)", "> 0", temperature)
        self.alpha, self.temperature = alpha, temperature

    def __call__(self, model, out: ClassifierOutput, batch: dict) -> tuple[Tensor, dict[str, float]]:
        logits = out.logits  # shape: (B, C)
        labels = batch.get("labels")
        rows = labels >= 0 if labels is not None else torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
        if "gold" in batch:
            rows = rows & batch["gold"].bool()
        if bool(rows.all()):
            ce = model.loss(out, labels)
        elif bool(rows.any()):
            ce = model.loss(ClassifierOutput(logits[rows]), labels[rows])
        else:
            ce = logits.sum() * 0.0  # no gold term, but still part of the graph
        parts = {"ce": ce.item()}
        if self.alpha == 1:
            return ce, parts
        if "teacher_logits" not in batch:
            raise DistillError("the batch has no teacher logits; distillation with alpha < 1 needs them")
        kd = logit_kd(logits, batch["teacher_logits"], self.temperature)
        parts["kd"] = kd.item()
        return self.alpha * ce + (1 - self.alpha) * kd, parts


# ---------------------------------------------------------------------------
# Training


def text_pieces(model: Classifier, corpus: "TextCorpus", label_index: dict[str, int] | None = None) -> list:
    """The training items of a corpus for :func:`distill.train.train`: one
    :class:`distill.features.Piece` per text (``n_words`` its token count), its feature
    holding the label's index when the corpus is labelled."""
    from distill.features import Piece

    label_index = label_index if label_index is not None else {l: i for i, l in enumerate(model.labels)}
    features = model.encode(corpus.texts)
    if corpus.labels is not None:
        unknown = sorted(set(corpus.labels) - set(label_index))
        if unknown:
            raise DistillError(f"{corpus.name}: labels {unknown} are not among the model's {model.labels}")
        features = [dict(f, label=label_index[l]) for f, l in zip(features, corpus.labels)]
    return [Piece(i, 0, len(f["input_ids"]), f) for i, f in enumerate(features)]


def _check_logits(logits, n: int, C: int, what: str) -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float32)
    if arr.shape != (n, C):
        raise DistillError(f"{what}: expected teacher logits of shape ({n}, {C}) (texts x labels), got {arr.shape}")
    return arr


def train_classifier(*, model: Classifier, data: "TextDataset", out: str | Path, cfg: "TrainConfig",
                     teacher_logits=None, transfer: "TextCorpus | None" = None, transfer_logits=None,
                     alpha: float = 1.0, temperature: float = 1.0, transfer_ratio: float | None = None,
                     resume: bool = False, extra_meta: dict | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train ``model`` on ``data.train`` into the model folder ``out`` (best epoch by dev
    macro-F1) with :func:`distill.train.train`; returns the training summary.

    Loss: ``alpha * CE(gold) + (1 - alpha) * logit_kd`` at ``temperature`` (module
    docstring). ``teacher_logits`` (len(train), C) and ``transfer_logits`` (len(transfer), C):
    the teacher's logits (:func:`teacher_logits`), columns in ``model.labels`` order, needed
    when ``alpha < 1``. ``transfer``: unlabelled texts (labels None) learnt from the teacher
    alone, ``transfer_ratio`` per labelled text each epoch (None: all of them). The log
    records dev ``f1``/``precision``/``recall`` (macro) and ``accuracy`` per epoch.
    """
    from distill.train import train

    loss_fn = ClassificationLoss(alpha, temperature)
    if data.train.labels is None:
        raise DistillError(f"{data.train.name}: training texts need labels")
    C = len(model.labels)
    if transfer is not None:
        if transfer.labels is not None:
            raise DistillError(f"transfer data {transfer.name!r} must be unlabelled text (labels None)")
        if alpha == 1:
            raise DistillError("a transfer set needs distillation (alpha < 1): transfer texts have no gold label, "
                               "only the teacher's logits")
    elif transfer_logits is not None or transfer_ratio is not None:
        raise DistillError("transfer logits and --transfer-ratio need a transfer set")
    collate = None
    if alpha < 1:
        if teacher_logits is None:
            raise DistillError(f"alpha {alpha} < 1 needs the teacher's logits of the training texts")
        rows = [_check_logits(teacher_logits, len(data.train), C, data.train.name)]
        if transfer is not None:
            if transfer_logits is None:
                raise DistillError(f"transfer data {transfer.name!r} needs the teacher's logits")
            rows.append(_check_logits(transfer_logits, len(transfer), C, transfer.name))
        logits = np.concatenate(rows)  # row i: item ``sentence`` i (transfer texts after the labelled ones)

        def collate(chosen):
            return model.collate([dict(p.feature, teacher_logits=logits[p.sentence]) for p in chosen])

    label_index = {l: i for i, l in enumerate(model.labels)}

    def featurize(corpus):
        return text_pieces(model, corpus, label_index)

    def score_dev(m) -> dict[str, float]:
        metrics = evaluate_classifier(m, data.dev)
        return {k: metrics[k] for k in ("f1", "precision", "recall", "accuracy")}

    meta = dict(extra_meta or {})
    meta.setdefault("distillation", {"alpha": alpha, "temperature": temperature})
    if transfer is not None:
        meta.setdefault("transfer", {"name": transfer.name, "texts": len(transfer),
                                     "fingerprint": transfer.fingerprint(), "ratio": transfer_ratio})
    return train(model, data.train, data.dev, out, cfg, loss_fn=loss_fn, collate=collate, transfer=transfer,
                 transfer_ratio=transfer_ratio, resume=resume, extra_meta=meta, quiet=quiet,
                 featurize=featurize, score_dev=score_dev)


# ---------------------------------------------------------------------------
# Teacher logits, cached


def texts_fingerprint(texts: Sequence[str]) -> str:
    """16 hex characters identifying a list of texts (their order too)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def logits_path(teacher_folder: str | Path, texts: Sequence[str], labels: Sequence[str]) -> Path:
    """Where the teacher's logits of ``texts`` are cached: ``TEACHER/logits-<fingerprint>.npy``
    (texts and label set). Re-saving the teacher replaces its folder, cache included."""
    key = hashlib.sha256(f"{texts_fingerprint(texts)}|{'|'.join(labels)}".encode()).hexdigest()[:16]
    return Path(teacher_folder) / f"logits-{key}.npy"


def teacher_logits(teacher_folder: str | Path, texts: Sequence[str], batch_size: int = 64,
                   quiet: bool = True) -> np.ndarray:
    """The classifier teacher's logits (N, C) float32 of ``texts``, read from its cache file
    (:func:`logits_path`) or computed (on a GPU when there is one) and cached. A cache file
    that cannot be read or has the wrong shape is computed again."""
    from distill.fileio import atomic_path
    from distill.modeling import load_model, read_meta

    teacher_folder = Path(teacher_folder)
    info = read_meta(teacher_folder)
    if (info.get("meta") or {}).get("task") != TASK:
        raise DistillError(f"{teacher_folder}: not a text classifier (kind {info['kind']!r}); "
                           f"the teacher must be a classifier folder")
    texts = list(texts)
    path = logits_path(teacher_folder, texts, info["labels"])
    try:
        cached = np.load(path)
        if cached.shape == (len(texts), len(info["labels"])) and cached.dtype == np.float32:
            return cached
    except (OSError, ValueError, EOFError):
        pass
    if not quiet:
        print(f"teacher logits of {len(texts)} texts: computing them into {path}")
    teacher = load_model(teacher_folder)
    if isinstance(teacher, torch.nn.Module) and torch.cuda.is_available():
        teacher.to("cuda")
    logits = predict_logits(teacher, texts, batch_size)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, logits)
    except OSError:  # a read-only teacher folder only costs the next run the time
        pass
    return logits
