"""From sentences to model batches and back: splitting long sentences into pieces,
length-bucketed batching, and merging piece predictions into one tag per token."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

from distill.data import split_long


@dataclass
class Piece:
    """A slice ``[start, end)`` of sentence ``sentence`` that fits the model, featurized."""

    sentence: int
    start: int
    end: int
    feature: dict

    @property
    def n_words(self) -> int:
        return self.end - self.start


def make_pieces(model, sentences: Sequence[Sequence[str]], tag_ids: Sequence[Sequence[int]] | None = None) -> list[Piece]:
    """Featurize sentences, splitting any longer than ``model.max_length`` sub-tokens.

    Empty sentences give no piece. With ``tag_ids`` each feature also holds ``tags``.
    """
    limit = model.max_length
    pieces: list[Piece] = []
    nonempty = [i for i, s in enumerate(sentences) if len(s)]
    encoded = model.encode_words([sentences[i] for i in nonempty])
    for i, words in zip(nonempty, encoded):
        words = [w[:limit] for w in words]
        for start, end in split_long(sentences[i], [len(w) for w in words], limit):
            feature = model.build_feature(words[start:end])
            if tag_ids is not None:
                feature["tags"] = list(tag_ids[i][start:end])
            pieces.append(Piece(i, start, end, feature))
    return pieces


def bucket_batches(lengths: Sequence[int], batch_size: int, seed: int | None = None,
                   chunk_batches: int = 50) -> list[list[int]]:
    """Batches of indices with similar lengths, so little of each batch is padding.

    With a ``seed`` (training): shuffle, sort by length within chunks of
    ``chunk_batches`` batches, cut into batches, shuffle the batches. Without
    (inference): sort everything by length.
    """
    order = list(range(len(lengths)))
    if seed is None:
        order.sort(key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c : c + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_waste(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions in the batches: 1 - real / (batch size x max length)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1 - real / padded if padded else 0.0


def merge(pieces: Sequence[Piece], piece_tags: Sequence[Sequence[int]], sentence_lengths: Sequence[int]) -> list[list[int]]:
    """Put piece predictions back together: exactly one tag id per input token."""
    out = [[0] * n for n in sentence_lengths]
    for piece, tags in zip(pieces, piece_tags):
        assert len(tags) == piece.n_words, (len(tags), piece.n_words)
        out[piece.sentence][piece.start : piece.end] = tags
    return out


def iterate_batches(model, pieces: Sequence[Piece], batch_size: int) -> Iterator[tuple[list[int], dict]]:
    """Inference batches, sorted by length: ``(piece indices, collated batch)``."""
    for idx in bucket_batches([p.n_words for p in pieces], batch_size):
        yield idx, model.collate([pieces[i].feature for i in idx])
