"""Teacher emissions on disk: what students learn from without running the teacher.

A folder with ``emissions.npy`` (float16, shape (total words, K), memory-mapped on
read), ``offsets.npy`` (int64, N + 1: sentence i is rows ``offsets[i]:offsets[i+1]``),
and ``meta.json`` (labels, CRF transitions, the fingerprint of the data and label set).
Written atomically; read back only when every part agrees.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from distill.data import Corpus
from distill.errors import DistillError
from distill.features import bucket_batches, make_pieces
from distill.fileio import atomic_dir, write_json

FORMAT = "distill-emissions/1"


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
    folder = Path(folder)
    lengths = np.array([len(e) for e in per_sentence], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_dir(folder) as tmp:
        arr = np.lib.format.open_memmap(tmp / "emissions.npy", mode="w+", dtype=np.float16,
                                        shape=(int(offsets[-1]), len(labels)))
        for i, e in enumerate(per_sentence):
            arr[offsets[i] : offsets[i + 1]] = e
        arr.flush()
        del arr
        np.save(tmp / "offsets.npy", offsets)
        write_json(tmp / "meta.json", {
            "format": FORMAT, "labels": list(labels), "fingerprint": fingerprint(corpus, labels),
            "sentences": len(per_sentence), "words": int(offsets[-1]), "dataset": corpus.name,
            "transitions": transitions, **(extra or {}),
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

    def attach(self, pieces) -> None:
        """Give each training piece its slice of the teacher emissions as ``feature["teacher_emissions"]``
        (collated into ``batch["teacher_emissions"]`` by :func:`distill.modeling.collate_extras`)."""
        for p in pieces:
            p.feature["teacher_emissions"] = np.array(self[p.sentence][p.start : p.end], dtype=np.float16)

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


def emit(*, model: str | Path, dataset: dict, out: str | Path | None = None, batch_size: int = 64,
         quiet: bool = False) -> Path:
    """Run the teacher over the training split of ``dataset`` and write its emissions.

    Under ``accelerate launch`` every process runs a share of the batches and the main
    process writes the folder (the same file as one process writes).
    """
    from distill.data import load_dataset
    from distill.modeling import load_model
    from distill.progress import progress_bar
    from distill.train import process_state

    state = process_state()
    teacher = load_model(model)
    if not hasattr(teacher, "crf"):
        raise DistillError(f"{model}: emissions need a PyTorch teacher (kind {getattr(teacher, 'kind', '?')!r})")
    teacher.to(state.device)
    ds = load_dataset(**dataset)
    corpus = ds.train
    folder = Path(out or default_folder(model))
    with progress_bar(disable=quiet or not state.is_main_process) as bar:
        task = bar.add_task("emitting", total=len(corpus))
        per_sentence = compute(teacher, corpus.tokens, batch_size, rank=state.process_index, world=state.num_processes)
        bar.update(task, completed=len(corpus))
    if state.is_main_process:
        crf = teacher.crf
        transitions = None if crf is None else {
            "start": crf.start_transitions.tolist(), "end": crf.end_transitions.tolist(),
            "transitions": crf.transitions.tolist()}
        write(folder, per_sentence, teacher.labels, corpus, transitions, {"teacher": str(model)})
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
