"""BERT classifier: a BERT-family encoder, mean pooling over the text's real tokens,
dropout and a linear layer to class logits.

The same backbones as the BERT-CRF teacher (:func:`teachers.backbones.resolve_backbone`:
e5-small by default, minilm-l6, any folder or hub id). The tokenizer reads the raw text
(e5's SentencePiece tokenizer segments Chinese itself), then ``[CLS] ids [SEP]``.

Long texts: a text of more than ``max_length`` sub-tokens (default 256, with [CLS] and
[SEP]; at most the encoder's position limit) keeps its head and its tail: the first
``max_length // 2`` sub-tokens and the last ``max_length - 2 - max_length // 2`` (128 + 126
at 256), the middle is dropped (Sun et al. 2019, "How to Fine-Tune BERT for Text
Classification?", found head + tail best for long reviews).

The small student (:meth:`BertClassifier.from_teacher`) is the same kind of folder,
``bert-cls``, with ``num_layers`` of the teacher's encoder layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from distill.classify import Classifier, ClassifierOutput, head_tail
from distill.errors import DistillError
from teachers.backbones import DEFAULT_BACKBONE
from teachers.bert_crf import encoder_from_folder, load_backbone, load_tokenizer

DEFAULT_MAX_LENGTH = 256


class BertClassifier(Classifier):
    """Encoder -> mean over real tokens (B, H) -> dropout -> linear -> logits (B, C)."""

    kind = "bert-cls"
    files = ("model.safetensors", "config.json", "tokenizer.json")

    def __init__(self, encoder, tokenizer, labels: Sequence[str], dropout: float = 0.1,
                 max_length: int = DEFAULT_MAX_LENGTH, meta: dict | None = None):
        super().__init__(labels, meta)
        if not 0 <= dropout < 1:
            raise DistillError(f"dropout must be in [0, 1), got {dropout}")
        if max_length < 4:
            raise DistillError(f"max_length must be >= 4 (sub-tokens with [CLS] and [SEP]), got {max_length}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.dropout_p = dropout
        self.max_length = min(max_length, getattr(encoder.config, "max_position_embeddings", max_length))
        self.pad_id = tokenizer.pad_token_id or 0
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, len(self.labels))
        self.return_hidden_states = False  # set by a distillation that matches hidden states

    # --- featurizing -------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[dict]:
        """``[CLS]`` + the text's sub-tokens (head + tail beyond ``max_length``) + ``[SEP]``."""
        tok = self.tokenizer
        limit = self.max_length - 2
        head = self.max_length // 2
        features = []
        step = 1024
        for s in range(0, len(texts), step):
            enc = tok(list(texts[s : s + step]), add_special_tokens=False, return_attention_mask=False,
                      return_token_type_ids=False, verbose=False)
            for ids in enc["input_ids"]:
                features.append({"input_ids": [tok.cls_token_id] + head_tail(ids, limit, head) + [tok.sep_token_id]})
        return features

    # --- the model ---------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], output_hidden_states: bool | None = None) -> ClassifierOutput:
        if output_hidden_states is None:
            output_hidden_states = self.return_hidden_states and self.training
        mask = batch["attention_mask"]  # shape: (B, S)
        enc = self.encoder(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=output_hidden_states)
        hidden = enc.last_hidden_state  # shape: (B, S, H)
        m = mask.unsqueeze(-1).to(hidden.dtype)  # shape: (B, S, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1)  # shape: (B, H)
        logits = self.classifier(self.dropout(pooled))  # shape: (B, C)
        return ClassifierOutput(logits, enc.hidden_states if output_hidden_states else None)

    # --- folders -----------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"dropout": self.dropout_p, "max_length": self.max_length,
                "num_layers": self.encoder.config.num_hidden_layers}

    def save_extra(self, folder: Path) -> None:
        self.encoder.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def build(cls, config, labels, meta, folder):
        return cls(encoder_from_folder(folder), load_tokenizer(str(folder)), labels, dropout=config["dropout"],
                   max_length=config["max_length"], meta=meta)

    # --- new models ----------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: str | None, labels: Sequence[str], *, texts: Sequence[str] = (),
                      prune_vocab: bool = True, random_init: bool = False, num_layers: int | None = None,
                      dropout: float = 0.1, max_length: int = DEFAULT_MAX_LENGTH,
                      meta: dict | None = None) -> "BertClassifier":
        """A new classifier (untrained head) on a backbone (built-in name, folder or hub id;
        None: :data:`teachers.backbones.DEFAULT_BACKBONE`), its first ``num_layers`` layers
        when given. With ``prune_vocab`` and ``texts`` (every text it will train on, transfer
        texts included), a SentencePiece vocabulary is pruned to the pieces of ``texts`` and
        the single-character pieces of their scripts (:func:`teachers.vocab.prune_vocabulary`;
        e5's 250k rows otherwise make most of the model's size)."""
        name = backbone or DEFAULT_BACKBONE
        encoder, tokenizer, source = load_backbone(name, num_layers=num_layers, random_init=random_init)
        vocab: dict[str, Any] = {}
        if prune_vocab and texts:
            from teachers.vocab import is_unigram, prune_vocabulary

            if is_unigram(tokenizer):
                pruned = prune_vocabulary(tokenizer, encoder, texts)
                tokenizer = pruned.tokenizer
                vocab["pruned"] = pruned.record()
        meta = {"role": "teacher", **(meta or {}), "backbone": name, "backbone_path": source,
                "random_init": random_init, "vocabulary": vocab}
        return cls(encoder, tokenizer, labels, dropout=dropout, max_length=max_length, meta=meta)

    @classmethod
    def from_teacher(cls, teacher: "BertClassifier | str | Path", num_layers: int = 3,
                     layers: Sequence[int] | None = None, meta: dict | None = None) -> "BertClassifier":
        """A small student: ``num_layers`` of the teacher's encoder layers (``layers``, default
        evenly spaced: :func:`students.bert_small.default_layers` ``spread``), copied with its embeddings,
        tokenizer, linear layer, dropout and ``max_length``. ``teacher``: a model or its folder."""
        from students.bert_small import encoder_from_layers

        if not isinstance(teacher, BertClassifier):
            from distill.modeling import load_model

            folder = teacher
            teacher = load_model(folder)
            if not isinstance(teacher, BertClassifier):
                raise DistillError(f"{folder}: a small BERT student needs a BERT classifier teacher (kind 'bert-cls'), "
                                   f"got kind {getattr(teacher, 'kind', '?')!r}")
        encoder, total, layers = encoder_from_layers(teacher.encoder, num_layers, layers, placement="spread")
        student = cls(encoder, teacher.tokenizer, teacher.labels, dropout=teacher.dropout_p,
                      max_length=teacher.max_length,
                      meta={"role": "student", **(meta or {}), "teacher_layers": total, "layers": layers,
                            "backbone": teacher.meta.get("backbone"), "vocabulary": teacher.meta.get("vocabulary")})
        with torch.no_grad():
            student.classifier.load_state_dict(teacher.classifier.state_dict())
        return student
