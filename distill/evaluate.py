"""Tagging and entity-level evaluation, the same for every kind of model."""

from __future__ import annotations

import json
from typing import Any, Sequence

from distill import schemes
from distill.data import Corpus
from distill.features import iterate_batches, make_pieces, merge


def predict_ids(model, sentences: Sequence[Sequence[str]], batch_size: int = 64, progress=None) -> list[list[int]]:
    """Tag ids for every token of every sentence (long sentences split and merged back)."""
    pieces = make_pieces(model, sentences)
    if len(sentences) == 1 and len(pieces) == 1:  # batch-1 inference: one piece, nothing to bucket or merge
        tags = model.decode_batch(model.collate([pieces[0].feature]))
        if progress is not None:
            progress(1)
        return tags
    piece_tags: list[list[int]] = [None] * len(pieces)  # type: ignore[list-item]
    for idx, batch in iterate_batches(model, pieces, batch_size):
        for i, tags in zip(idx, model.decode_batch(batch)):
            piece_tags[i] = tags
        if progress is not None:
            progress(len(idx))
    return merge(pieces, piece_tags, [len(s) for s in sentences])


def predict_tags(model, sentences: Sequence[Sequence[str]], batch_size: int = 64, progress=None) -> list[list[str]]:
    """BIO tags for every token of every sentence."""
    labels = model.labels
    return [[labels[i] for i in row] for row in predict_ids(model, sentences, batch_size, progress)]


def as_written(bio: Sequence[str]) -> list[str]:
    """The BIO tags ``distill predict`` writes for decoded ``bio``: its entities read the
    lenient (conlleval) way, so a stray ``I-X`` starts an entity, written back as valid
    IOB2. Identity on valid paths (what constrained decoding gives)."""
    return schemes.convert(bio, "BIO", "BIO")


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level precision/recall/F1, micro and per type, of the predictions as
    ``distill predict`` writes them (:func:`as_written`): seqeval's strict IOB2 matching
    on valid paths, which equals conlleval on the written tags. Scoring invalid paths
    strictly instead would silently drop every entity that starts with ``I-``."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    gold = [list(g) for g in gold if len(g)]
    pred = [as_written(p) for p in pred if len(p)]
    report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    per_type = {
        k: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for k, v in report.items() if not k.endswith(" avg")
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    return {
        "precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"],
        "support": int(micro["support"]), "per_type": per_type,
    }


def evaluate(model, corpus: Corpus, batch_size: int = 64, progress=None) -> dict[str, Any]:
    pred = predict_tags(model, corpus.tokens, batch_size, progress)
    metrics = entity_metrics(corpus.tags, pred)
    metrics["sentences"] = len(corpus)
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    rows = [("type", "precision", "recall", "f1", "support")]
    for name, m in sorted(metrics["per_type"].items()):
        rows.append((name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"])))
    rows.append(("micro", f"{metrics['precision']:.4f}", f"{metrics['recall']:.4f}", f"{metrics['f1']:.4f}", str(metrics["support"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def to_output(tokens: Sequence[str], bio: Sequence[str], scheme: str, sep: str, fmt: str, char_level: bool = False) -> str:
    """One sentence's prediction in the input's scheme: CoNLL lines or a JSON object with spans."""
    tags = schemes.convert(bio, "BIO", scheme, sep)
    if fmt == "conll":
        return "\n".join(f"{t}\t{g}" for t, g in zip(tokens, tags)) + "\n"
    joiner = "" if char_level else " "
    entities = [
        {"start": s.start, "end": s.end, "type": s.type, "text": joiner.join(tokens[s.start : s.end])}
        for s in schemes.to_spans(bio, "BIO")
    ]
    return json.dumps({"tokens": list(tokens), "tags": tags, "entities": entities}, ensure_ascii=False)
