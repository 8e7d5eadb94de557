"""From sentences to model batches and back: splitting long sentences into pieces,
length-bucketed batching, and merging piece predictions into one tag per token.

Featurizing a large corpus (tokenization and sub-word alignment) is cached on disk,
keyed by the sentences, their tags and the featurizer's identity, so a second run on
the same data and tokenizer loads the pieces instead of rebuilding them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from distill.data import split_long
from distill.fileio import atomic_path

CACHE_ENV = "DISTILL_CACHE"  # a folder, or off|0|false|no to disable
CACHE_MIN_SENTENCES = 1000  # smaller inputs are cheap to featurize: not cached
CACHE_FORMAT = 1
_OFF = ("", "0", "off", "false", "no")


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


def make_pieces(model, sentences: Sequence[Sequence[str]], tag_ids: Sequence[Sequence[int]] | None = None,
                cache: bool | None = None) -> list[Piece]:
    """Featurize sentences, splitting any longer than ``model.max_length`` sub-tokens.

    Empty sentences give no piece. With ``tag_ids`` each feature also holds ``tags``.
    ``cache``: None caches labelled inputs (training data: ``tag_ids`` given) of
    ``CACHE_MIN_SENTENCES`` sentences or more, True always, False never (see
    :func:`cache_folder`); a model whose featurizer cannot be identified
    (:func:`featurizer_key`) is never cached. Text to predict is not cached by
    default: it is seldom featurized twice, and each file would leave a cache entry.
    """
    if cache is None:
        cache = tag_ids is not None and len(sentences) >= CACHE_MIN_SENTENCES
    path = _cache_path(model, sentences, tag_ids) if cache else None
    if path is not None:
        pieces = _load(path, len(sentences))
        if pieces is not None:
            return pieces
    pieces = _featurize(model, sentences, tag_ids)
    if path is not None:
        _store(path, pieces, len(sentences))
    return pieces


def _featurize(model, sentences, tag_ids) -> list[Piece]:
    limit = model.max_length
    pieces: list[Piece] = []
    nonempty = [i for i, s in enumerate(sentences) if len(s)]
    encoded = model.encode_words([sentences[i] for i in nonempty])
    for i, words in zip(nonempty, encoded):
        lengths = list(map(len, words))
        if sum(lengths) + lengths.count(0) <= limit:  # the common case: one piece
            spans: Sequence[tuple[int, int]] = ((0, len(words)),)
        else:
            if max(lengths) > limit:
                words = [w[:limit] for w in words]
                lengths = list(map(len, words))
            spans = split_long(sentences[i], lengths, limit)
        for start, end in spans:
            feature = model.build_feature(words if end - start == len(words) else words[start:end])
            if tag_ids is not None:
                feature["tags"] = list(tag_ids[i][start:end])
            pieces.append(Piece(i, start, end, feature))
    return pieces


# ---------------------------------------------------------------------------
# The on-disk cache of pieces


def cache_folder() -> Path | None:
    """Where featurized corpora are cached: ``$DISTILL_CACHE`` or ``~/.cache/distill``,
    under ``pieces/``; None when ``DISTILL_CACHE`` is off|0|false|no."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None
    return (Path(value).expanduser() if value else Path.home() / ".cache" / "distill") / "pieces"


def _code_hash(code, h) -> None:
    """Feed a function's bytecode and constants (nested code objects too) to ``h``."""
    h.update(code.co_code)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _code_hash(const, h)
        else:
            h.update(repr(const).encode())


def featurizer_key(model) -> str | None:
    """The identity of a model's featurizer, or None when it cannot be told.

    Computed here from what every model offers (the Tagger base class is not changed):
    the class and the code of its ``encode_words`` and ``build_feature``, ``kind``,
    ``max_length``, and the tokenizer (its full serialized form when it is a fast
    tokenizer: vocabulary, added tokens, normalizer and pre-tokenizer; otherwise
    ``get_vocab()``) or, for word-level models, ``vocab``.
    """
    h = hashlib.sha256()
    cls = type(model)
    h.update(f"{cls.__module__}.{cls.__qualname__}|{getattr(model, 'kind', '')}|{model.max_length}".encode())
    for name in ("encode_words", "build_feature"):
        code = getattr(getattr(cls, name, None), "__code__", None)
        if code is not None:
            _code_hash(code, h)
    tokenizer, vocab = getattr(model, "tokenizer", None), getattr(model, "vocab", None)
    if tokenizer is not None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            h.update(backend.to_str().encode())
        elif hasattr(tokenizer, "get_vocab"):
            h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
        else:
            return None
        specials = [getattr(tokenizer, f"{t}_token_id", None) for t in ("cls", "sep", "pad", "unk")]
        h.update(repr(specials).encode())
    elif vocab is not None:
        items = sorted(vocab.items()) if isinstance(vocab, dict) else list(vocab)
        h.update(json.dumps(items, ensure_ascii=False).encode())
    else:
        return None
    return h.hexdigest()


def corpus_key(sentences: Sequence[Sequence[str]], tag_ids: Sequence[Sequence[int]] | None) -> str:
    """A hash of the sentences and (when given) their tag ids."""
    h = hashlib.sha256()
    for s in sentences:
        h.update("\x1f".join(s).encode())
        h.update(b"\x1e")
    if tag_ids is not None:
        h.update(b"\x1dtags")
        for t in tag_ids:
            h.update(array("q", t).tobytes())
            h.update(b"\x1e")
    return h.hexdigest()


def _cache_path(model, sentences, tag_ids) -> Path | None:
    folder = cache_folder()
    if folder is None:
        return None
    featurizer = featurizer_key(model)
    if featurizer is None:
        return None
    key = hashlib.sha256(f"{CACHE_FORMAT}|{corpus_key(sentences, tag_ids)}|{featurizer}".encode()).hexdigest()
    return folder / f"{key[:32]}.pkl"


def _load(path: Path, n_sentences: int) -> list[Piece] | None:
    """The cached pieces, or None when the file is missing, corrupt or not for this input."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
        if data["format"] != CACHE_FORMAT or data["sentences"] != n_sentences:
            return None
        pieces = [Piece(s, a, b, feature) for s, a, b, feature in data["pieces"]]
    except FileNotFoundError:
        return None
    except Exception:  # truncated, corrupt or foreign: ignored and rebuilt
        return None
    if any(not (0 <= p.sentence < n_sentences) or not isinstance(p.feature, dict) for p in pieces):
        return None
    return pieces


def _store(path: Path, pieces: Sequence[Piece], n_sentences: int) -> None:
    data = {"format": CACHE_FORMAT, "sentences": n_sentences,
            "pieces": [(p.sentence, p.start, p.end, p.feature) for p in pieces]}
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError:  # a read-only or full cache folder only costs the next run time
        pass


# ---------------------------------------------------------------------------
# Batching


def bucket_batches(lengths: Sequence[int], batch_size: int, seed: int | None = None,
                   chunk_batches: int = 50) -> list[list[int]]:
    """Batches of indices with similar lengths, so little of each batch is padding.

    With a ``seed`` (training): shuffle, sort by length within chunks of
    ``chunk_batches`` batches, cut into batches, shuffle the batches. Without
    (inference): sort everything by length.
    """
    order = list(range(len(lengths)))
    if seed is None:
        order.sort(key=lengths.__getitem__)
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c : c + chunk], key=lengths.__getitem__)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_waste(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions in the batches: 1 - real / (batch size x max length)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1 - real / padded if padded else 0.0


def piece_length(piece: Piece) -> int:
    """What a batch pads: sub-tokens for models fed sub-tokens (``input_ids``), else words."""
    ids = piece.feature.get("input_ids")
    return len(ids) if ids is not None else piece.n_words


def merge(pieces: Sequence[Piece], piece_tags: Sequence[Sequence[int]], sentence_lengths: Sequence[int]) -> list[list[int]]:
    """Put piece predictions back together: exactly one tag id per input token."""
    out = [[0] * n for n in sentence_lengths]
    for piece, tags in zip(pieces, piece_tags):
        assert len(tags) == piece.n_words, (len(tags), piece.n_words)
        out[piece.sentence][piece.start : piece.end] = tags
    return out


def iterate_batches(model, pieces: Sequence[Piece], batch_size: int) -> Iterator[tuple[list[int], dict]]:
    """Inference batches, sorted by padded length: ``(piece indices, collated batch)``."""
    for idx in bucket_batches([piece_length(p) for p in pieces], batch_size):
        yield idx, model.collate([pieces[i].feature for i in idx])
