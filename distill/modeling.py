"""The one output contract, the base class every tagger shares, and model folders.

Taggers and text classifiers (:mod:`distill.classify`, meta ``"task": "classify"``)
share the folder part, :class:`SavedModel`.

A trained model is a folder: ``model.safetensors``, a ``distill.json`` with its kind,
config, label set and data facts, plus whatever its featurizer needs (tokenizer
files, a vocabulary). :func:`load_model` rebuilds any kind from the folder alone.
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from distill.crf import CRF
from distill.errors import DistillError
from distill.fileio import atomic_dir, stamp, write_json

META_FILE = "distill.json"
FORMAT_VERSION = 1

# kind -> "module:Class"; imported only when a folder of that kind is loaded.
MODEL_KINDS: dict[str, str] = {
    "bert-crf": "teachers.bert_crf:BertTagger",
    "bilstm-crf": "students.bilstm_crf:BiLSTMTagger",
    "bert-cls": "teachers.bert_classifier:BertClassifier",
    "bilstm-cls": "students.bilstm_classifier:BiLSTMClassifier",
    "torch-int8": "quantize.int8:Int8Tagger",
    "onnx": "quantize.onnx_session:OnnxTagger",
    "bnb8": "quantize.bnb:Bnb8Tagger",
    "fp16": "quantize.fp16:HalfTagger",
}


@dataclass
class TaggerOutput:
    """What every teacher and student returns.

    emissions: (B, W, K) word-level tag scores; mask: (B, W) bool, true at real words;
    hidden_states: optional tuple of (B, S, H) encoder layers (BERT models only).
    """

    emissions: Tensor
    mask: Tensor
    hidden_states: tuple[Tensor, ...] | None = None


def save_weights(module: nn.Module, path: str | Path) -> None:
    """``module``'s state dict as a safetensors file, each tensor its own CPU copy: on a GPU,
    cuDNN keeps an LSTM's weights as views of one flat buffer, which safetensors refuses."""
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}, str(path))


class SavedModel(nn.Module):
    """The model-folder contract every PyTorch model kind shares (taggers and classifiers):
    ``save`` writes ``model.safetensors``, the subclass's extra files (``save_extra``) and
    ``distill.json`` (kind, labels, ``config_dict()``, meta) atomically; ``load`` checks the
    ``files`` are there, rebuilds the model with ``build`` and loads the weights, refusing a
    partial or corrupt folder in one line.

    Subclasses set ``kind`` and ``files`` and implement ``config_dict``, ``build`` and
    (when they need files beside the weights) ``save_extra``.
    """

    kind: ClassVar[str] = ""
    # files a saved folder must hold; checked before loading, so a partial copy is refused by name
    files: ClassVar[tuple[str, ...]] = ("model.safetensors",)

    def __init__(self, labels: Sequence[str], meta: dict[str, Any] | None = None):
        super().__init__()
        self.labels = list(labels)
        self.meta = dict(meta or {})

    # --- folders -----------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def build(cls, config: dict[str, Any], labels: list[str], meta: dict[str, Any], folder: Path) -> "SavedModel":
        """Rebuild an untrained model of this architecture from a saved folder."""
        raise NotImplementedError

    def save_extra(self, folder: Path) -> None:
        """Write tokenizer or vocabulary files beside the weights."""

    def save(self, folder: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write the model folder atomically (a reader never sees a partial one)."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            save_weights(self, tmp / "model.safetensors")
            self.save_extra(tmp)
            meta = dict(self.meta, **(extra_meta or {}))
            write_json(tmp / META_FILE, {
                "format": FORMAT_VERSION, "kind": self.kind, "labels": self.labels,
                "config": self.config_dict(), "meta": meta, "saved": stamp(),
            })
        return folder

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any]) -> "SavedModel":
        from safetensors import SafetensorError
        from safetensors.torch import load_model as st_load

        for name in cls.files:
            if not (folder / name).is_file():
                raise DistillError(f"{folder / name}: missing; the model folder is incomplete")
        try:
            model = cls.build(info["config"], info["labels"], info.get("meta", {}), folder)
        except (OSError, ValueError, KeyError) as e:  # a corrupt config or tokenizer file
            first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise DistillError(f"{folder}: cannot rebuild the model ({first}); the folder is incomplete or corrupt") from None
        weights = folder / "model.safetensors"
        try:
            st_load(model, str(weights))
        except (SafetensorError, OSError, RuntimeError) as e:
            first = str(e).splitlines()[0][:160]
            raise DistillError(f"{weights}: cannot be loaded ({first}); the file is truncated or from another model") from None
        model.eval()
        return model


class Tagger(SavedModel):
    """Base of all PyTorch taggers: a featurizer, an encoder giving word-level
    emissions, and a CRF (or a softmax when ``crf`` is None).

    Subclasses implement ``encode_words``, ``build_feature``, ``collate``, ``forward``,
    ``config_dict``, ``build`` and ``save_extra``.
    """

    # sub-token budget for one piece of a sentence (long sentences are split to fit)
    max_length: int = 128

    def __init__(self, labels: Sequence[str], meta: dict[str, Any] | None = None):
        super().__init__(labels, meta)
        self.crf: CRF | None = None

    # --- featurizing -------------------------------------------------------
    def encode_words(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Per sentence, per word, the input ids of that word (at least one)."""
        raise NotImplementedError

    def build_feature(self, word_ids: Sequence[Sequence[int]]) -> dict[str, list[int]]:
        raise NotImplementedError

    def collate(self, features: Sequence[dict]) -> dict[str, Tensor]:
        raise NotImplementedError

    # --- the model ---------------------------------------------------------
    def loss(self, out: TaggerOutput, tags: Tensor) -> Tensor:
        """Gold-tag loss per real word position: CRF NLL summed over the batch and
        divided by the number of real words (so it sits on the same scale as the
        per-position KD terms), or cross-entropy for a softmax head."""
        n = out.mask.sum().clamp_min(1)
        if self.crf is None:
            logp = out.emissions.log_softmax(-1)
            nll = -logp.gather(2, tags.clamp_min(0).unsqueeze(2)).squeeze(2)
            return (nll * out.mask).sum() / n
        return self.crf(out.emissions, tags, out.mask, reduction="sum") / n

    def decode(self, out: TaggerOutput) -> Tensor:
        """Best tag ids (B, W), -1 at padding."""
        if not torch.is_inference_mode_enabled():  # entering it costs more than the check, per call
            with torch.inference_mode():
                return self.decode(out)
        if self.crf is None:
            return out.emissions.argmax(-1).masked_fill(~out.mask, -1)
        return self.crf.decode(out.emissions.float(), out.mask, allowed=self.allowed_transitions())

    def allowed_transitions(self):
        """The valid-path constraint for decoding (:func:`distill.schemes.allowed_transitions`
        of the labels), or None when the model decodes freely (``meta["decoding"] == "free"``)."""
        return allowed_for(self.labels, self.meta)

    def decode_batch(self, batch: dict[str, Tensor]) -> list[list[int]]:
        """Tag ids of the real words of each sentence of a collated batch."""
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self.decode_batch(batch)
        first = next(self.parameters(), None)  # a model trained on a GPU stays there
        device = first.device if first is not None else torch.device("cpu")
        out = self({k: v.to(device) if isinstance(v, Tensor) and v.device != device else v for k, v in batch.items()})
        tags = self.decode(out).tolist()
        if len(tags) == 1 and tags[0][-1] != -1:  # one sentence, no padding
            return tags
        lengths = out.mask.sum(1).tolist()
        return [row[:n] for row, n in zip(tags, lengths)]

    def param_group_of(self, name: str) -> str:
        """Which learning-rate group a parameter belongs to: embeddings|encoder|head|crf."""
        if name.startswith("crf."):
            return "crf"
        if "word_embeddings" in name or name.startswith("embedding."):
            return "embeddings"
        if name.startswith("encoder."):
            return "encoder"
        return "head"


DECODINGS = ("constrained", "free")


def allowed_for(labels: Sequence[str], meta: dict[str, Any]):
    """Constrained decoding is the default: every model folder decodes only valid BIO
    paths unless its ``distill.json`` meta says ``"decoding": "free"``."""
    decoding = meta.get("decoding", "constrained")
    if decoding not in DECODINGS:
        raise DistillError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    return None if decoding == "free" else _allowed(tuple(labels))


@functools.lru_cache(maxsize=64)
def _allowed(labels: tuple[str, ...]):
    """:func:`distill.schemes.allowed_transitions`, once per label set (decoding asks per batch)."""
    from distill.schemes import allowed_transitions

    return allowed_transitions(labels)


def collate_extras(features: Sequence[dict], batch: dict[str, Tensor], W: int) -> None:
    """Pass per-word float extras of the features through as padded (B, W, K) tensors.

    ``teacher_emissions`` ((n_words, K) arrays added by distillation) become
    ``batch["teacher_emissions"]``; every collate calls this, so students need no KD code.
    """
    for key in ("teacher_emissions",):
        if key not in features[0]:
            continue
        K = features[0][key].shape[-1]
        t = torch.zeros((len(features), W, K), dtype=torch.float32)
        for i, f in enumerate(features):
            e = torch.as_tensor(f[key], dtype=torch.float32)
            t[i, : e.shape[0]] = e
        batch[key] = t


def read_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.exists():
        raise DistillError(f"{folder}: no such model folder")
    if not folder.is_dir():
        raise DistillError(f"{folder}: is a file, expected a model folder (with {META_FILE})")
    path = folder / META_FILE
    if not path.exists():
        raise DistillError(f"{folder}: not a distill model folder ({META_FILE} missing)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DistillError(f"{path}: corrupt model description ({e})") from None
    if not isinstance(info, dict) or "kind" not in info or "labels" not in info:
        raise DistillError(f"{path}: missing 'kind' or 'labels'; expected a distill model description")
    return info


def model_class(kind: str) -> type:
    if kind not in MODEL_KINDS:
        raise DistillError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    module, name = MODEL_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def load_model(folder: str | Path, decoding: str | None = None) -> Any:
    """Load any model folder distill wrote (teacher, student, quantized, ONNX).

    ``decoding`` (constrained|free) overrides the folder's own; an ONNX file's decoder
    is part of its graph, so asking it for the other one is an error."""
    folder = Path(folder)
    info = read_meta(folder)
    try:
        cls = model_class(info["kind"])
    except DistillError as e:
        raise DistillError(f"{folder / META_FILE}: {e}") from None
    if decoding is not None and decoding not in DECODINGS:
        raise DistillError(f"--decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    if decoding is not None and info["kind"] == "onnx":
        baked = (info.get("meta") or {}).get("decoding", "free")  # exports before constrained decoding were free
        if decoding != baked:
            raise DistillError(f"{folder}: the ONNX graph decodes {baked}; re-export the source model for {decoding} decoding")
    model = cls.load(folder, info)
    if decoding is not None:
        for m in (model, getattr(model, "inner", None)):
            if m is not None:
                m.meta["decoding"] = decoding
    return model
