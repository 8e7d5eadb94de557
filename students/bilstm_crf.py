"""BiLSTM-CRF student: word embeddings over its own vocabulary, a bidirectional LSTM,
a linear layer to emissions, and a CRF.

The vocabulary is built from the training words (``[PAD]`` = 0, ``[UNK]`` = 1, then
every word seen ``min_count`` times or more, most frequent first) and saved in the
model folder as ``vocab.json``, so inference needs neither the teacher nor its
tokenizer. One id per word: a piece is at most ``max_length`` words.

Defaults (1 layer, embeddings 128, 128 units per direction, dropout 0.5 on the
embeddings and on the LSTM output) are the classic character BiLSTM-CRF for Chinese
NER (Lample et al. 2016; Zhang & Yang 2018 use dropout 0.5 on both) at the size the
team's plain baseline used.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from distill.crf import CRF
from distill.errors import DistillError
from distill.fileio import write_json
from distill.lstm import run_bilstm
from distill.modeling import Tagger, TaggerOutput, collate_extras

PAD, UNK = "[PAD]", "[UNK]"
VOCAB_FILE = "vocab.json"


def build_vocabulary(sentences: Sequence[Sequence[str]], min_count: int = 1) -> list[str]:
    """``[PAD]``, ``[UNK]``, then the words seen at least ``min_count`` times, most frequent first
    (ties in first-seen order, so the same data always gives the same ids)."""
    if min_count < 1:
        raise DistillError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(w for s in sentences for w in s)
    words = [w for w, c in counts.most_common() if c >= min_count and w not in (PAD, UNK)]
    return [PAD, UNK] + words


def check_bilstm_args(vocab: Sequence[str], embedding_dim: int, hidden_size: int, lstm_layers: int, dropout: float,
                      max_length: int) -> None:
    """The constructor arguments of a BiLSTM student (tagger or classifier), in one-line errors."""
    for name, value in (("embedding_dim", embedding_dim), ("hidden_size", hidden_size),
                        ("lstm_layers", lstm_layers), ("max_length", max_length)):
        if value < 1:
            raise DistillError(f"{name} must be >= 1, got {value}")
    if hidden_size % 2:
        raise DistillError(f"hidden_size is both LSTM directions together and must be even, got {hidden_size}")
    if not 0 <= dropout < 1:
        raise DistillError(f"dropout must be in [0, 1), got {dropout}")
    if list(vocab[:2]) != [PAD, UNK]:
        raise DistillError(f"a vocabulary must start with {PAD}, {UNK}; got {list(vocab[:2])}")


def read_vocabulary(folder: str | Path, config: dict[str, Any], what: str = "words") -> list[str]:
    """A BiLSTM student's ``vocab.json``: a list of ``config["vocab_size"]`` ``what`` (words, tokens)."""
    path = Path(folder) / VOCAB_FILE
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DistillError(f"{path}: missing; the model folder is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DistillError(f"{path}: corrupt vocabulary ({e})") from None
    if not isinstance(vocab, list) or len(vocab) != config.get("vocab_size", len(vocab)):
        raise DistillError(f"{path}: expected a list of {config.get('vocab_size')} {what}")
    return vocab


class BiLSTMTagger(Tagger):
    """Embeddings -> dropout -> BiLSTM -> dropout -> linear -> CRF, all per word.

    ``hidden_size`` is the BiLSTM output size, both directions together (``hidden_size // 2``
    units per direction), as in the teacher's BiLSTM head.
    """

    kind = "bilstm-crf"
    files = ("model.safetensors", VOCAB_FILE)

    def __init__(self, vocab: Sequence[str], labels: Sequence[str], embedding_dim: int = 128, hidden_size: int = 256,
                 lstm_layers: int = 1, dropout: float = 0.5, max_length: int = 512, meta: dict | None = None):
        super().__init__(labels, meta)
        check_bilstm_args(vocab, embedding_dim, hidden_size, lstm_layers, dropout, max_length)
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.embedding_dim, self.hidden_size, self.lstm_layers = embedding_dim, hidden_size, lstm_layers
        self.dropout_p = dropout
        self.max_length = max_length
        self.embedding = nn.Embedding(len(self.vocab), embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden_size // 2, num_layers=lstm_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if lstm_layers > 1 else 0.0)
        self.classifier = nn.Linear(hidden_size, len(self.labels))
        self.crf = CRF(len(self.labels))

    # --- featurizing -------------------------------------------------------
    def encode_words(self, sentences):
        index, unk = self.index, self.index[UNK]
        return [[[index.get(w, unk)] for w in s] for s in sentences]

    def build_feature(self, word_ids):
        return {"input_ids": [w[0] for w in word_ids]}

    def collate(self, features):
        B = len(features)
        W = max(len(f["input_ids"]) for f in features)
        # Padded in NumPy, then shared with torch: torch.tensor() of a Python list costs
        # several times more, which shows at batch size 1.
        input_ids = np.zeros((B, W), dtype=np.int64)
        word_mask = np.zeros((B, W), dtype=bool)
        tags = np.zeros((B, W), dtype=np.int64)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = f["input_ids"]
            word_mask[i, :n] = True
            if "tags" in f:
                tags[i, :n] = f["tags"]
        input_ids, word_mask, tags = torch.from_numpy(input_ids), torch.from_numpy(word_mask), torch.from_numpy(tags)
        batch = {"input_ids": input_ids, "word_mask": word_mask, "tags": tags}
        collate_extras(features, batch, W)
        return batch

    # --- the model ---------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> TaggerOutput:
        mask = batch["word_mask"]  # shape: (B, W)
        words = self.embedding(batch["input_ids"])  # shape: (B, W, E)
        if self.dropout.training:  # (the identity in eval mode: skipping the call saves its cost per batch)
            words = self.dropout(words)
        hidden = run_bilstm(self.lstm, words, mask)  # shape: (B, W, H)
        emissions = self.classifier(self.dropout(hidden) if self.dropout.training else hidden)  # shape: (B, W, K)
        return TaggerOutput(emissions, mask, None)

    def param_group_of(self, name: str) -> str:
        if name.startswith("crf."):
            return "crf"
        if name.startswith("embedding."):
            return "embeddings"
        if name.startswith("lstm."):
            return "encoder"
        return "head"

    @torch.no_grad()
    def init_embeddings_from(self, tokenizer, embeddings: Tensor) -> dict[str, Any]:
        """Start the embedding rows of words the teacher's tokenizer knows as one token
        from the teacher's input embeddings (V_teacher, D).

        When ``embedding_dim`` < D the teacher rows are projected on their top
        ``embedding_dim`` principal components (PCA over the matched rows), keeping the
        student small; equal sizes copy the rows. Unmatched words keep their random
        rows, rescaled to the matched rows' spread. Returns what was done.
        """
        D = embeddings.shape[1]
        if self.embedding_dim > D:
            raise DistillError(f"--embedding-dim {self.embedding_dim} is larger than the teacher's embeddings ({D}); "
                               f"use at most {D} with --init-embeddings")
        words = self.vocab[2:]
        unk = tokenizer.unk_token_id
        enc = tokenizer(words, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        rows, ids = [], []
        for i, t in enumerate(enc["input_ids"]):
            if len(t) == 1 and t[0] != unk and t[0] < embeddings.shape[0]:
                rows.append(i + 2)
                ids.append(t[0])
        info = {"matched": len(rows), "words": len(words), "teacher_dim": D, "dim": self.embedding_dim,
                "projection": "copy" if self.embedding_dim == D else "pca"}
        if not rows:
            return info
        source = embeddings[torch.tensor(ids)].float()  # shape: (M, D)
        if self.embedding_dim < D:
            centered = source - source.mean(0, keepdim=True)
            _, _, v = torch.linalg.svd(centered, full_matrices=False)  # v: (min(M, D), D)
            k = min(self.embedding_dim, v.shape[0])
            source = torch.zeros(len(ids), self.embedding_dim)
            source[:, :k] = centered @ v[:k].T
        weight = self.embedding.weight
        unmatched = torch.ones(len(self.vocab), dtype=torch.bool)
        unmatched[torch.tensor(rows)] = False
        unmatched[0] = False
        if unmatched.sum() > 1:
            weight[unmatched] *= source.std() / weight[unmatched].std().clamp_min(1e-8)
        weight[torch.tensor(rows)] = source
        return info

    # --- folders -----------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "hidden_size": self.hidden_size, "lstm_layers": self.lstm_layers,
                "dropout": self.dropout_p, "max_length": self.max_length, "vocab_size": len(self.vocab)}

    def save_extra(self, folder: Path) -> None:
        write_json(folder / VOCAB_FILE, self.vocab)

    @classmethod
    def build(cls, config, labels, meta, folder):
        return cls(read_vocabulary(folder, config), labels, embedding_dim=config["embedding_dim"], hidden_size=config["hidden_size"],
                   lstm_layers=config["lstm_layers"], dropout=config["dropout"], max_length=config["max_length"],
                   meta=meta)
