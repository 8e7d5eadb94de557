"""BiLSTM classifier student (Tang et al. 2019, "Distilling Task-Specific Knowledge from
BERT into Simple Neural Networks"): token embeddings over its own vocabulary, a
bidirectional LSTM, the concatenation of max and mean pooling over the real positions,
dropout, and a linear layer to class logits.

Tokens are characters for text written without spaces (Chinese, Japanese, Thai...) and
whitespace-separated words otherwise; the choice is made once from the training texts
(:func:`is_unspaced`), stored in the folder's config and meta (``char_level``), and the
vocabulary (``[PAD]`` = 0, ``[UNK]`` = 1, then tokens seen ``min_count`` times or more,
:func:`students.bilstm_crf.build_vocabulary`) in ``vocab.json``, so inference needs
neither the teacher nor its tokenizer. A text of more than ``max_length`` tokens (default
512) keeps its first ``max_length // 2`` and its last ``max_length - max_length // 2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from distill.classify import Classifier, ClassifierOutput, head_tail
from distill.fileio import write_json
from distill.lstm import run_bilstm
from students.bilstm_crf import UNK, VOCAB_FILE, build_vocabulary, check_bilstm_args, read_vocabulary

# Code point ranges of scripts written without spaces between words.
UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3134F),  # CJK extensions B-G
)


def _unspaced_char(c: str) -> bool:
    o = ord(c)
    return any(a <= o <= b for a, b in UNSPACED_RANGES)


def is_unspaced(texts: Sequence[str]) -> bool:
    """True when most non-space characters of ``texts`` belong to scripts written without
    spaces (:data:`UNSPACED_RANGES`): such text is read per character. The script, not the
    presence of spaces, decides: about one Chinese review in seven has a space somewhere."""
    unspaced = total = 0
    for t in texts:
        for c in t:
            if not c.isspace():
                total += 1
                unspaced += _unspaced_char(c)
    return total > 0 and unspaced * 2 > total


def tokenize(text: str, char_level: bool) -> list[str]:
    """The text's tokens: its non-space characters, or its whitespace-separated words."""
    return [c for c in text if not c.isspace()] if char_level else text.split()


class BiLSTMClassifier(Classifier):
    """Embeddings (B, S, E) -> BiLSTM (B, S, H) -> [max; mean] over real positions (B, 2H)
    -> dropout -> linear -> logits (B, C).

    ``hidden_size`` is the BiLSTM output size, both directions together (``hidden_size // 2``
    units per direction), as in the BiLSTM-CRF.
    """

    kind = "bilstm-cls"
    files = ("model.safetensors", VOCAB_FILE)

    def __init__(self, vocab: Sequence[str], labels: Sequence[str], char_level: bool, embedding_dim: int = 128,
                 hidden_size: int = 256, lstm_layers: int = 1, dropout: float = 0.1, max_length: int = 512,
                 meta: dict | None = None):
        super().__init__(labels, meta)
        check_bilstm_args(vocab, embedding_dim, hidden_size, lstm_layers, dropout, max_length)
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.char_level = bool(char_level)
        self.meta["char_level"] = self.char_level
        self.embedding_dim, self.hidden_size, self.lstm_layers = embedding_dim, hidden_size, lstm_layers
        self.dropout_p = dropout
        self.max_length = max_length
        self.pad_id = 0
        self.embedding = nn.Embedding(len(self.vocab), embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden_size // 2, num_layers=lstm_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if lstm_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden_size, len(self.labels))

    @classmethod
    def from_texts(cls, texts: Sequence[str], labels: Sequence[str], *, char_level: bool | None = None,
                   min_count: int = 1, **kwargs) -> "BiLSTMClassifier":
        """A new classifier whose vocabulary is the tokens of ``texts`` seen ``min_count``
        times or more; ``char_level`` None decides from the texts (:func:`is_unspaced`).
        ``kwargs``: the other arguments of the constructor."""
        if char_level is None:
            char_level = is_unspaced(texts)
        vocab = build_vocabulary([tokenize(t, char_level) for t in texts], min_count)
        return cls(vocab, labels, char_level, **kwargs)

    # --- featurizing -------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[dict]:
        """Token ids (head + tail beyond ``max_length``); an empty text is one ``[UNK]``."""
        index, unk = self.index, self.index[UNK]
        head = self.max_length // 2
        return [{"input_ids": head_tail([index.get(w, unk) for w in tokenize(t, self.char_level)] or [unk],
                                        self.max_length, head)} for t in texts]

    # --- the model ---------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> ClassifierOutput:
        mask = batch["attention_mask"].bool()  # shape: (B, S)
        x = self.embedding(batch["input_ids"])  # shape: (B, S, E)
        hidden = run_bilstm(self.lstm, x, mask)  # shape: (B, S, H)
        m = mask.unsqueeze(-1)  # shape: (B, S, 1)
        pooled_max = hidden.masked_fill(~m, float("-inf")).amax(1)  # shape: (B, H)
        pooled_mean = (hidden * m).sum(1) / m.sum(1).clamp_min(1)  # shape: (B, H)
        logits = self.classifier(self.dropout(torch.cat([pooled_max, pooled_mean], dim=-1)))  # shape: (B, C)
        return ClassifierOutput(logits)

    # --- folders -----------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "hidden_size": self.hidden_size, "lstm_layers": self.lstm_layers,
                "dropout": self.dropout_p, "max_length": self.max_length, "char_level": self.char_level,
                "vocab_size": len(self.vocab)}

    def save_extra(self, folder: Path) -> None:
        write_json(folder / VOCAB_FILE, self.vocab)

    @classmethod
    def build(cls, config, labels, meta, folder):
        return cls(read_vocabulary(folder, config, "tokens"), labels, config["char_level"],
                   embedding_dim=config["embedding_dim"], hidden_size=config["hidden_size"],
                   lstm_layers=config["lstm_layers"], dropout=config["dropout"], max_length=config["max_length"],
                   meta=meta)
