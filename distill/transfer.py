"""Transfer sets: unlabelled text the teacher labels for the student.

Distillation pays when labelled sentences are few and raw text is plentiful: the
student learns the teacher's emissions on text nobody tagged (the transfer set of
XtremeDistil and TextBrewer). A transfer set is made of sources:

* ``PATH`` (or ``text:PATH``): a text file, one sentence per line, split the way the
  teacher's training data was (per character for character-level corpora, else on
  whitespace; :func:`distill.data.split_text`);
* ``corpus:PATH``: a labelled file in any supported format, its tags ignored;
* ``msra:unlabelled``: the built-in MSRA training sentences left out by ``--max-train``
  (:func:`distill.data.unlabelled_train`), tags dropped.

Each source's teacher emissions live in ``TEACHER/emissions-<fingerprint>`` (made when
absent) and are read from the memory map one batch at a time. A transfer sentence that
also occurs in the dev or test data (their whole files, before any ``--max-dev`` or
``--max-test`` cap) is dropped, and so is one that contains a dev or test sentence of at
least :data:`MIN_CONTAINED` tokens (outside news text quotes whole test sentences inside
longer ones), and one identical to a labelled training sentence (it is already trained
on, with its gold tags); both counts are printed and recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Container, Iterable, Sequence

import numpy as np

from distill.data import Corpus, Dataset
from distill.emissions import Emissions
from distill.errors import DistillError

BUILTIN = ("msra:unlabelled",)
# A transfer sentence that contains a held-out sentence this long (in tokens) is dropped; shorter
# ones ("他说：", "。") occur inside ordinary text by chance.
MIN_CONTAINED = 10


def sentence_key(tokens: Sequence[str]) -> str:
    """What makes two sentences the same sentence: their tokens."""
    return "\x1f".join(tokens)


def describe(spec: str | Path) -> tuple[str, str]:
    """``(kind, value)`` of a source: ``("builtin", name)``, ``("text", path)`` or ``("corpus", path)``."""
    spec = str(spec)
    if spec in BUILTIN or _capped_builtin(spec) is not None:
        return "builtin", spec
    kind, _, rest = spec.partition(":")
    if kind in ("text", "corpus") and rest:
        return kind, rest
    if kind == "msra":
        raise DistillError(f"unknown built-in transfer set {spec!r}; expected one of {', '.join(BUILTIN)} (or msra:unlabelled:N for a seeded N of them)")
    return "text", spec


def _capped_builtin(spec: str) -> tuple[str, int] | None:
    """``("msra:unlabelled", N)`` for ``msra:unlabelled:N`` (a seeded N of those sentences), else None."""
    name, _, count = spec.rpartition(":")
    if name in BUILTIN and count.isdigit() and int(count) > 0:
        return name, int(count)
    return None


def read_source(spec: str | Path, *, dataset: dict, char_level: bool, pool: Dataset | None = None) -> Corpus:
    """Every sentence of one source, unlabelled. ``dataset``: the student's
    :func:`distill.data.load_dataset` kwargs (for ``msra:unlabelled``); ``pool``: that
    dataset loaded without caps, if already at hand."""
    from distill.data import read_corpus, read_text, unlabelled_train, without_tags

    kind, value = describe(spec)
    if kind == "builtin":
        if dataset.get("train") is not None or dataset.get("name", "msra") != "msra":
            raise DistillError(f"--transfer {value} is the built-in MSRA data outside --max-train; the student "
                               f"trains on {dataset.get('train') or dataset.get('name')}: give a text file instead")
        corpus = unlabelled_train(dataset, pool)
        if not len(corpus):
            raise DistillError(f"--transfer {value}: no sentence is left out of training; "
                               f"set --max-train below the {len(pool.train) if pool else 'available'} train sentences")
        capped = _capped_builtin(value)
        if capped is not None and capped[1] < len(corpus):
            import random

            corpus = corpus.subset(sorted(random.Random(29).sample(range(len(corpus)), capped[1])), corpus.name)
        return corpus
    path = Path(value)
    if kind == "corpus":
        return without_tags(read_corpus(path))
    return read_text(path, char_level)


@dataclass
class TransferSource:
    spec: str
    corpus: Corpus  # every sentence the emissions hold, in their order
    emissions: Emissions
    keep: np.ndarray  # int64: the sentences of ``corpus`` in the transfer set


class TransferSet:
    """The kept sentences of every source, in order (``corpus``), and their teacher emissions."""

    def __init__(self, sources: Sequence[TransferSource], dropped_overlap: int, dropped_labelled: int):
        self.sources = list(sources)
        self.dropped_overlap = dropped_overlap
        self.dropped_labelled = dropped_labelled
        self.bounds = np.concatenate([[0], np.cumsum([len(s.keep) for s in self.sources])]).astype(np.int64)
        tokens = [s.corpus.tokens[i] for s in self.sources for i in s.keep.tolist()]
        first = self.sources[0].corpus
        self.corpus = Corpus(tokens, None, char_level=first.char_level, name="transfer")

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def emissions(self, j: int) -> np.ndarray:
        """Transfer sentence j's teacher emissions (n, K): a slice of the memory map, not a copy."""
        s = int(np.searchsorted(self.bounds, j, side="right")) - 1
        source = self.sources[s]
        return source.emissions[int(source.keep[j - self.bounds[s]])]

    def fingerprint(self) -> str:
        return self.corpus.fingerprint()

    def meta(self, ratio: float | None = None) -> dict:
        return {"sources": [s.spec for s in self.sources], "sentences": len(self),
                "dropped_overlap": self.dropped_overlap, "dropped_labelled": self.dropped_labelled,
                "fingerprint": self.fingerprint(), "ratio": ratio,
                "emissions": [str(s.emissions.folder) for s in self.sources]}


def drop_seen(keys: Iterable[str], held_out: Container[str], labelled: Container[str],
              contains_held_out: Callable[[str], bool] | None = None) -> tuple[list[int], int, int]:
    """The overlap rule of a transfer set, for sentences and texts alike: ``(keep, overlap,
    duplicate)``, the indices of ``keys`` found neither in ``held_out`` (dev and test) nor in
    ``labelled`` (the training data, already trained on with gold labels), and how many were
    dropped for each (a key in both counts as overlap). ``contains_held_out(key)``: also drop
    a key that holds a held-out one inside it (:class:`HeldOutSpans`), counted as overlap."""
    keep, overlap, duplicate = [], 0, 0
    for i, key in enumerate(keys):
        if key in held_out or (contains_held_out is not None and contains_held_out(key)):
            overlap += 1
        elif key in labelled:
            duplicate += 1
        else:
            keep.append(i)
    return keep, overlap, duplicate


class HeldOutSpans:
    """``spans(key)``: whether the sentence ``key`` (a :func:`sentence_key`) contains, as a run
    of whole tokens, one of ``sentences`` that has at least ``min_tokens`` tokens. The held-out
    sentences are indexed by their first ``min_tokens`` tokens, so a check costs one dictionary
    lookup per token of the key."""

    def __init__(self, sentences: Iterable[Sequence[str]], min_tokens: int = MIN_CONTAINED):
        self.min_tokens = min_tokens
        self.by_prefix: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for tokens in sentences:
            if len(tokens) >= min_tokens:
                self.by_prefix.setdefault(tuple(tokens[:min_tokens]), []).append(tuple(tokens))

    def __call__(self, key: str) -> bool:
        tokens, k = tuple(key.split("\x1f")), self.min_tokens
        for i in range(len(tokens) - k + 1):
            for held in self.by_prefix.get(tokens[i : i + k], ()):
                if tokens[i : i + len(held)] == held:
                    return True
        return False


def _keys(corpora: Sequence[Corpus]) -> set[str]:
    return {sentence_key(t) for c in corpora for t in c.tokens}


def load_transfer(specs: Sequence[str | Path], *, teacher: str | Path, dataset: dict, labelled: Corpus,
                  labels: Sequence[str], char_level: bool, quiet: bool = False) -> TransferSet:
    """Read every source, drop the sentences found in dev, test or ``labelled`` (the
    student's training sentences) or holding a dev or test sentence, and get the teacher's
    emissions of each source (made when absent, refused when made for other text or labels)."""
    from distill.data import load_dataset
    from distill.emissions import for_text

    if not specs:
        raise DistillError("a transfer set needs at least one source (--transfer FILE or msra:unlabelled)")
    pool = load_dataset(**dict(dataset, max_train=None, max_dev=None, max_test=None))
    held_out, seen = _keys([pool.dev, pool.test]), _keys([labelled])
    spans = HeldOutSpans(pool.dev.tokens + pool.test.tokens)
    read, overlap, duplicate = [], 0, 0
    for spec in specs:
        corpus = read_source(spec, dataset=dataset, char_level=char_level, pool=pool)
        keep, dropped_overlap, dropped_labelled = drop_seen(map(sentence_key, corpus.tokens), held_out, seen, spans)
        overlap, duplicate = overlap + dropped_overlap, duplicate + dropped_labelled
        read.append((str(spec), corpus, np.asarray(keep, dtype=np.int64)))
    if not sum(len(keep) for _, _, keep in read):
        raise DistillError(f"the transfer set {', '.join(map(str, specs))} has no sentence left after dropping "
                           f"{overlap} found in dev/test and {duplicate} identical to labelled training sentences")
    transfer = TransferSet([TransferSource(spec, corpus, for_text(teacher=teacher, corpus=corpus, labels=labels,
                                                                  source=spec, quiet=quiet), keep)
                            for spec, corpus, keep in read], overlap, duplicate)
    if not quiet:
        print(f"transfer set: {len(transfer)} sentences from {', '.join(map(str, specs))}; dropped {overlap} "
              f"found in dev/test and {duplicate} identical to labelled training sentences")
    return transfer


class TeacherEmissions:
    """The teacher emissions of every training sentence, read when a batch needs them:
    sentence i < ``len(labelled)`` is labelled, sentence ``len(labelled) + j`` is transfer
    sentence j (the numbering :func:`distill.train.train` gives the pieces)."""

    def __init__(self, labelled: Emissions, transfer: TransferSet | None = None):
        self.labelled = labelled
        self.transfer = transfer

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self.labelled)
        return self.labelled[i] if i < n else self.transfer.emissions(i - n)

    def collate(self, model) -> Callable:
        """``collate(pieces) -> batch``: ``model.collate`` of the pieces' features, each with
        its slice of the teacher emissions (``batch["teacher_emissions"]``), copied per batch."""
        def collate(pieces):
            return model.collate([dict(p.feature, teacher_emissions=np.array(self[p.sentence][p.start : p.end],
                                                                             dtype=np.float16)) for p in pieces])
        return collate


# ---------------------------------------------------------------------------
# Which transfer sentences each epoch sees


def per_epoch(ratio: float | None, labelled_sentences: int, transfer_sentences: int) -> int:
    """Transfer sentences per epoch: ``ratio`` per labelled sentence, or the whole set (None)."""
    if ratio is None:
        return transfer_sentences
    if not ratio > 0:
        raise DistillError(f"--transfer-ratio must be > 0 (transfer sentences per labelled sentence), got {ratio}")
    return max(1, round(ratio * labelled_sentences))


class EpochMixer:
    """The pieces of each epoch: every labelled piece (``0 .. labelled_pieces - 1``), then the
    pieces of the epoch's transfer sentences.

    Epoch e takes items ``e * per_epoch`` to ``(e + 1) * per_epoch - 1`` of an endless
    stream of passes over the transfer set, pass c shuffled with seed ``(seed, c)``: every
    transfer sentence is used once before any is used twice, and any epoch's share is
    known from its number alone (what resuming needs). ``pieces_per_sentence`` (N,): how
    many consecutive pieces, after the labelled ones, each transfer sentence has.
    """

    def __init__(self, labelled_pieces: int, pieces_per_sentence: np.ndarray, per_epoch: int, seed: int):
        self.labelled_pieces = labelled_pieces
        self.counts = np.asarray(pieces_per_sentence, dtype=np.int64)
        self.first = labelled_pieces + np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.per_epoch = per_epoch
        self.seed = seed

    def sentences(self, epoch: int) -> np.ndarray:
        """The transfer sentences (indices into the transfer set) of ``epoch``."""
        n = len(self.counts)
        start, stop = epoch * self.per_epoch, (epoch + 1) * self.per_epoch
        parts = []
        for c in range(start // n, (stop - 1) // n + 1):
            order = np.random.default_rng((self.seed, c)).permutation(n)
            parts.append(order[max(start - c * n, 0) : min(stop - c * n, n)])
        return np.concatenate(parts)

    def items(self, epoch: int) -> list[int]:
        """Piece indices of ``epoch``: the labelled pieces, then the transfer pieces."""
        chosen = self.sentences(epoch)
        counts = self.counts[chosen]
        # each chosen sentence's pieces: first, first + 1, ..., first + count - 1
        ids = np.repeat(self.first[chosen] - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        return list(range(self.labelled_pieces)) + ids.tolist()

    def size(self, epoch: int) -> int:
        return self.labelled_pieces + int(self.counts[self.sentences(epoch)].sum())


def data_identity(labelled_fingerprint: str, transfer: Corpus, ratio: float | None) -> str:
    """What a checkpoint trained with a transfer set was trained on: resuming needs the same."""
    text = f"{labelled_fingerprint}|transfer {transfer.fingerprint()}|ratio {ratio}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
