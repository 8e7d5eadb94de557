"""The masked-language-model (MLM) data of adaptation (:mod:`teachers.adapt`): in-domain
text read into words, whole-word masking and masked, padded batches.

Whole-word masking (Cui et al. 2019; for character-level text a word is one character):
about ``mask_prob`` of a sequence's sub-tokens are chosen a word at a time, and each
chosen word is replaced by [MASK] (80%), by random tokens (10%) or kept (10%) (Devlin et
al. 2019). The loss is cross-entropy at the chosen positions only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Collection, Sequence

import torch

from distill.data import Corpus, _read_lines, split_text
from distill.errors import DataError
from teachers.bert_crf import BertTagger

IGNORE = -100  # label of positions that are not predicted


# ---------------------------------------------------------------------------
# Masking


def mask_words(words: Sequence[Sequence[int]], rng: random.Random, *, mask_id: int, vocab_size: int,
               mask_prob: float = 0.15, special_ids: Collection[int] = ()) -> tuple[list[int], list[int]]:
    """Whole-word masking of one sequence with the 80/10/10 rule.

    ``words``: per word, its sub-token ids. Words are drawn in random order until
    ``mask_prob`` of the sub-tokens are covered (the target is rounded stochastically, so
    the expected share is exactly ``mask_prob``; at least one word per sequence). Each
    chosen word, all its sub-tokens together, becomes [MASK] with probability 0.8, random
    non-special tokens with 0.1, and stays as it is with 0.1. Words made only of
    ``special_ids`` (e.g. [UNK]) are never chosen.

    Returns ``(input_ids, labels)``, flat over the sub-tokens: ``labels`` holds the
    original id at chosen positions and -100 elsewhere.
    """
    special = set(special_ids)
    candidates = [i for i, w in enumerate(words) if any(t not in special for t in w)]
    n_tokens = sum(len(words[i]) for i in candidates)
    target = int(mask_prob * n_tokens + rng.random())
    if candidates:
        target = max(1, target)
    rng.shuffle(candidates)
    chosen: set[int] = set()
    covered = 0
    for i in candidates:
        if covered >= target:
            break
        if covered and covered + len(words[i]) > target:
            continue  # would overshoot; a shorter word may still fit
        chosen.add(i)
        covered += len(words[i])
    input_ids: list[int] = []
    labels: list[int] = []
    for i, w in enumerate(words):
        if i not in chosen:
            input_ids.extend(w)
            labels.extend([IGNORE] * len(w))
            continue
        labels.extend(w)
        r = rng.random()
        if r < 0.8:
            input_ids.extend([mask_id] * len(w))
        elif r < 0.9:
            input_ids.extend(_random_token(rng, vocab_size, special) for _ in w)
        else:
            input_ids.extend(w)
    return input_ids, labels


def _random_token(rng: random.Random, vocab_size: int, special: set[int]) -> int:
    while True:
        t = rng.randrange(vocab_size)
        if t not in special:
            return t


# ---------------------------------------------------------------------------
# Text


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF
            or 0x3040 <= o <= 0x30FF or 0x20000 <= o <= 0x2FA1F)


def looks_char_level(lines: Sequence[str], sample: int = 2000) -> bool:
    """True when most non-space characters of the first ``sample`` lines are CJK
    (Chinese/Japanese text has no spaces between words: split it per character)."""
    chars = [c for line in lines[:sample] for c in line if not c.isspace()]
    return bool(chars) and sum(map(_is_cjk, chars)) > len(chars) / 2


def read_text(path: str | Path, char_level: bool | None = None) -> Corpus:
    """An unlabelled corpus from a text file, one document or sentence per line.

    ``char_level`` None: split per character when the text is mostly CJK, else on whitespace.
    """
    path = Path(path)
    lines = _read_lines(path)  # one-line DataErrors: missing, folder, not UTF-8, empty
    if char_level is None:
        char_level = looks_char_level(lines)
    tokens = [toks for toks in (split_text(line, char_level) for line in lines) if toks]
    if not tokens:
        raise DataError(path, 1, "no text found; expected one document or sentence per line")
    return Corpus(tokens, None, char_level=char_level, name=path.name)


# ---------------------------------------------------------------------------
# Sequences and batches


class _Featurizer:
    """Sub-word alignment for :func:`distill.features.make_pieces`: the teacher's own
    ``encode_words`` (one alignment function for the whole project), pieces of at most
    ``max_length`` sub-tokens; a feature is the piece's per-word sub-token ids."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    encode_words = BertTagger._first  # whole-word masking needs each word's own sub-tokens

    def build_feature(self, word_ids):
        return {"words": [list(w) for w in word_ids]}


def collate(features: Sequence[dict], rng: random.Random, tokenizer, mask_prob: float) -> dict:
    """Mask each feature's words and pad: input_ids, attention_mask, labels, each (B, S)."""
    special = set(tokenizer.all_special_ids)
    seqs = [mask_words(f["words"], rng, mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                       mask_prob=mask_prob, special_ids=special) for f in features]
    B, S = len(seqs), max(len(ids) for ids, _ in seqs) + 2
    input_ids = torch.full((B, S), tokenizer.pad_token_id or 0, dtype=torch.long)
    labels = torch.full((B, S), IGNORE, dtype=torch.long)
    attention = torch.zeros((B, S), dtype=torch.long)
    for i, (ids, lab) in enumerate(seqs):
        n = len(ids) + 2
        input_ids[i, :n] = torch.tensor([tokenizer.cls_token_id, *ids, tokenizer.sep_token_id])
        labels[i, 1 : n - 1] = torch.tensor(lab)
        attention[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
