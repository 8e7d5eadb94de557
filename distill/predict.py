"""Plain functions behind ``distill eval`` and ``distill predict``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from distill.errors import DataError, DistillError

OUTPUT_FORMATS = ("conll", "json", "tags")


def eval_model(*, model: str | Path, dataset: dict, split: str = "test", out: str | Path | None = None,
               batch_size: int = 64, decoding: str | None = None) -> dict[str, Any]:
    """Evaluate a model folder on a split; write metrics JSON (default ``MODEL/eval.json``).
    A text classifier is scored by :func:`distill.predict_classify.eval_classifier`."""
    from distill.data import load_dataset
    from distill.evaluate import evaluate
    from distill.fileio import write_json
    from distill.modeling import load_model
    from distill.predict_classify import eval_classifier, is_classifier

    if is_classifier(model):
        return eval_classifier(model=model, dataset=dataset, split=split, out=out, batch_size=batch_size,
                               decoding=decoding)

    if split not in ("test", "dev"):
        raise DistillError(f"--split must be test or dev, got {split!r}")
    m = load_model(model, decoding)
    ds = load_dataset(**dataset)
    corpus = ds.test if split == "test" else ds.dev
    if set(corpus.entity_types()) - {l[2:] for l in m.labels if l != "O"}:
        raise DistillError(f"{model}: model labels {m.labels} do not cover the {split} set's types {corpus.entity_types()}")
    metrics = evaluate(m, corpus, batch_size)
    metrics.update(model=str(model), dataset=ds.name, split=split, dataset_fingerprint=ds.fingerprint())
    write_json(out or Path(model) / "eval.json", metrics)
    return metrics


def _read_raw(input: str) -> list[str]:
    if input == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        name = "<stdin>"
    else:
        path = Path(input)
        if not path.exists():
            raise DataError(path, None, "file not found")
        if path.is_dir():
            raise DataError(path, None, "is a folder, expected a text file")
        data, name = path.read_bytes(), str(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(name, data.count(b"\n", 0, e.start) + 1, "not valid UTF-8; expected a UTF-8 text file") from None
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _tag_lines(text_lines: list[str], tags: list[list[str]], scheme: str, sep: str) -> str:
    """The two-file format's tag file for ``text_lines``: one line of tags per text line, in
    the input's scheme and separator, blank where the text line is blank (as the reader skips)."""
    from distill import schemes

    rows = iter(tags)
    return "\n".join(" ".join(schemes.convert(next(rows), "BIO", scheme, sep)) if line.split() else ""
                     for line in text_lines)


def predict_file(*, model: str | Path, text: str | None = None, input: str | None = None, labelled: bool = False,
                 fmt: str = "auto", tags_file: str | Path | None = None, output_format: str | None = None,
                 out: str | Path | None = None, batch_size: int = 64, stdout: TextIO | None = None,
                 decoding: str | None = None) -> int:
    """Tag text and write one block per input sentence; returns the number of sentences tagged.

    A two-file input (``tags_file``, or ``fmt`` twofile; implies ``labelled``) is written by
    default as a tag file of the same form (``output_format`` tags); otherwise CoNLL. A text
    classifier labels texts instead (:func:`distill.predict_classify.predict_classifier`).
    """
    from distill.data import read_corpus, split_text
    from distill.evaluate import predict_tags, to_output
    from distill.fileio import write_text
    from distill.modeling import load_model
    from distill.predict_classify import is_classifier, predict_classifier

    if is_classifier(model):
        return predict_classifier(model=model, text=text, input=input, labelled=labelled, fmt=fmt, tags_file=tags_file,
                                  output_format=output_format, out=out, batch_size=batch_size, stdout=stdout,
                                  decoding=decoding)

    two_files = tags_file is not None or fmt == "twofile"
    labelled = labelled or two_files
    output_format = output_format or ("tags" if two_files else "conll")
    if output_format not in OUTPUT_FORMATS:
        raise DistillError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if tags_file is not None and (input is None or input == "-"):
        raise DistillError(f"--tags-file {tags_file}: the tags of a labelled --input; give --input FILE")
    if output_format == "tags" and not two_files:
        raise DistillError("--output-format tags writes the tag file of a two-file input; give --input FILE "
                           "--tags-file FILE")
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
            raise DistillError(f"TEXT is not valid UTF-8 (character {e.start + 1}); pass UTF-8 text") from None
    m = load_model(model, decoding)
    meta = m.meta
    char_level = bool(meta.get("char_level", False))
    scheme, sep = meta.get("scheme", "BIO"), meta.get("separator", "-")
    if labelled:
        if input is None or input == "-":
            raise DistillError("--labelled needs --input FILE")
        corpus = read_corpus(input, fmt, tags_file)
        sentences, scheme, sep = corpus.tokens, corpus.scheme, corpus.separator
    else:
        lines = [text] if text is not None else _read_raw(input)
        sentences = [split_text(line, char_level) for line in lines]
        sentences = [s for s in sentences if s]
    tags = predict_tags(m, sentences, batch_size)
    if output_format == "tags":
        body = _tag_lines(_read_raw(input), tags, scheme, sep)
    else:
        blocks = [to_output(s, t, scheme, sep, output_format, char_level) for s, t in zip(sentences, tags)]
        body = ("\n" if output_format == "conll" else "\n").join(blocks)
        if blocks and output_format == "json":
            body += "\n"
    if out is not None:
        write_text(out, body)
    else:
        (stdout or sys.stdout).write(body)
    return len(sentences)
