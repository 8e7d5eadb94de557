"""Tag schemes: detection and conversion, in one place.

Every corpus is converted to BIO (``B-X``, ``I-X``, ``O``) when it is read; models
train and decode in BIO, and predictions are converted back to the scheme (and
separator) of the input when they are written.

Supported schemes:

* ``BIO``   (IOB2): ``B`` starts every entity, ``I`` continues it.
* ``IOB1``: ``I`` starts an entity; ``B`` only starts an entity that directly
  follows another of the same type.
* ``BIOES``: ``B``/``I``/``E`` for multi-token entities, ``S`` for single tokens.
* ``BMES``: as BIOES with ``M`` for the inside (the MSRA corpus).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Sequence

import numpy as np

SCHEMES = ("BIO", "IOB1", "BIOES", "BMES")
_PREFIXES = set("BIESM")


@dataclass(frozen=True)
class Span:
    start: int  # first token, inclusive
    end: int  # last token, exclusive
    type: str


class TagError(ValueError):
    """A tag that fits no scheme; the message says what was expected."""


def parse_tag(tag: str) -> tuple[str, str | None, str]:
    """Split a tag into ``(prefix, type, separator)``; ``O`` gives ``("O", None, "")``."""
    if tag == "O":
        return "O", None, ""
    if len(tag) >= 3 and tag[0] in _PREFIXES and tag[1] in "-_":
        return tag[0], tag[2:], tag[1]
    raise TagError(
        f"tag {tag!r} fits no scheme: expected 'O' or a prefix B/I/E/S/M, "
        f"then '-' or '_', then a type (e.g. 'B-LOC')"
    )


# parse_tag of a tag already seen: a corpus has a handful of distinct tags and millions of tokens
_parsed = lru_cache(maxsize=4096)(parse_tag)


def detect_scheme(sentences: Sequence[Sequence[str]]) -> str:
    """Guess the scheme of tagged sentences (already validated by :func:`parse_tag`)."""
    prefixes = {_parsed(tag)[0] for tag in set(chain.from_iterable(sentences))}
    if "M" in prefixes:
        return "BMES"
    if prefixes & {"E", "S"}:
        return "BIOES"
    b_starts_fresh = False
    i_starts = False
    for tags in sentences:
        prev_prefix, prev_type = "O", None
        for tag in tags:
            prefix, typ, _ = _parsed(tag)
            continues = prev_type == typ and prev_prefix in "BIM"
            if prefix == "B" and not (prev_type == typ and prev_prefix != "O"):
                b_starts_fresh = True
            if prefix == "I" and not continues:
                i_starts = True
            prev_prefix, prev_type = prefix, typ
    if b_starts_fresh or "B" in prefixes and not i_starts:
        return "BIO"
    if i_starts:
        return "IOB1"
    return "BIO"


def separator_of(sentences: Sequence[Sequence[str]]) -> str:
    for tags in sentences:
        for tag in tags:
            if tag != "O":
                return parse_tag(tag)[2]
    return "-"


def to_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """Entity spans of one sentence, read leniently (a stray inside tag starts an entity)."""
    spans: list[Span] = []
    start, typ = None, None

    def close(end: int) -> None:
        nonlocal start, typ
        if start is not None:
            spans.append(Span(start, end, typ))
        start, typ = None, None

    for i, tag in enumerate(tags):
        prefix, t, _ = _parsed(tag)
        if prefix == "O":
            if start is not None:
                close(i)
        elif scheme == "IOB1":
            if prefix == "B" or t != typ or start is None:
                close(i)
                start, typ = i, t
        elif prefix == "B" or prefix == "S" or t != typ or start is None:
            close(i)
            start, typ = i, t
            if prefix == "S":
                close(i + 1)
        elif prefix == "E":
            close(i + 1)
        # I or M continuing the open entity: nothing to do
    close(len(tags))
    return spans


def from_spans(spans: Sequence[Span], length: int, scheme: str, sep: str = "-") -> list[str]:
    tags = ["O"] * length
    inside = "M" if scheme == "BMES" else "I"
    prev_end, prev_type = -1, None
    for span in spans:
        n = span.end - span.start
        if scheme in ("BIO", "IOB1"):
            first = "B" if scheme == "BIO" or (span.start == prev_end and span.type == prev_type) else "I"
            tags[span.start] = f"{first}{sep}{span.type}"
            for i in range(span.start + 1, span.end):
                tags[i] = f"I{sep}{span.type}"
        elif n == 1:
            tags[span.start] = f"S{sep}{span.type}"
        else:
            tags[span.start] = f"B{sep}{span.type}"
            for i in range(span.start + 1, span.end - 1):
                tags[i] = f"{inside}{sep}{span.type}"
            tags[span.end - 1] = f"E{sep}{span.type}"
        prev_end, prev_type = span.end, span.type
    return tags


def convert(tags: Sequence[str], source: str, target: str = "BIO", sep: str = "-") -> list[str]:
    """Convert one sentence's tags from ``source`` to ``target`` scheme."""
    if source not in SCHEMES or target not in SCHEMES:
        raise ValueError(f"unknown scheme: expected one of {SCHEMES}, got {source!r} -> {target!r}")
    return from_spans(to_spans(tags, source), len(tags), target, sep)


def bio_labels(types: Sequence[str]) -> list[str]:
    """The BIO label set for entity types, in a fixed order: O, then B-/I- per sorted type."""
    labels = ["O"]
    for t in sorted(set(types)):
        labels += [f"B-{t}", f"I-{t}"]
    return labels


def allowed_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which BIO (IOB2) paths are valid for a label set (AllenNLP's ``allowed_transitions``).

    Returns ``start`` (K,) bool, true for tags a sentence may begin with, and ``trans``
    (K, K) bool, ``trans[i, j]`` true when tag j may follow tag i: ``I-X`` only begins
    nowhere and follows only ``B-X`` or ``I-X``; everything else is free, and any tag
    may end a sentence. A path that obeys these is exactly one whose entities
    :func:`to_spans` reads the same under strict and lenient matching.
    """
    parsed = [parse_tag(label) for label in labels]
    inside = np.array([p == "I" for p, _, _ in parsed])
    types = [t for _, t, _ in parsed]
    start = ~inside
    trans = np.ones((len(labels), len(labels)), dtype=bool)
    for j, (p, t, _) in enumerate(parsed):
        if p == "I":
            trans[:, j] = [types[i] == t and parsed[i][0] in "BI" for i in range(len(labels))]
    return start, trans
