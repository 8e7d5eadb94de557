"""Teacher emissions on disk: what students learn from without running the teacher.

A folder with ``emissions.npy`` (float16, shape (total words, K), memory-mapped on
read), ``offsets.npy`` (int64, N + 1: sentence i is rows ``offsets[i]:offsets[i+1]``),
and ``meta.json`` (labels, CRF transitions, the fingerprint of the data and label set,
and whether the sentences were unlabelled text). Written atomically; read back only
when every part agrees.

The labelled training split goes to ``TEACHER/emissions-train`` (:func:`emit`);
unlabelled text (a transfer set) to ``TEACHER/emissions-<fingerprint>``
(:func:`emit_text`), computed and written a chunk of sentences at a time, so a large
text never has all its emissions in memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from distill.data import Corpus
from distill.errors import DistillError
from distill.features import bucket_batches, make_pieces
from distill.fileio import atomic_dir, write_json

FORMAT = "distill-emissions/1"
TEXT_CHUNK = 4096  # sentences of unlabelled text computed and written at a time


def fingerprint(corpus: Corpus, labels: Sequence[str]) -> str:
    """Identifies the sentences and the label set emissions were made for."""
    return hashlib.sha256((corpus.fingerprint() + "|" + "|".join(labels)).encode()).hexdigest()[:16]


@torch.inference_mode()
def compute(model, sentences: Sequence[Sequence[str]], batch_size: int = 64, progress=None,
            rank: int = 0, world: int = 1) -> list[np.ndarray] | None:
    """Word-level emissions (n_words, K) float32 per sentence (long sentences in pieces, joined).

    With ``world`` processes, process ``rank`` runs every ``world``-th batch (the same
    batches as one process would, so the numbers are the same) and the main process
    (rank 0) gets every sentence; the others get None.
    """
    K = len(model.labels)
    pieces = make_pieces(model, sentences)
    device = next(model.parameters(), torch.empty(0)).device
    rows: dict[int, np.ndarray] = {}
    for n, idx in enumerate(bucket_batches([p.n_words for p in pieces], batch_size)):
        if n % world != rank:
            continue
        batch = model.collate([pieces[i].feature for i in idx])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        emissions = model(batch).emissions.float().cpu().numpy()  # shape: (B, W, K)
        for row, i in enumerate(idx):
            rows[i] = emissions[row, : pieces[i].n_words]
        if progress is not None:
            progress(len(idx))
    if world > 1:
        from accelerate.utils import gather_object

        shares = gather_object([rows])
        if rank != 0:
            return None
        rows = {i: e for share in shares for i, e in share.items()}
    out = [np.zeros((len(s), K), dtype=np.float32) for s in sentences]
    for i, p in enumerate(pieces):
        out[p.sentence][p.start : p.end] = rows[i]
    return out


def write(folder: str | Path, per_sentence: Sequence[np.ndarray], labels: Sequence[str], corpus: Corpus,
          transitions: dict | None = None, extra: dict | None = None) -> Path:
    """Write the (n_words, K) emissions of every sentence of ``corpus`` as an emissions folder."""
    return _write(folder, [len(e) for e in per_sentence], [per_sentence], labels, corpus, transitions, extra)


def _write(folder: str | Path, lengths: Sequence[int], chunks: Iterable[Sequence[np.ndarray]], labels: Sequence[str],
           corpus: Corpus, transitions: dict | None, extra: dict | None) -> Path:
    """Write sentences' emissions arriving in ``chunks`` (consecutive runs of sentences) into
    one memory-mapped array, so only a chunk is in memory at a time."""
    folder = Path(folder)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)
    with atomic_dir(folder) as tmp:
        arr = np.lib.format.open_memmap(tmp / "emissions.npy", mode="w+", dtype=np.float16,
                                        shape=(int(offsets[-1]), len(labels)))
        i = 0
        for chunk in chunks:
            for e in chunk:
                arr[offsets[i] : offsets[i + 1]] = e
                i += 1
        assert i == len(lengths), (i, len(lengths))
        arr.flush()
        del arr
        np.save(tmp / "offsets.npy", offsets)
        write_json(tmp / "meta.json", {
            "format": FORMAT, "labels": list(labels), "fingerprint": fingerprint(corpus, labels),
            "sentences": len(lengths), "words": int(offsets[-1]), "dataset": corpus.name,
            "unlabelled": corpus.tags is None, "transitions": transitions, **(extra or {}),
        })
    return folder


class Emissions:
    """Read-only, memory-mapped teacher emissions; ``emissions[i]`` is sentence i's (n, K) array."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise DistillError(f"{self.folder}: not an emissions folder (meta.json missing); run `distill teacher emit`")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.offsets = np.load(self.folder / "offsets.npy")
            self.data = np.load(self.folder / "emissions.npy", mmap_mode="r")
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise DistillError(f"{self.folder}: corrupt emissions ({str(e).splitlines()[0]}); delete it and emit again") from None
        if self.meta.get("format") != FORMAT:
            raise DistillError(f"{meta_path}: unknown format {self.meta.get('format')!r}, expected {FORMAT!r}")
        n, words, K = self.meta["sentences"], self.meta["words"], len(self.meta["labels"])
        if len(self.offsets) != n + 1 or int(self.offsets[-1]) != words or self.data.shape != (words, K):
            raise DistillError(
                f"{self.folder}: index does not match data ({len(self.offsets) - 1} offsets for {n} sentences, "
                f"data {tuple(self.data.shape)} for {words} words x {K} labels); delete it and emit again")

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def check(self, corpus: Corpus, labels: Sequence[str]) -> None:
        """Refuse emissions made for other sentences or another label set."""
        if list(labels) != self.labels:
            raise DistillError(f"{self.folder}: emissions are for labels {self.labels}, the student uses {list(labels)}")
        want = fingerprint(corpus, labels)
        if self.meta["fingerprint"] != want:
            raise DistillError(
                f"{self.folder}: emissions were made for dataset {self.meta.get('dataset')!r} "
                f"(fingerprint {self.meta['fingerprint']}), not for this training data (fingerprint {want}); "
                f"emit them again for this data")


def default_folder(model: str | Path) -> Path:
    return Path(model) / "emissions-train"


def text_folder(model: str | Path, corpus: Corpus, labels: Sequence[str]) -> Path:
    """Where the emissions of unlabelled text live: ``MODEL/emissions-<fingerprint>``."""
    return Path(model) / f"emissions-{fingerprint(corpus, labels)}"


def _load_teacher(model: str | Path):
    from distill.modeling import load_model

    teacher = load_model(model)
    if not hasattr(teacher, "crf"):
        raise DistillError(f"{model}: emissions need a PyTorch teacher (kind {getattr(teacher, 'kind', '?')!r})")
    return teacher


def _transitions(teacher) -> dict | None:
    crf = teacher.crf
    return None if crf is None else {
        "start": crf.start_transitions.tolist(), "end": crf.end_transitions.tolist(),
        "transitions": crf.transitions.tolist()}


def emit(*, model: str | Path, dataset: dict, out: str | Path | None = None, batch_size: int = 64,
         quiet: bool = False) -> Path:
    """Run the teacher over the training split of ``dataset`` and write its emissions.

    Under ``accelerate launch`` every process runs a share of the batches and the main
    process writes the folder (the same file as one process writes).
    """
    from distill.data import load_dataset
    from distill.progress import progress_bar
    from distill.processes import process_state

    state = process_state()
    teacher = _load_teacher(model)
    teacher.to(state.device)
    ds = load_dataset(**dataset)
    corpus = ds.train
    folder = Path(out or default_folder(model))
    with progress_bar(disable=quiet or not state.is_main_process) as bar:
        task = bar.add_task("emitting", total=len(corpus))
        per_sentence = compute(teacher, corpus.tokens, batch_size, rank=state.process_index, world=state.num_processes)
        bar.update(task, completed=len(corpus))
    if state.is_main_process:
        write(folder, per_sentence, teacher.labels, corpus, _transitions(teacher), {"teacher": str(model)})
    state.wait_for_everyone()
    return folder


def emit_text(*, model: str | Path, corpus: Corpus, out: str | Path | None = None, batch_size: int = 64,
              source: str = "", quiet: bool = False) -> Path:
    """Run the teacher over unlabelled text (``corpus``, tags ignored) and write its emissions to
    ``out`` (default :func:`text_folder`), :data:`TEXT_CHUNK` sentences at a time.

    The folder records that it holds unlabelled text, where it came from (``source``) and
    the fingerprint of its sentences; under ``accelerate launch`` as :func:`emit`.
    """
    from distill.data import without_tags
    from distill.progress import progress_bar
    from distill.processes import process_state

    state = process_state()
    teacher = _load_teacher(model)
    teacher.to(state.device)
    corpus = without_tags(corpus)
    folder = Path(out) if out is not None else text_folder(model, corpus, teacher.labels)
    main = state.is_main_process
    with progress_bar(disable=quiet or not main) as bar:
        task = bar.add_task("emitting", total=len(corpus))

        def chunks():
            for c in range(0, len(corpus), TEXT_CHUNK):
                part = corpus.tokens[c : c + TEXT_CHUNK]
                rows = compute(teacher, part, batch_size, rank=state.process_index, world=state.num_processes)
                bar.update(task, advance=len(part))
                yield rows

        extra = {"teacher": str(model), "source": source or corpus.name, "char_level": corpus.char_level}
        if main:
            _write(folder, [len(s) for s in corpus.tokens], chunks(), teacher.labels, corpus, _transitions(teacher), extra)
        else:
            for _ in chunks():  # the other processes compute their share of every chunk
                pass
    state.wait_for_everyone()
    return folder


def for_training(*, teacher: str | Path, dataset: dict, corpus: Corpus, labels: Sequence[str],
                 folder: str | Path | None = None, quiet: bool = False) -> Emissions:
    """The teacher's emissions for ``corpus`` (default folder ``TEACHER/emissions-train``),
    written first when the folder does not exist, and refused when made for other data or labels."""
    folder = Path(folder) if folder is not None else default_folder(teacher)
    if not folder.exists():
        if not quiet:
            print(f"no teacher emissions at {folder}; computing them now")
        emit(model=teacher, dataset=dataset, out=folder, quiet=quiet)
    em = Emissions(folder)
    em.check(corpus, labels)
    return em


def for_text(*, teacher: str | Path, corpus: Corpus, labels: Sequence[str], source: str = "",
             quiet: bool = False) -> Emissions:
    """The teacher's emissions for unlabelled text (``TEACHER/emissions-<fingerprint>``), made
    first when absent, and refused when made for other text or labels."""
    from distill.data import without_tags

    corpus = without_tags(corpus)
    folder = text_folder(teacher, corpus, labels)
    if not folder.exists():
        if not quiet:
            print(f"no teacher emissions for {source or corpus.name} ({len(corpus)} sentences); "
                  f"computing them now into {folder}")
        emit_text(model=teacher, corpus=corpus, out=folder, source=source, quiet=quiet)
    em = Emissions(folder)
    em.check(corpus, labels)
    return em
