"""``distill eval`` and ``distill predict`` on a text classifier (a model folder whose meta
task is "classify"): :mod:`distill.predict` hands such folders here.

eval: accuracy, macro-F1 and per-class precision/recall/F1 (:func:`distill.classify.evaluate_classifier`),
written to ``MODEL/eval.json``. predict: per input text its label and the class
probabilities, as ``label<TAB>p_1<TAB>...<TAB>p_C`` (columns in the model's label order, the
``labels`` of its distill.json) or as JSON lines ``{"text", "label", "probabilities": {label: p}}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from distill.config import DataConfig
from distill.errors import DataError, DistillError

OUTPUT_FORMATS = ("text", "json")


def is_classifier(folder: str | Path) -> bool:
    """Whether a model folder holds a text classifier (meta task "classify"); errors as :func:`distill.modeling.read_meta`."""
    from distill.modeling import read_meta

    return (read_meta(folder).get("meta") or {}).get("task") == "classify"


def recorded_dataset(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The dataset kwargs a model (or the model a compressed folder was made from) was trained on."""
    params = (meta.get("source_params") if meta.get("source_kind") else meta.get("params")) or {}
    return dict(params["dataset"]) if isinstance(params.get("dataset"), dict) else None


def text_dataset(dataset: DataConfig | dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`distill.textdata.load_text_dataset` kwargs (the JSON form of a
    :class:`distill.config.DataConfig`) from the command's data options: a text dataset as
    given; the user's train file as classification data; else (no data named, the tagging
    default) the model's own training data, or the built-in sentiment dataset."""
    given = DataConfig.of(dataset).given()
    if given.is_text:
        return given.to_json()
    if given.train is not None:
        unnamed = {k: v for k, v in given.to_json().items() if k != "name"}
        return DataConfig.from_json(unnamed).replace(task="classify").to_json()
    caps = {k: v for k, v in given.to_json().items() if k.startswith("max_")}
    return DataConfig.from_json(recorded or {"name": "sentiment"}).replace(**caps).to_json()


def eval_corpus(dataset: dict[str, Any], split: str, recorded: dict[str, Any] | None):
    """``(corpus, dataset name, fingerprint)`` of the split to score. A --test (--dev) file without
    --train is read alone; otherwise the whole dataset is loaded (its checks included)."""
    from distill.textdata import _cap, load_text_dataset, read_texts

    part = dataset.get(split)
    if part is not None and dataset.get("train") is None:
        corpus = _cap(read_texts(part, fmt=dataset.get("fmt") or "auto"), dataset.get(f"max_{split}"))
        return corpus, str(part), corpus.fingerprint()
    ds = load_text_dataset(text_dataset(dataset, recorded))
    return getattr(ds, split), ds.name, ds.fingerprint()


def eval_classifier(*, model: str | Path, dataset: dict, split: str = "test", out: str | Path | None = None,
                    batch_size: int = 64, decoding: str | None = None) -> dict[str, Any]:
    """Score a classifier folder on a split; write the metrics JSON (default ``MODEL/eval.json``)."""
    from distill.classify import evaluate_classifier
    from distill.fileio import write_json
    from distill.modeling import load_model

    if split not in ("test", "dev"):
        raise DistillError(f"--split must be test or dev, got {split!r}")
    if decoding is not None:
        raise DistillError(f"{model}: --decoding is for taggers; a text classifier has no tag paths to decode")
    m = load_model(model)
    corpus, name, fingerprint = eval_corpus(dataset, split, recorded_dataset(m.meta))
    unknown = sorted(set(corpus.labels or []) - set(m.labels))
    if unknown:
        i = corpus.labels.index(unknown[0])
        raise DataError(corpus.name, corpus.lines[i] if corpus.lines else None,
                        f"label {unknown[0]!r} is not one of the model's labels {', '.join(m.labels)} ({model})")
    metrics = evaluate_classifier(m, corpus, batch_size)
    metrics.update(model=str(model), dataset=name, split=split, dataset_fingerprint=fingerprint, task="classify")
    write_json(out or Path(model) / "eval.json", metrics)
    return metrics


def format_classification(metrics: dict[str, Any]) -> str:
    """Per-class precision/recall/F1/support, their macro means, and the accuracy, as a text table."""
    rows = [("class", "precision", "recall", "f1", "support")]
    for name, m in metrics["per_class"].items():
        rows.append((name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"])))
    rows.append(("macro", f"{metrics['macro_precision']:.4f}", f"{metrics['macro_recall']:.4f}",
                 f"{metrics['macro_f1']:.4f}", str(metrics["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    table = "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                      for r in rows)
    return f"{table}\naccuracy {metrics['accuracy']:.4f} ({metrics['n']} texts), macro-F1 {metrics['macro_f1']:.4f}"


def predict_classifier(*, model: str | Path, text: str | None = None, input: str | None = None,
                       labelled: bool = False, fmt: str = "auto", tags_file: str | Path | None = None,
                       output_format: str | None = None, out: str | Path | None = None, batch_size: int = 64,
                       stdout: TextIO | None = None, decoding: str | None = None) -> int:
    """Classify ``text`` or each non-blank line of ``input`` (``-``: stdin; ``labelled``: a
    labelled .tsv/.csv/.jsonl file, its labels ignored); returns the number of texts."""
    from distill.classify import predict_proba
    from distill.fileio import write_text
    from distill.modeling import load_model
    from distill.predict import _read_raw

    output_format = output_format or "text"
    if output_format not in OUTPUT_FORMATS:
        raise DistillError(f"{model}: a text classifier writes --output-format {' or '.join(OUTPUT_FORMATS)} "
                           f"(label and probabilities), got {output_format!r}")
    if tags_file is not None or fmt == "twofile":
        raise DistillError(f"{model}: a text classifier reads texts, not tag files (--tags-file, --format twofile)")
    if decoding is not None:
        raise DistillError(f"{model}: --decoding is for taggers; a text classifier has no tag paths to decode")
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
            raise DistillError(f"TEXT is not valid UTF-8 (character {e.start + 1}); pass UTF-8 text") from None
    m = load_model(model)
    if labelled:
        if input is None or input == "-":
            raise DistillError("--labelled needs --input FILE")
        from distill.textdata import read_texts

        texts = read_texts(input, fmt=fmt, labelled=False).texts
    else:
        lines = [text] if text is not None else _read_raw(input)
        texts = [line.strip() for line in lines if line.strip()]
    proba = predict_proba(m, texts, batch_size) if texts else []  # shape: (N, C)
    labels = list(m.labels)
    rows = []
    for t, p in zip(texts, proba):
        label = labels[int(p.argmax())]
        if output_format == "json":
            rows.append(json.dumps({"text": t, "label": label,
                                    "probabilities": {l: round(float(x), 6) for l, x in zip(labels, p)}},
                                   ensure_ascii=False))
        else:
            rows.append("\t".join([label, *(f"{float(x):.6f}" for x in p)]))
    body = "".join(r + "\n" for r in rows)
    if out is not None:
        write_text(out, body)
    else:
        (stdout or sys.stdout).write(body)
    return len(texts)
