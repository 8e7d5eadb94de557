"""Compressing text classifiers (folders whose meta says ``"task": "classify"``): the parts
that differ from taggers. The commands are the taggers' (:func:`quantize.api.quantize`,
:func:`quantize.prune.prune`); they dispatch here on the task.

* Checking: a compressed classifier is compared with its fp32 source on dev texts
  (:func:`check_texts`): the share of texts given the same label and the largest
  difference of a class probability (:func:`compare_classifiers`).
* The torch wrappers (int8, fp16, bnb8) are the taggers' :class:`quantize.CompressedTagger`,
  which passes ``encode``, ``collate`` and the forward pass through to the source
  architecture; their folders keep the kinds ``torch-int8``, ``fp16`` and ``bnb8``.
* ONNX (kind ``onnx``): the graph takes ``input_ids`` and ``attention_mask`` (B, S), as
  :meth:`distill.classify.Classifier.collate` makes them for every classifier, and returns
  ``probabilities`` (B, C) float32 (softmax of the logits) and ``label`` (B,) int64 (their
  argmax); the class names are in the file's metadata (``labels``, JSON), so a bare
  ``onnxruntime.InferenceSession`` classifies text with nothing of distill but the
  tokenizer. A BiLSTM's layers run as ONNX ``LSTM`` nodes with ``sequence_lens``
  (:class:`quantize.onnx_graph.MaskedBiLSTM`), as packing runs them in PyTorch.
  :class:`OnnxClassifier` runs the file for ``distill eval``/``predict``.
* Pruning: head importance with the cross-entropy of the gold labels, and the fine-tune
  through :func:`distill.classify.train_classifier` (KD over logits from a teacher).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import DistillError

TASK = "classify"
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("probabilities", "label")
PROBABILITY_TOLERANCE = 1e-4  # max abs probability diff, ONNX fp32 vs PyTorch


def is_classifier(model_or_meta) -> bool:
    """True for a classifier model (or its meta dict): ``meta["task"] == "classify"``."""
    meta = model_or_meta if isinstance(model_or_meta, dict) else getattr(model_or_meta, "meta", None) or {}
    return meta.get("task") == TASK


# ---------------------------------------------------------------------------
# The dev texts a compressed classifier is checked on


def text_dataset_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The :func:`distill.textdata.load_text_dataset` dict of the data a classifier was
    trained on, from its meta (``params.dataset``, or a compressed folder's
    ``source_params``), without the ``max_*`` caps."""
    from quantize import recorded_dataset

    return recorded_dataset(meta, lambda key: not key.startswith("max_"))


def check_texts(meta: dict[str, Any], dataset: dict[str, Any] | None, n: int) -> list[str]:
    """The first ``n`` texts of the dev split of ``dataset`` (default: the classifier's
    training data, from its meta)."""
    from distill.textdata import load_text_dataset
    from quantize import check_dataset

    kwargs = check_dataset(meta, dataset, n, items="texts", model="classifier", recorded=text_dataset_of)
    texts = load_text_dataset(kwargs).dev.texts[:n]
    if not texts:
        raise DistillError("the dev split has no texts to check the compressed classifier on")
    return list(texts)


# ---------------------------------------------------------------------------
# Agreement with the fp32 source


@torch.inference_mode()
def compare_classifiers(reference, other, texts: Sequence[str], batch_size: int = 32) -> dict[str, Any]:
    """Label agreement and max abs class-probability difference between a PyTorch
    classifier ``reference`` and a compressed one (a call returning
    :class:`distill.classify.ClassifierOutput`) on ``texts``; also the max abs logit
    difference. Non-finite logits (fp16 overflow) are an error."""
    from distill.features import bucket_batches

    features = reference.encode(list(texts))
    max_prob = max_logit = 0.0
    same = 0
    for idx in bucket_batches([len(f["input_ids"]) for f in features], batch_size):
        batch = reference.collate([features[i] for i in idx])
        ref = reference(batch).logits.float()  # shape: (B, C)
        got = other(batch).logits.float().to(ref.device)
        if not torch.isfinite(got).all():
            raise DistillError("the compressed classifier gives non-finite logits (overflow); it cannot be used")
        max_logit = max(max_logit, (got - ref).abs().max().item())
        max_prob = max(max_prob, (got.softmax(-1) - ref.softmax(-1)).abs().max().item())
        same += int((got.argmax(-1) == ref.argmax(-1)).sum())
    return {"texts": len(features), "max_prob_diff": round(max_prob, 6), "max_logit_diff": round(max_logit, 6),
            "label_agreement": round(same / max(len(features), 1), 6)}


def describe_classifier_check(check: dict[str, Any], precise: bool = False) -> str:
    """The saved-model message's tail for a classifier check."""
    diff = f"{check['max_prob_diff']:.2e}" if precise else f"{check['max_prob_diff']:.4f}"
    return (f"; on {check['texts']} dev texts: max |probability diff| {diff}, "
            f"labels agree {check['label_agreement']:.2%}")


# ---------------------------------------------------------------------------
# ONNX: the graph


class ClassifierGraph(nn.Module):
    """What goes into a classifier's ONNX file:
    ``forward(input_ids, attention_mask) -> (probabilities (B, C), label (B,))``."""

    def __init__(self, source):
        super().__init__()
        from quantize.onnx_graph import MaskedBiLSTM

        if source.kind not in ("bert-cls", "bilstm-cls"):
            raise DistillError(f"ONNX export supports bert-cls and bilstm-cls classifiers, not {source.kind!r}")
        self.source = source
        self.lstm = MaskedBiLSTM(source.lstm) if source.kind == "bilstm-cls" else None

    def logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, C) class scores, as the source's forward computes them in eval mode."""
        s = self.source
        if self.lstm is None:
            return s({"input_ids": input_ids, "attention_mask": attention_mask}).logits
        # BiLSTMClassifier.forward without packing (which does not export with a dynamic length)
        mask = attention_mask.bool()  # shape: (B, S)
        hidden = self.lstm(s.embedding(input_ids), mask)  # shape: (B, S, H), zeros at padding
        m = mask.unsqueeze(-1)
        pooled_max = hidden.masked_fill(~m, float("-inf")).amax(1)  # shape: (B, H)
        pooled_mean = (hidden * m).sum(1) / m.sum(1).clamp_min(1)  # shape: (B, H)
        return s.classifier(torch.cat([pooled_max, pooled_mean], dim=-1))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        probabilities = self.logits(input_ids, attention_mask).float().softmax(-1)  # shape: (B, C)
        return probabilities, probabilities.argmax(-1)


def example_batch(source, texts: Sequence[str]) -> dict[str, Tensor]:
    """A batch of at least 2 texts and 2 positions to export with (a size of 1 would be
    fixed into the graph)."""
    texts = list(texts[:4]) if len(texts) >= 2 else [texts[0], texts[0]]
    batch = source.collate(source.encode(texts))
    if batch["input_ids"].shape[1] < 2:  # one padded position more
        batch = {k: torch.cat([v, torch.full_like(v[:, :1], source.pad_id if k == "input_ids" else 0)], 1)
                 for k, v in batch.items() if k in INPUTS}
    return batch


def export_classifier_graph(source, path: Path, example: dict[str, Tensor]) -> None:
    """Export ``source`` (probabilities + argmax) to ``path`` with dynamic batch size and
    length, the class names in its metadata."""
    import onnx

    from quantize.onnx_graph import dynamo_export

    graph = ClassifierGraph(source).eval().requires_grad_(False)
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    dims = ({0: batch, 1: tokens}, {0: batch, 1: tokens})
    dynamo_export(graph, tuple(example[n] for n in INPUTS), INPUTS, OUTPUTS, dims, path)
    for output in onnx.load(str(path), load_external_data=False).graph.output:
        first = output.type.tensor_type.shape.dim[0]
        if first.HasField("dim_value"):  # the exporter fell back to a fixed size
            raise DistillError(f"ONNX export fixed the batch size of output {output.name!r} ({first.dim_value}); "
                               f"the graph would only take that shape")


def label_metadata(path: Path, labels: Sequence[str]) -> None:
    """Record the class names (``labels``, a JSON list, index = the graph's ``label``) in
    the ONNX file's metadata."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    entry = model.metadata_props.add()
    entry.key, entry.value = "labels", json.dumps(list(labels), ensure_ascii=False)
    onnx.save(model, str(path))


def run_classifier_session(session, batch: dict[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (B, C) float32, label (B,) int64) for a collated batch."""
    feed = {i.name: batch[i.name].cpu().numpy() for i in session.get_inputs()}
    probabilities, label = session.run(list(OUTPUTS), feed)
    return probabilities, label


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime, with the inference interface of
    :func:`distill.classify.predict_logits` (``labels``, ``meta``, ``kind``,
    ``max_length``, ``encode``, ``collate``, a call returning ``ClassifierOutput``).
    Featurizing is the source model's own (rebuilt with no weights in memory).

    The graph gives probabilities, so the call's ``logits`` are their logs (floored at
    float32's smallest normal number): the same softmax, argmax and KD targets."""

    kind = "onnx"

    def __init__(self, featurizer, session, meta: dict[str, Any]):
        self.featurizer = featurizer
        self.session = session
        self.labels = list(featurizer.labels)
        self.meta = dict(meta)
        self.max_length = featurizer.max_length

    def encode(self, texts: Sequence[str]) -> list[dict]:
        return self.featurizer.encode(texts)

    def collate(self, features: Sequence[dict]) -> dict[str, Tensor]:
        return self.featurizer.collate(features)

    def run(self, batch: dict[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
        return run_classifier_session(self.session, batch)

    def __call__(self, batch: dict[str, Tensor]):
        from distill.classify import ClassifierOutput

        probabilities, _ = self.run(batch)
        logp = np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))
        return ClassifierOutput(torch.from_numpy(logp))

    forward = __call__

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any], device: str = "auto", threads: int | None = None) -> "OnnxClassifier":
        from quantize import build_skeleton
        from quantize.onnx_session import ONNX_FILE, make_session

        path = folder / ONNX_FILE
        if not path.exists():
            raise DistillError(f"{path}: missing; the ONNX model folder is incomplete")
        featurizer = build_skeleton(folder, info, "meta")
        return cls(featurizer, make_session(path, device, threads), info["meta"])


# ---------------------------------------------------------------------------
# ONNX: checking an export against PyTorch, and the command


@torch.inference_mode()
def check_classifier_export(source, session, texts: Sequence[str], exact: bool, batch_size: int = 32) -> dict[str, Any]:
    """Run ``session`` and ``source`` on the same batches (similar lengths, padded), then an
    empty text alone (the shortest input: a graph that fixed a size fails here).

    Always: the graph's ``label`` is the argmax of its own ``probabilities``. ``exact``
    (fp32 export): probabilities within :data:`PROBABILITY_TOLERANCE` of PyTorch's and the
    same label for every text. Raises :class:`DistillError` naming the first mismatch;
    returns the measured numbers."""
    from distill.features import bucket_batches

    features = source.encode([*texts, ""])
    batches = bucket_batches([len(f["input_ids"]) for f in features[:-1]], batch_size) + [[len(features) - 1]]
    max_diff, same = 0.0, 0
    for idx in batches:
        batch = source.collate([features[i] for i in idx])
        ref = source(batch).logits.float().softmax(-1)  # shape: (B, C)
        try:
            probabilities, label = run_classifier_session(session, batch)
        except Exception as e:  # onnxruntime's own error types
            raise DistillError(f"ONNX check failed: the graph cannot run a batch of shape "
                               f"{tuple(batch['input_ids'].shape)}: {str(e).splitlines()[0][:200]}") from None
        probabilities, label = torch.from_numpy(probabilities), torch.from_numpy(label)
        if not torch.equal(label, probabilities.argmax(-1)):
            raise DistillError("ONNX check failed: the graph's label is not the argmax of its probabilities")
        max_diff = max(max_diff, (probabilities - ref).abs().max().item())
        agree = label == ref.argmax(-1)
        if exact:
            if max_diff > PROBABILITY_TOLERANCE:
                raise DistillError(f"ONNX check failed: probabilities differ from PyTorch by {max_diff:.2e} "
                                   f"(tolerance {PROBABILITY_TOLERANCE:.0e})")
            if not agree.all():
                i = idx[int((~agree).nonzero()[0])]
                raise DistillError(f"ONNX check failed: the label differs from PyTorch's on dev text {i}")
        same += int(agree.sum())
    return {"texts": len(texts), "max_prob_diff": round(max_diff, 6),
            "tolerance": PROBABILITY_TOLERANCE if exact else None,
            "label_agreement": round(same / len(features), 6)}


def export_classifier(source, model: Path, out: Path, *, int8: bool, dataset: dict | None, check: int,
                      per_channel: bool, quiet: bool) -> Path:
    """``quantize onnx`` / ``onnx-int8`` of a classifier ``source`` (loaded from ``model``)
    into ``out/model.onnx``, checked against PyTorch on ``check`` dev texts (exactly for
    fp32; for int8 the fp32 graph's check is kept as ``check_fp32``)."""
    from quantize.onnx_export import write_onnx_folder

    texts = check_texts(source.meta, dataset, check)
    return write_onnx_folder(
        source, model, out, int8=int8, per_channel=per_channel, quiet=quiet, what="classifier",
        export=lambda path: export_classifier_graph(source, path, example_batch(source, texts)),
        check=lambda session, exact: check_classifier_export(source, session, texts, exact=exact),
        extra_meta={"inputs": list(INPUTS), "outputs": list(OUTPUTS)},
        finish=lambda path: label_metadata(path, source.labels))


# ---------------------------------------------------------------------------
# Pruning


def classifier_head_importance(model, texts: Sequence[str], labels: Sequence[str], batch_size: int = 16) -> list[Tensor]:
    """Michel et al. (2019) head importance of a BERT classifier
    (:func:`quantize.prune.gate_importance`), L the cross-entropy of the gold ``labels``."""
    from distill.features import bucket_batches
    from quantize.prune import gate_importance

    index = {l: i for i, l in enumerate(model.labels)}
    features = [dict(f, label=index[l]) for f, l in zip(model.encode(list(texts)), labels)]

    def losses():
        for idx in bucket_batches([len(f["input_ids"]) for f in features], batch_size):
            batch = model.collate([features[i] for i in idx])
            yield model.loss(model(batch), batch["labels"])

    return gate_importance(model, losses)


def finetune_classifier(model, masks, cfg, ds, out: Path, teacher: Path | None, extra_meta: dict,
                        quiet: bool) -> dict:
    """The pruning fine-tune of a classifier (``cfg``: :class:`quantize.prune.PruneConfig`)
    with :func:`distill.classify.train_classifier`: cross-entropy of the gold labels, or
    ``alpha * CE + (1 - alpha) * T^2 KL`` over the logits of ``teacher``; pruned weights
    get no gradient (:func:`quantize.prune.keep_pruned`)."""
    from dataclasses import asdict

    from distill.classify import teacher_logits, train_classifier
    from distill.train import TrainConfig
    from quantize.prune import keep_pruned

    src = (model.meta.get("training") or {}).get("config") or {}
    lr = cfg.lr or src.get("lr", 1e-4)
    scale = lr / src.get("lr", lr)
    train_cfg = TrainConfig(epochs=cfg.finetune_epochs, batch_size=src.get("batch_size", 32), lr=lr,
                            embedding_lr=(src.get("embedding_lr") or lr) * scale,
                            head_lr=src.get("head_lr", 1e-3) * scale, patience=cfg.finetune_epochs,
                            seed=src.get("seed", 13))
    alpha, logits, how = 1.0, None, "gold labels (cross-entropy)"
    if teacher is not None:
        alpha, logits = cfg.alpha, teacher_logits(teacher, ds.train.texts, quiet=quiet)
        how = f"KD from {teacher} (alpha {cfg.alpha}, T {cfg.temperature}, logit KL)"
    hooks = keep_pruned(masks)
    try:
        summary = train_classifier(model=model, data=ds, out=out, cfg=train_cfg, teacher_logits=logits, alpha=alpha,
                                   temperature=cfg.temperature, extra_meta=extra_meta, quiet=quiet)
    finally:
        for h in hooks:
            h.remove()
    return {"epochs": cfg.finetune_epochs, "loss": how, "best_dev_f1": summary.get("best_f1"),
            "train_config": asdict(train_cfg)}
