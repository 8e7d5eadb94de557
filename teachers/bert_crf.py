"""BERT-CRF: a BERT-family encoder, word-level emissions read from its sub-tokens, and
a CRF (or a BiLSTM then a CRF, or a softmax for the ablation).

The encoder sees sub-tokens; emissions, the CRF and every loss are per word (per
character in a character-level corpus). Three alignments map sub-tokens to words, all
in :meth:`BertTagger.encode_words`, :meth:`BertTagger.build_feature` and
:meth:`BertTagger.forward`:

* ``first``: each word is tokenized alone and read at its first sub-token (WordPiece
  models; word-level corpora). Under SentencePiece a word the vocabulary lacks as
  ``▁word`` starts with a lone ``▁``: it is read at the next sub-token instead.
* ``char-pieces``: each character becomes the piece of that character alone
  (NFKC-normalised, ``▁``-prefixed if only that exists).
* ``natural`` (the default for characters under SentencePiece): the unspaced sentence
  is tokenized as the model was pretrained on it (MSRA: 0.70 pieces per character); each
  character is read at the piece that holds it, plus a learned embedding of its
  (offset in the piece, piece length), so entity boundaries inside a piece can be tagged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from distill.crf import CRF
from distill.errors import DistillError
from distill.lstm import run_bilstm
from distill.modeling import Tagger, TaggerOutput, collate_extras
from teachers.backbone_load import default_backbone  # noqa: F401  (callers read default_backbone here)
from teachers.backbone_load import encoder_from_folder, load_backbone, load_tokenizer
from teachers.backbones import DEFAULT_BACKBONE
from teachers.vocab import METASPACE
from teachers.vocab_extend import extend_vocabulary, unk_rate
from teachers.vocab_extend import words_to_add  # noqa: F401  (callers read words_to_add here)

HEADS = ("crf", "bilstm-crf", "softmax")
# How characters or words meet sub-tokens (see BertTagger's docstring).
ALIGNMENTS = ("first", "char-pieces", "natural")
SHAPE_SIDE = 8  # piece lengths and offsets of the natural alignment are capped at this


class CharPieces(list):
    """One character's entry in the natural alignment: the sub-token ids that begin at this
    character (empty inside a piece begun before it; a lone metaspace piece comes first,
    before the holder), ``rep`` the index in this list of the piece that holds the
    character (-1 when it began before), ``piece`` that piece's id, ``offset`` the
    character's place in it and ``size`` the piece's length in characters.
    ``len()`` is the number of sub-tokens the character adds, as sentence splitting counts."""

    __slots__ = ("rep", "piece", "offset", "size")

    def __init__(self, ids, rep: int, piece: int, offset: int, size: int):
        super().__init__(ids)
        self.rep, self.piece, self.offset, self.size = rep, piece, offset, size

    def __reduce__(self):
        return CharPieces, (list(self), self.rep, self.piece, self.offset, self.size)


def shape_id(offset: int, size: int) -> int:
    """Index of (offset in piece, piece length) in the natural alignment's shape embedding."""
    return (min(size, SHAPE_SIDE) - 1) * SHAPE_SIDE + min(offset, SHAPE_SIDE - 1)


def is_sentencepiece(tokenizer) -> bool:
    """True for a tokenizer that marks word starts with the SentencePiece metaspace (XLM-R, e5)."""
    return tokenizer.convert_tokens_to_ids(METASPACE) not in (None, tokenizer.unk_token_id)


def choose_alignment(alignment: str, tokenizer, char_level: bool) -> str:
    """``auto``: the natural alignment for a character-level corpus under a SentencePiece
    tokenizer, the first sub-token of each word otherwise."""
    if alignment == "auto":
        return "natural" if char_level and is_sentencepiece(tokenizer) else "first"
    if alignment not in ALIGNMENTS:
        raise DistillError(f"--alignment must be auto or one of {', '.join(ALIGNMENTS)}, got {alignment!r}")
    if alignment != "first" and not char_level:
        raise DistillError(f"--alignment {alignment} needs a character-level corpus; use first (or auto) for words")
    return alignment


class BertTagger(Tagger):
    kind = "bert-crf"
    files = ("model.safetensors", "config.json", "tokenizer.json")

    def __init__(self, encoder, tokenizer, labels: Sequence[str], head: str = "crf", dropout: float = 0.1,
                 lstm_hidden: int = 256, max_length: int = 128, meta: dict | None = None, alignment: str = "first"):
        super().__init__(labels, meta)
        if head not in HEADS:
            raise DistillError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        if alignment not in ALIGNMENTS:
            raise DistillError(f"unknown alignment {alignment!r}; expected one of {', '.join(ALIGNMENTS)}")
        self.alignment = alignment
        metaspace = tokenizer.convert_tokens_to_ids(METASPACE)
        self.lone_metaspace = metaspace if metaspace not in (None, tokenizer.unk_token_id) else None
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
        # natural alignment: (offset in piece, piece length) of each character, added to its piece's state
        self.piece_shape = None
        if alignment == "natural":
            self.piece_shape = nn.Embedding(SHAPE_SIDE * SHAPE_SIDE, encoder.config.hidden_size)
            nn.init.zeros_(self.piece_shape.weight)

    # --- featurizing -------------------------------------------------------
    def encode_words(self, sentences):
        """Per sentence, per word, the word's sub-token ids (see the module docstring)."""
        if self.alignment == "natural":
            return [self._natural(s) for s in self._tokenize_unspaced(sentences)]
        if self.alignment == "char-pieces":
            return self._char_pieces(sentences)
        return self._first(sentences)

    def _tokenize_unspaced(self, sentences):
        """(sentence, its text's sub-token ids, their character offsets) per sentence, in batches."""
        tok = self.tokenizer
        step = 2048
        for s in range(0, len(sentences), step):
            chunk = sentences[s : s + step]
            enc = tok(["".join(words) for words in chunk], add_special_tokens=False, return_offsets_mapping=True,
                      return_attention_mask=False, return_token_type_ids=False)
            yield from zip(chunk, enc["input_ids"], enc["offset_mapping"])

    def _natural(self, item) -> list[CharPieces]:
        words, ids, offsets = item
        starts = []  # character offset at which each word starts
        pos = 0
        for w in words:
            starts.append(pos)
            pos += len(w)
        word_at = [0] * pos  # character -> word
        for i, (a, w) in enumerate(zip(starts, words)):
            word_at[a : a + len(w)] = [i] * len(w)
        n = len(words)
        begins: list[list[int]] = [[] for _ in range(n)]  # pieces that begin at each word
        holder: list[int | None] = [None] * n  # index into ids of the piece holding each word
        span: dict[int, tuple[int, int]] = {}  # piece index -> (first word, last word + 1)
        pending: list[int] = []  # lone metaspace pieces waiting for the next real piece
        for j, (tid, (a, b)) in enumerate(zip(ids, offsets)):
            if tid == self.lone_metaspace or a >= b or a >= pos:
                pending.append(j)
                continue
            first, last = word_at[a], word_at[min(b, pos) - 1] + 1
            begins[first].extend(pending + [j])
            pending = []
            span[j] = (first, last)
            for k in range(first, last):
                if holder[k] is None:
                    holder[k] = j
        out = []
        unk = self.tokenizer.unk_token_id
        for k in range(n):
            j = holder[k]
            if j is None:  # a word no piece covers (a space, a dropped control character)
                out.append(CharPieces([unk], 0, unk, 0, 1))
                continue
            first, last = span[j]
            mine = [ids[i] for i in begins[k]]
            rep = begins[k].index(j) if j in begins[k] else -1
            out.append(CharPieces(mine, rep, ids[j], k - first, last - first))
        return out

    def _char_pieces(self, sentences):
        """Each character as the piece of that character alone (NFKC first; ``▁c`` if only
        that piece exists), else its sub-tokens without a leading lone ``▁``."""
        import unicodedata

        tok = self.tokenizer
        vocab = tok.get_vocab()
        table: dict[str, list[int]] = {}
        for w in dict.fromkeys(w for s in sentences for w in s):
            norm = unicodedata.normalize("NFKC", w)
            for piece in (norm, METASPACE + norm):
                if piece in vocab:
                    table[w] = [vocab[piece]]
                    break
            else:
                ids = tok(norm, add_special_tokens=False)["input_ids"]
                if len(ids) > 1 and ids[0] == self.lone_metaspace:
                    ids = ids[1:]
                table[w] = ids or [tok.unk_token_id]
        return [[table[w] for w in s] for s in sentences]

    def _first(self, sentences):
        """Per word its sub-token ids when tokenized alone (at least one: [UNK] for a word
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
        """``input_ids`` with the special tokens, ``word_index`` (the sub-token each word is
        read at) and, for the natural alignment, ``piece_shape`` (:func:`shape_id`)."""
        ids = [self.tokenizer.cls_token_id]
        index = []
        if self.alignment == "natural":
            shape = []
            for k, w in enumerate(word_ids):
                if w.rep >= 0:
                    index.append(len(ids) + w.rep)
                    ids.extend(w)
                elif k == 0:  # a piece cut by sentence splitting: it begins again here
                    index.append(len(ids))
                    ids.append(w.piece)
                else:
                    ids.extend(w)
                    index.append(index[-1])
                shape.append(shape_id(w.offset, w.size))
            ids.append(self.tokenizer.sep_token_id)
            return {"input_ids": ids, "word_index": index, "piece_shape": shape}
        lone = self.lone_metaspace
        for w in word_ids:
            # under SentencePiece, never read a word at a lone "▁" (it says nothing of the word)
            index.append(len(ids) + (1 if lone is not None and len(w) > 1 and w[0] == lone else 0))
            ids.extend(w)
        ids.append(self.tokenizer.sep_token_id)
        return {"input_ids": ids, "word_index": index}

    def collate(self, features):
        """The batch dict that forward, the losses and decoding read; B sentences (pieces),
        S sub-tokens, W words, K tags. The BiLSTM-CRF's has no sub-tokens: its ``input_ids``
        are word ids (B, W), and it has only the keys marked *.

        * ``input_ids`` (B, S) long*: [CLS] sub-tokens [SEP], then the pad id
        * ``attention_mask`` (B, S) long: 1 at real sub-tokens
        * ``word_index`` (B, W) long: the sub-token each word is read at
        * ``word_mask`` (B, W) bool*: true at real words
        * ``tags`` (B, W) long*: gold tag ids; 0 at padding and in unlabelled sentences
        * ``piece_shape`` (B, W) long: natural alignment only (:func:`shape_id`)
        * ``teacher_emissions`` (B, W, K) float32*: when distilling
          (:func:`distill.modeling.collate_extras`)
        * ``gold`` (B,) bool*: with a transfer set, true at labelled sentences (added by
          :func:`distill.train.train`)
        """
        B = len(features)
        S = max(len(f["input_ids"]) for f in features)
        W = max(len(f["word_index"]) for f in features)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((B, S), pad, dtype=torch.long)
        attention = torch.zeros((B, S), dtype=torch.long)
        word_index = torch.zeros((B, W), dtype=torch.long)
        word_mask = torch.zeros((B, W), dtype=torch.bool)
        tags = torch.zeros((B, W), dtype=torch.long)
        shape = torch.zeros((B, W), dtype=torch.long) if self.alignment == "natural" else None
        for i, f in enumerate(features):
            n, w = len(f["input_ids"]), len(f["word_index"])
            input_ids[i, :n] = torch.tensor(f["input_ids"])
            attention[i, :n] = 1
            word_index[i, :w] = torch.tensor(f["word_index"])
            word_mask[i, :w] = True
            if "tags" in f:
                tags[i, :w] = torch.tensor(f["tags"])
            if shape is not None:
                shape[i, :w] = torch.tensor(f["piece_shape"])
        batch = {"input_ids": input_ids, "attention_mask": attention, "word_index": word_index,
                 "word_mask": word_mask, "tags": tags}
        if shape is not None:
            batch["piece_shape"] = shape
        collate_extras(features, batch, W)
        return batch

    # --- the model ---------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], output_hidden_states: bool = False) -> TaggerOutput:
        enc = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=output_hidden_states)
        hidden = enc.last_hidden_state  # shape: (B, S, H)
        words = self.dropout(self.read_words(hidden, batch))  # shape: (B, W, H)
        mask = batch["word_mask"]
        if self.lstm is not None:
            words = run_bilstm(self.lstm, words, mask)
            words = self.dropout(words)
        emissions = self.classifier(words)  # shape: (B, W, K)
        return TaggerOutput(emissions, mask, enc.hidden_states if output_hidden_states else None)

    def read_words(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Word states (B, W, H) from sub-token states ``hidden`` (B, S, H): each word's
        ``word_index`` sub-token, plus its piece-shape embedding (natural alignment)."""
        index = batch["word_index"].unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        words = hidden.gather(1, index)
        if self.piece_shape is not None:
            words = words + self.piece_shape(batch["piece_shape"])
        return words

    # --- folders -----------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"head": self.head, "dropout": self.dropout_p, "lstm_hidden": self.lstm_hidden,
                "max_length": self.max_length + 2, "num_layers": self.encoder.config.num_hidden_layers,
                "alignment": self.alignment}

    def save_extra(self, folder: Path) -> None:
        self.encoder.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def build(cls, config, labels, meta, folder):
        encoder = encoder_from_folder(folder)
        tokenizer = load_tokenizer(str(folder))
        return cls(encoder, tokenizer, labels, head=config["head"], dropout=config["dropout"],
                   lstm_hidden=config["lstm_hidden"], max_length=config["max_length"], meta=meta,
                   alignment=config.get("alignment", "first"))


# ---------------------------------------------------------------------------
# Building a fresh teacher


def build_teacher(labels: Sequence[str], train_sentences, *, backbone: str | None = None, head: str = "crf",
                  extend_vocab: bool = True, random_init: bool = False, num_layers: int | None = None,
                  freeze_layers: int = 0, dropout: float = 0.1, lstm_hidden: int = 256, max_length: int = 128,
                  meta: dict | None = None, alignment: str = "auto", prune_vocab: bool = True) -> BertTagger:
    """A new BERT-CRF from a backbone (built-in name, local folder or hub id; default
    :data:`teachers.backbones.DEFAULT_BACKBONE`). With ``prune_vocab``, a SentencePiece
    vocabulary is pruned to the pieces of ``train_sentences`` and their scripts
    (:func:`teachers.vocab.prune_vocabulary`)."""
    name = backbone or DEFAULT_BACKBONE
    encoder, tokenizer, source = load_backbone(name, num_layers=num_layers, random_init=random_init)
    pruned = None
    if prune_vocab:
        from teachers.vocab import is_unigram, prune_vocabulary, sentence_texts

        if is_unigram(tokenizer):  # e5's 250k pieces: keep the rows this corpus needs
            texts = sentence_texts(train_sentences, unspaced=bool((meta or {}).get("char_level")))
            pruned = prune_vocabulary(tokenizer, encoder, texts)
            tokenizer = pruned.tokenizer
    vocab = {"unk_rate_before": round(unk_rate(tokenizer, train_sentences)[0], 4), "added": 0}
    if extend_vocab:
        vocab = extend_vocabulary(tokenizer, encoder, train_sentences)
    if pruned is not None:
        vocab["pruned"] = pruned.record()
    if freeze_layers:
        for p in encoder.embeddings.parameters():
            p.requires_grad = False
        for layer in encoder.encoder.layer[:freeze_layers]:
            for p in layer.parameters():
                p.requires_grad = False
    meta = dict(meta or {}, backbone=name, backbone_path=source, vocabulary=vocab, random_init=random_init,
                freeze_layers=freeze_layers)
    alignment = choose_alignment(alignment, tokenizer, bool(meta.get("char_level")))
    return BertTagger(encoder, tokenizer, labels, head=head, dropout=dropout, lstm_hidden=lstm_hidden,
                      max_length=max_length, meta=meta, alignment=alignment)
