"""Extending a backbone's vocabulary to a corpus: the words its tokenizer maps to [UNK]
only become new tokens, with new embedding rows (:func:`extend_vocabulary`).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch


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
