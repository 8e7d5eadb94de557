"""BERT-CRF: a BERT-family encoder, word-level emissions from each word's first
sub-token, and a CRF (or a BiLSTM then a CRF, or a softmax for the ablation).

The encoder sees sub-tokens; every other sub-token of a word is ignored, so emissions,
the CRF and every loss are per word. That alignment happens only in
:meth:`BertTagger.build_feature` and :meth:`BertTagger.forward`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from distill.crf import CRF
from distill.errors import DistillError
from distill.modeling import Tagger, TaggerOutput, collate_extras
from teachers.backbones import DEFAULT_BACKBONE, resolve_backbone

HEADS = ("crf", "bilstm-crf", "softmax")


def default_backbone() -> str:
    """The folder of the default backbone (:data:`teachers.backbones.DEFAULT_BACKBONE`)."""
    return resolve_backbone(DEFAULT_BACKBONE)


def _offline_kwargs(source: str) -> dict:
    return {"local_files_only": True} if Path(source).exists() or os.environ.get("HF_HUB_OFFLINE") == "1" else {}


def load_tokenizer(source: str):
    """The fast tokenizer of a backbone (built-in name, local folder or hub id)."""
    from transformers import AutoTokenizer

    source = resolve_backbone(source)
    try:
        tok = AutoTokenizer.from_pretrained(source, **_offline_kwargs(source))
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load a tokenizer from {source!r} (a local folder or hub id): {str(e).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise DistillError(f"{source!r}: distill needs a fast (Rust) tokenizer for word alignment")
    return tok


class BertTagger(Tagger):
    kind = "bert-crf"
    files = ("model.safetensors", "config.json", "tokenizer.json")

    def __init__(self, encoder, tokenizer, labels: Sequence[str], head: str = "crf", dropout: float = 0.1,
                 lstm_hidden: int = 256, max_length: int = 128, meta: dict | None = None):
        super().__init__(labels, meta)
        if head not in HEADS:
            raise DistillError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.head = head
        self.dropout_p = dropout
        self.lstm_hidden = lstm_hidden
        self.max_length = min(max_length, getattr(encoder.config, "max_position_embeddings", 512)) - 2
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.lstm = None
        if head == "bilstm-crf":
            self.lstm = nn.LSTM(hidden, lstm_hidden // 2, batch_first=True, bidirectional=True)
            hidden = lstm_hidden
        self.classifier = nn.Linear(hidden, len(self.labels))
        self.crf = CRF(len(self.labels)) if head != "softmax" else None

    # --- featurizing -------------------------------------------------------
    def encode_words(self, sentences):
        """Per sentence, per word, the word's sub-token ids (at least one: [UNK] for a word
        the tokenizer drops, such as a control character).

        Words are pre-tokenized input, so a word's ids do not depend on where it occurs:
        each distinct word is tokenized once, in batches, and sentences are assembled
        from that table (equal words share one id list; callers copy, never mutate).
        """
        tok = self.tokenizer
        unk = tok.unk_token_id
        words = list(dict.fromkeys(w for s in sentences for w in s))
        table: dict[str, list[int]] = {}
        step = 4096
        for s in range(0, len(words), step):
            chunk = words[s : s + step]
            enc = tok([[w] for w in chunk], is_split_into_words=True, add_special_tokens=False,
                      return_attention_mask=False, return_token_type_ids=False)
            for w, ids in zip(chunk, enc["input_ids"]):
                table[w] = ids or [unk]
        return [[table[w] for w in s] for s in sentences]

    def build_feature(self, word_ids):
        ids = [self.tokenizer.cls_token_id]
        index = []
        for w in word_ids:
            index.append(len(ids))
            ids.extend(w)
        ids.append(self.tokenizer.sep_token_id)
        return {"input_ids": ids, "word_index": index}

    def collate(self, features):
        B = len(features)
        S = max(len(f["input_ids"]) for f in features)
        W = max(len(f["word_index"]) for f in features)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((B, S), pad, dtype=torch.long)
        attention = torch.zeros((B, S), dtype=torch.long)
        word_index = torch.zeros((B, W), dtype=torch.long)
        word_mask = torch.zeros((B, W), dtype=torch.bool)
        tags = torch.zeros((B, W), dtype=torch.long)
        for i, f in enumerate(features):
            n, w = len(f["input_ids"]), len(f["word_index"])
            input_ids[i, :n] = torch.tensor(f["input_ids"])
            attention[i, :n] = 1
            word_index[i, :w] = torch.tensor(f["word_index"])
            word_mask[i, :w] = True
            if "tags" in f:
                tags[i, :w] = torch.tensor(f["tags"])
        batch = {"input_ids": input_ids, "attention_mask": attention, "word_index": word_index,
                 "word_mask": word_mask, "tags": tags}
        collate_extras(features, batch, W)
        return batch

    # --- the model ---------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], output_hidden_states: bool = False) -> TaggerOutput:
        enc = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=output_hidden_states)
        hidden = enc.last_hidden_state  # shape: (B, S, H)
        index = batch["word_index"].unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        words = self.dropout(hidden.gather(1, index))  # shape: (B, W, H)
        mask = batch["word_mask"]
        if self.lstm is not None:
            lengths = mask.sum(1).cpu()
            packed = pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
            words, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=words.size(1))
            words = self.dropout(words)
        emissions = self.classifier(words)  # shape: (B, W, K)
        return TaggerOutput(emissions, mask, enc.hidden_states if output_hidden_states else None)

    # --- folders -----------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"head": self.head, "dropout": self.dropout_p, "lstm_hidden": self.lstm_hidden,
                "max_length": self.max_length + 2, "num_layers": self.encoder.config.num_hidden_layers}

    def save_extra(self, folder: Path) -> None:
        self.encoder.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def build(cls, config, labels, meta, folder):
        from transformers import AutoConfig, AutoModel

        enc_config = AutoConfig.from_pretrained(folder, local_files_only=True)
        encoder = AutoModel.from_config(enc_config, add_pooling_layer=False)
        if getattr(enc_config, "pruned_heads", None):  # head-pruned (quantize/prune.py): transformers 5 no longer re-prunes
            from quantize.prune import apply_pruned_heads

            apply_pruned_heads(encoder, enc_config.pruned_heads)
        tokenizer = load_tokenizer(str(folder))
        return cls(encoder, tokenizer, labels, head=config["head"], dropout=config["dropout"],
                   lstm_hidden=config["lstm_hidden"], max_length=config["max_length"], meta=meta)


# ---------------------------------------------------------------------------
# Building a fresh teacher


def unk_rate(tokenizer, sentences: Sequence[Sequence[str]]) -> tuple[float, Counter]:
    """Share of word occurrences that the tokenizer maps to [UNK] only, and those words' counts."""
    counts = Counter(w for s in sentences for w in s)
    words = list(counts)
    missing: Counter = Counter()
    unk = tokenizer.unk_token_id
    enc = tokenizer(words, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    for w, ids in zip(words, enc["input_ids"]):
        if not ids or all(i == unk for i in ids):
            missing[w] = counts[w]
    total = sum(counts.values())
    return (sum(missing.values()) / total if total else 0.0), missing


def words_to_add(tokenizer, sentences, threshold: float = 0.02, min_count: int = 2) -> tuple[float, list[str]]:
    """The [UNK] rate of ``sentences`` and the words :func:`extend_vocabulary` adds, most
    frequent first: none when at most ``threshold`` of word occurrences are [UNK]."""
    rate, missing = unk_rate(tokenizer, sentences)
    return rate, ([w for w, c in missing.most_common() if c >= min_count] if rate > threshold else [])


def extend_vocabulary(tokenizer, encoder, sentences, threshold: float = 0.02, min_count: int = 2) -> dict:
    """Add the training words the tokenizer maps to [UNK] (seen ``min_count``+ times) as
    new tokens and grow the embedding matrix, when more than ``threshold`` of word
    occurrences are [UNK]. New rows start at the mean of the old ones. Returns what was done."""
    rate, new = words_to_add(tokenizer, sentences, threshold, min_count)
    info = {"unk_rate_before": round(rate, 4), "threshold": threshold, "min_count": min_count, "added": 0}
    if not new:
        return info
    added = tokenizer.add_tokens(new)
    old_size = encoder.get_input_embeddings().weight.shape[0]
    encoder.resize_token_embeddings(max(len(tokenizer), old_size), mean_resizing=False)
    new_ids = torch.tensor(tokenizer.convert_tokens_to_ids(new), dtype=torch.long)
    with torch.no_grad():
        emb = encoder.get_input_embeddings().weight
        known = emb[: min(old_size, len(tokenizer) - added)]
        emb[new_ids] = known.mean(0, keepdim=True) + 0.02 * torch.randn(len(new_ids), emb.shape[1])
    info.update(added=added, unk_rate_after=round(unk_rate(tokenizer, sentences)[0], 4),
                examples=new[:20], vocab_size=len(tokenizer))
    return info


def build_teacher(labels: Sequence[str], train_sentences, *, backbone: str | None = None, head: str = "crf",
                  extend_vocab: bool = True, random_init: bool = False, num_layers: int | None = None,
                  freeze_layers: int = 0, dropout: float = 0.1, lstm_hidden: int = 256, max_length: int = 128,
                  meta: dict | None = None) -> BertTagger:
    """A new BERT-CRF from a backbone (built-in name, local folder or hub id; default
    :data:`teachers.backbones.DEFAULT_BACKBONE`)."""
    from transformers import AutoConfig, AutoModel

    name = backbone or DEFAULT_BACKBONE
    source = resolve_backbone(name)
    kw = _offline_kwargs(source)
    try:
        config = AutoConfig.from_pretrained(source, **kw)
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load backbone {source!r} (a local folder or hub id): {str(e).splitlines()[0]}") from None
    if num_layers:
        if not 0 < num_layers <= config.num_hidden_layers:
            raise DistillError(f"--num-layers must be in 1..{config.num_hidden_layers}, got {num_layers}")
        config.num_hidden_layers = num_layers
    if random_init:
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
    else:
        encoder = AutoModel.from_pretrained(source, config=config, add_pooling_layer=False, **kw)
    tokenizer = load_tokenizer(source)
    vocab = {"unk_rate_before": round(unk_rate(tokenizer, train_sentences)[0], 4), "added": 0}
    if extend_vocab:
        vocab = extend_vocabulary(tokenizer, encoder, train_sentences)
    if freeze_layers:
        for p in encoder.embeddings.parameters():
            p.requires_grad = False
        for layer in encoder.encoder.layer[:freeze_layers]:
            for p in layer.parameters():
                p.requires_grad = False
    meta = dict(meta or {}, backbone=name, backbone_path=source, vocabulary=vocab, random_init=random_init,
                freeze_layers=freeze_layers)
    return BertTagger(encoder, tokenizer, labels, head=head, dropout=dropout, lstm_hidden=lstm_hidden,
                      max_length=max_length, meta=meta)
