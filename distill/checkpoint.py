"""Resumable training runs: the stop flag, checkpoints written atomically, the checks a
resumed run makes, and the log it trims.

A run writes its checkpoints and its log to ``OUT.work/`` (:func:`work_folder`) while it
trains. A checkpoint holds the model, optimizer and scheduler states, every process's
random generators and the loop's position (``state``), plus what the caller says makes
the run (its settings and data, checked on ``--resume``). It is loaded with
``weights_only=True``, so everything in it is tensors and plain types (:func:`plain`).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from distill.errors import DistillError
from distill.fileio import atomic_path
from distill.processes import broadcast, gather

CHECKPOINT = "checkpoint.pt"
FORMAT = "distill-checkpoint/1"
PARTS = ("model", "optimizer", "scheduler", "rng", "state")  # what every checkpoint holds


def work_folder(out: Path) -> Path:
    """Where a run writing the output ``out`` keeps its checkpoint and log: ``OUT.work/``."""
    return out.with_name(out.name + ".work")


class StopFlag:
    """Turns the first Ctrl-C (or SIGTERM, as a job scheduler sends) into a request to
    stop at the next batch (``stop`` names the signal); a second Ctrl-C stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.stop: str | None = None
        self._old: dict = {}

    def __enter__(self):
        def handler(signum, frame):
            if self.stop:
                raise KeyboardInterrupt
            self.stop = signal.Signals(signum).name
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def rng_state() -> dict:
    """This process's random generators (Python, NumPy, torch, CUDA), as plain types."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (CUDA only on as many GPUs as it had)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, *, model, optimizer, scheduler, state: dict, acc=None, extra: dict | None = None) -> None:
    """Write the checkpoint atomically from the main process. Under several processes
    every one must call this: their RNG states are gathered into it."""
    rngs = gather(acc, rng_state())
    if acc is None or acc.is_main_process:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": rngs, "state": plain(state), **(extra or {})}, tmp)
    if acc is not None:
        acc.wait_for_everyone()


def load(path: Path) -> dict:
    """Read a checkpoint; a truncated, foreign or unreadable file is refused in one line."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: zip, pickle or unpickling errors
        raise DistillError(f"{path}: corrupt checkpoint ({type(e).__name__}); delete it to start over") from None
    missing = [k for k in PARTS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DistillError(f"{path}: not a distill checkpoint (missing {', '.join(missing)}); delete it to start over")
    return ckpt


def read_for_resume(path: Path, acc, check: Callable[[dict], str | None]) -> dict:
    """The checkpoint to resume from, on every process (the main one reads it).

    Refused in one line naming ``path`` when it is missing or unreadable, or when
    ``check(checkpoint)`` gives a reason (the checkpoint was made by another run).
    """
    found: Any = None
    if acc.is_main_process:
        try:
            if not path.exists():
                raise DistillError(f"{path}: no checkpoint to resume from; run without --resume to start")
            found = load(path)
            reason = check(found)
            if reason:
                raise DistillError(f"{path}: {reason}")
        except DistillError as e:
            found = e
    found = broadcast(acc, found)
    if isinstance(found, DistillError):
        raise found
    return found


def trim_log(path: Path, key: str, last: int) -> None:
    """Keep the JSON-lines log's records whose ``key`` is at most ``last`` (those the
    checkpoint covers); a line cut short by a killed run goes too."""
    if not path.exists():
        return

    def covered(line: str) -> bool:
        try:
            return int(json.loads(line)[key]) <= last
        except (ValueError, KeyError, TypeError):
            return False
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if covered(line)]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def remove_stale(work: Path, out: Path) -> None:
    """Temporary files left by a killed run (atomic writes never renamed): in ``work`` and
    the half-written copies of the output folder ``out`` beside it."""
    for p in list(work.glob(".*.tmp")) + list(out.parent.glob(f".{out.name}.*.tmp")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def plain(obj):
    """JSON-clean copy: numpy scalars (seqeval returns them) become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
