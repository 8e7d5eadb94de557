"""Text-classification corpora and the files they are read from: :class:`TextCorpus`
(texts, their labels and file lines) and :func:`read_texts` for TSV, CSV, JSONL and plain
text (one text per line), with every error naming the file and line.

A text is one review, question or document, with one label (any number of classes).
Texts are kept whole here: how a text longer than a model's limit is cut is the model's
business (:mod:`distill.classify`). Datasets built from these files, the built-in
``sentiment`` dataset and classification transfer sets are :mod:`distill.textdata`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from distill.data import _is_unicode, _read_lines, json_lines
from distill.errors import DataError, DistillError

FORMATS = ("auto", "tsv", "csv", "jsonl", "txt")


@dataclass(frozen=True)
class TextCorpus:
    """Texts and their labels (``labels`` is None for unlabelled text, e.g. a transfer set).

    ``lines``: the file line each text starts on (None for built-in data), for error messages.
    """

    name: str  # file path, or "sentiment:train" etc.
    texts: list[str]
    labels: list[str] | None
    lines: list[int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        for what, values in (("labels", self.labels), ("lines", self.lines)):
            if values is not None and len(values) != len(self.texts):
                raise ValueError(f"{self.name}: {len(values)} {what} for {len(self.texts)} texts; "
                                 f"expected one per text")

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """16 hex characters of sha256 over the texts (and labels when present): the data's identity."""
        h = hashlib.sha256()
        for i, text in enumerate(self.texts):
            h.update(text.encode())
            h.update(b"\x1e")
            if self.labels is not None:
                h.update(self.labels[i].encode())
            h.update(b"\x1d")
        return h.hexdigest()[:16]

    def subset(self, indices: Sequence[int], name: str | None = None) -> "TextCorpus":
        return TextCorpus(
            name=name or self.name,
            texts=[self.texts[i] for i in indices],
            labels=None if self.labels is None else [self.labels[i] for i in indices],
            lines=None if self.lines is None else [self.lines[i] for i in indices],
        )

    def without_labels(self, name: str | None = None) -> "TextCorpus":
        """The same texts as unlabelled text."""
        return TextCorpus(name or self.name, list(self.texts), None, self.lines)

    def label_counts(self) -> dict[str, int]:
        """Texts per label, labels sorted ({} for unlabelled text)."""
        counts: dict[str, int] = {}
        for label in self.labels or []:
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))


def _lines(path: Path) -> list[str]:
    """The file's lines (UTF-8, BOM and CRLF handled) by :func:`distill.data._read_lines`."""
    try:
        return _read_lines(path)
    except DataError as e:
        if e.message.startswith("file is empty"):
            raise DataError(path, 1, "file is empty; expected at least one text") from None
        raise


def _format_of(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise DistillError(f"unknown text format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    by_suffix = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "txt"}
    if suffix not in by_suffix:
        raise DistillError(f"{path}: cannot tell the format from the name; expected a .tsv, .csv, .jsonl or .txt "
                           f"file, or a format ({', '.join(FORMATS[1:])})")
    return by_suffix[suffix]


def read_texts(path: str | Path, *, fmt: str = "auto", labelled: bool = True) -> TextCorpus:
    """Read a file of texts: ``.tsv`` / ``.csv`` (``text<TAB>label`` / ``text,label``),
    ``.jsonl`` (``{"text": ..., "label": ...}`` per line) or ``.txt`` (one text per line,
    unlabelled). ``fmt`` overrides the guess from the name.

    ``labelled=False`` reads the texts alone (the labels of a labelled file are ignored and
    may be missing). Texts and labels are stripped of surrounding whitespace; blank lines
    are skipped. Raises :class:`DataError` naming the file and line of the first problem.
    """
    path = Path(path)
    fmt = _format_of(path, fmt)
    if fmt == "txt":
        if labelled:
            raise DataError(path, None, "a .txt file is unlabelled text (one text per line); expected a .tsv, .csv "
                                        "or .jsonl file of labelled texts")
        found = [(line.strip(), None, n) for n, line in enumerate(_lines(path), 1) if line.strip()]
    elif fmt == "jsonl":
        found = _read_jsonl(path, labelled)
    else:
        found = _read_delimited(path, "\t" if fmt == "tsv" else ",", labelled)
    if not found:
        raise DataError(path, 1, "no texts found; expected one text per line")
    texts, labels, lines = (list(col) for col in zip(*found))
    return TextCorpus(str(path), texts, labels if labelled else None, lines)


def _header(row: list[str]) -> tuple[int, int] | None:
    """``(text column, label column)`` when ``row`` is a header: its label column (the second)
    is literally ``label``, or it names both a ``text`` and a ``label`` column. Else None."""
    cells = [c.strip() for c in row]
    if "label" not in cells or not (cells.index("label") == 1 or "text" in cells):
        return None
    return (cells.index("text") if "text" in cells else 0), cells.index("label")


def _read_delimited(path: Path, delimiter: str, labelled: bool) -> list[tuple[str, str | None, int]]:
    """``(text, label, line)`` of each row of a TSV/CSV file, read with the csv module so quoted
    fields may hold the delimiter, quotes (doubled) and line breaks."""
    shown = "<TAB>" if delimiter == "\t" else ","
    reader = csv.reader((line + "\n" for line in _lines(path)), delimiter=delimiter, strict=True)
    found, columns, width = [], (0, 1), None
    first = True
    while True:
        start = reader.line_num + 1  # a quoted field can run over several lines: report where the row starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(path, start, _csv_problem(str(e))) from None
        if not any(cell.strip() for cell in row):
            continue
        if first:
            first = False
            header = _header(row)
            if header is not None:
                columns, width = header, len(row)
                continue
        text_col, label_col = columns
        if width is not None and len(row) != width:
            raise DataError(path, start, f"{len(row)} columns, expected {width} like the header row")
        if width is None and len(row) > 2:
            raise DataError(path, start, f"{len(row)} columns, expected 2 (text{shown}label); a text holding "
                                         f"{'a tab' if delimiter == chr(9) else 'a comma'} must be quoted (\"...\")")
        if labelled and width is None and len(row) < 2:
            raise DataError(path, start, f"missing label column; expected text{shown}label")
        text = row[text_col].strip()
        if not text:
            raise DataError(path, start, f"empty text; expected text{shown}label")
        label = None
        if labelled:
            label = row[label_col].strip()
            if not label:
                raise DataError(path, start, f"empty label; expected text{shown}label")
        found.append((text, label, start))
    return found


def _csv_problem(message: str) -> str:
    if "unexpected end of data" in message:
        return 'a quoted field that starts here is never closed; expected a closing " (write "" for a quote inside it)'
    if "expected after" in message:
        return ('text after a closing quote; a field that starts with " must be quoted whole '
                '(write "" for a quote inside it)')
    return f"unreadable row ({message})"


def _read_jsonl(path: Path, labelled: bool) -> list[tuple[str, str | None, int]]:
    expected = '{"text": ..., "label": ...}' if labelled else '{"text": ...}'
    found = []
    for lineno, obj in json_lines(path, _lines(path), expected):
        if not isinstance(obj, dict):
            raise DataError(path, lineno, f"expected an object {expected}, got {type(obj).__name__}")
        text = obj.get("text")
        if not isinstance(text, str):
            raise DataError(path, lineno, f'missing "text" (a string); expected {expected}')
        label = None
        if labelled:
            label = obj.get("label")
            if label is None:
                raise DataError(path, lineno, f'missing "label"; expected {expected}')
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise DataError(path, lineno, f'"label" must be a string or an integer, '
                                              f'got {json.dumps(label)[:40]}')
            label = str(label).strip()
            if not label:
                raise DataError(path, lineno, f'empty "label"; expected {expected}')
        if not _is_unicode([text] + ([label] if label else [])):
            raise DataError(path, lineno, 'a lone surrogate escape (like "\\ud800") is not text; expected valid Unicode')
        if not text.strip():
            raise DataError(path, lineno, f'empty "text"; expected {expected}')
        found.append((text.strip(), label, lineno))
    return found
