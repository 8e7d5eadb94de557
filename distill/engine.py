"""The training engine: the optimizer steps of every training run in distill.

Taggers and text classifiers (:func:`distill.train.train`, which adds dev scoring, early
stopping and the best model folder at each epoch's end) and the MLM adaptation of a
backbone (:mod:`teachers.adapt`) all train through :class:`Engine`. A caller supplies its
batches (lists of item indices per epoch), how items become a model batch, and its loss;
the engine does the rest the same way for all of them:

* AdamW over parameter groups with their own learning rates (:func:`adamw`), linear
  warmup and decay per group (:func:`linear_schedule`), gradient clipping;
* data parallelism under ``accelerate launch``: every process builds the same global
  batches and process ``r`` of ``P`` takes items ``r, r + P, ...`` of each, its loss
  weighted by its share of the batch's units (words, sub-tokens), so the optimizer steps
  are those of one process; on one process there is no collective call;
* the stop flag (Ctrl-C, SIGTERM: checkpoint, then a one-line error saying how to
  resume), checkpoints every ``checkpoint_every`` steps and every ``checkpoint_minutes``,
  ``resume`` (:mod:`distill.checkpoint`), a stop at ``max_steps``, a NaN/inf check;
* the progress bar, or a plain line a minute when there is no terminal; the run's
  JSON-lines log (one record per epoch from the caller, or one per step).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import torch

from distill import checkpoint
from distill.errors import DistillError
from distill.processes import agree, to_device
from distill.progress import progress_bar

MakeBatch = Callable[[Sequence[int], int], dict]  # (item indices, global step) -> batch
StepLoss = Callable[[Any, dict], "tuple[torch.Tensor, dict[str, float]]"]  # (prepared model, batch) -> (loss, parts)


def adamw(named: Iterable[tuple[str, torch.nn.Parameter]], lrs: dict[str, float], weight_decay: float,
          no_decay: Collection[str] = ()) -> torch.optim.AdamW:
    """AdamW over ``(group name, parameter)`` pairs, each group at its learning rate ``lrs[name]``.

    Parameters that do not require a gradient are left out; a parameter given twice (tied
    weights) should be given once. Biases, LayerNorm weights (every 1-D parameter) and the
    groups in ``no_decay`` get no weight decay. One AdamW group per (name, decay), in order
    of first appearance, each carrying its ``name`` for :func:`linear_schedule`.
    """
    groups: dict[str, dict] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        decay = 0.0 if (p.ndim < 2 or name in no_decay) else weight_decay
        groups.setdefault(f"{name}/{decay}", {"params": [], "lr": lrs[name], "weight_decay": decay, "name": name})[
            "params"].append(p)
    return torch.optim.AdamW(list(groups.values()))


def linear_schedule(optimizer, total: int, warmup: float, starts: dict[str, int] | None = None):
    """Per parameter group: learning rate 0 before its start step (``starts[name]``, default
    0), then linear warmup over the ``warmup`` share of its steps, then linear decay to 0 at
    step ``total``."""
    def factor_from(start: int) -> Callable[[int], float]:
        warm = int(warmup * max(0, total - start))

        def factor(step: int) -> float:
            if step < start:
                return 0.0
            s = step - start
            if s < warm:
                return (s + 1) / max(1, warm)
            return max(0.0, (total - step) / max(1, total - start - warm))
        return factor

    starts = starts or {}
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [factor_from(starts.get(g["name"], 0)) for g in optimizer.param_groups])


class Engine:
    """The steps of one training run of ``model`` into the output folder ``out``.

    ``make_batch(indices, step)`` builds the (CPU) batch of items ``indices`` at global step
    ``step``; ``loss(net, batch) -> (loss, parts)`` gives the batch's mean loss and named
    numbers to log, running the prepared model ``net`` (the model itself on one process,
    its DistributedDataParallel wrapper on several: the forward must go through it for the
    gradients to be averaged).
    ``units[i]``: how many words (or sub-tokens) item ``i`` has: what the loss is a mean
    over, for the per-process weighting and the progress line. ``identity``: what makes the
    run, stored in every checkpoint for the caller's resume check. ``log_by`` ``"epoch"``:
    the caller logs a record per epoch (:meth:`log`); ``"step"``: the engine logs
    ``{"step", "loss"}`` after every step.

    ``state`` is the loop's position (``epoch``, ``step_in_epoch``, ``global_step``) and
    counters; a caller may add its own keys, which the checkpoint keeps. A run::

        engine.start(resume, check)
        with engine.running(quiet):
            while <epochs left> and not engine.at_max_steps():
                sums = engine.run_epoch(batches, label)  # then the caller's end of the epoch
        engine.finish()
    """

    def __init__(self, model, optimizer, scheduler, *, acc, out: Path, log: str, make_batch: MakeBatch,
                 loss: StepLoss, units: Sequence[int], unit: str = "words", clip: float = 0.0,
                 checkpoint_every: int = 0, checkpoint_minutes: float = 0.0, max_steps: int | None = None,
                 identity: dict | None = None, log_by: str = "epoch"):
        assert log_by in ("epoch", "step"), log_by
        self.model, self.acc, self.scheduler = model, acc, scheduler
        # the scheduler steps once per global step: not prepared
        self.net, self.optimizer = acc.prepare(model, optimizer)
        self.out, self.work = out, checkpoint.work_folder(out)
        self.checkpoint_path, self.log_path = self.work / checkpoint.CHECKPOINT, self.work / log
        self.make_batch, self.loss, self.units, self.unit = make_batch, loss, units, unit
        self.clip, self.checkpoint_every, self.checkpoint_minutes = clip, checkpoint_every, checkpoint_minutes
        self.max_steps, self.identity, self.log_by = max_steps, dict(identity or {}), log_by
        self.main, self.processes, self.rank = acc.is_main_process, acc.num_processes, acc.process_index
        self.state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "train_seconds": 0.0,
                                      "train_cpu_seconds": 0.0, "tokens_seen": 0, "epoch_sums": {}}
        self.bar = self.flag = None
        self.quiet = False
        self.epoch_started = 0.0
        self._clock_from: tuple[float, float] | None = None  # (wall, CPU) time the running interval began
        self._last_checkpoint = self._last_line = time.time()

    # --- start, resume, finish ------------------------------------------------
    def start(self, resume: bool, check: Callable[[dict], str | None]) -> None:
        """Begin the run: fresh (an old log is removed) or, with ``resume``, from the
        checkpoint, which ``check(checkpoint)`` may refuse with a reason (another run's)."""
        if self.main:
            if not resume:
                self.work.mkdir(parents=True, exist_ok=True)
            checkpoint.remove_stale(self.work, self.out)
        if not resume:
            if self.main:
                self.log_path.unlink(missing_ok=True)
            return
        ckpt = checkpoint.read_for_resume(self.checkpoint_path, self.acc, check)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise DistillError(f"{self.checkpoint_path}: does not fit this model ({str(e).splitlines()[0][:120]}); "
                               f"start over without --resume") from None
        self.scheduler.load_state_dict(ckpt["scheduler"])
        checkpoint.set_rng_state(ckpt["rng"][min(self.rank, len(ckpt["rng"]) - 1)])
        self.state.update(ckpt["state"])
        if self.main:  # drop records the checkpoint does not cover
            last = self.state["epoch"] if self.log_by == "epoch" else self.state["global_step"]
            checkpoint.trim_log(self.log_path, self.log_by, last)

    def done(self) -> bool:
        """Whether the run has finished (a resumed finished run has nothing left to do)."""
        return bool(self.state.get("done"))

    def at_max_steps(self) -> bool:
        return bool(self.max_steps) and self.state["global_step"] >= self.max_steps

    def finish(self) -> None:
        """Mark the run finished in its last checkpoint."""
        self.state["done"] = True
        self.save_checkpoint()

    @contextlib.contextmanager
    def running(self, quiet: bool = False) -> Iterator["Engine"]:
        """The stop flag and the progress bar, while epochs run."""
        with checkpoint.StopFlag() as self.flag, progress_bar(disable=quiet or not self.main) as self.bar:
            self.quiet = quiet
            yield self

    # --- files ------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write the checkpoint (every process must call this)."""
        self._clock()
        checkpoint.save(self.checkpoint_path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                        state=self.state, acc=self.acc, extra=self.identity)
        self._last_checkpoint = time.time()

    def log(self, record: dict) -> None:
        """Append a record to the run's log (from the main process)."""
        if self.main:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # --- the loop -----------------------------------------------------------------
    def run_epoch(self, batches: Sequence[Sequence[int]], label: str) -> dict[str, float]:
        """Train on ``batches`` (global batches of item indices) from ``state["step_in_epoch"]``
        to their end or ``max_steps``; then the epoch is over (``state["epoch"]`` + 1).
        Returns the epoch's summed loss parts and ``n``, its number of steps."""
        state = self.state
        self.model.train()
        sums = state["epoch_sums"]
        task = self.bar.add_task(label, total=len(batches), completed=state["step_in_epoch"])
        self.epoch_started = time.time()
        self._clock_from = (self.epoch_started, time.process_time())
        for b in range(state["step_in_epoch"], len(batches)):
            self._stop_or_checkpoint()
            loss, parts, units = self._step(batches[b])
            for k, v in {"loss": loss, **parts, "n": 1}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            state["global_step"] += 1
            state["step_in_epoch"] = b + 1
            state["tokens_seen"] += units
            if self.log_by == "step":
                self.log({"step": state["global_step"], "loss": round(loss, 6)})
            self.bar.update(task, advance=1, description=f"{label} loss {sums['loss'] / sums['n']:.4f}")
            self._progress_line(label, len(batches))
            if self.at_max_steps():
                break  # the caller's last checkpoint follows
            if self.checkpoint_every and state["global_step"] % self.checkpoint_every == 0:
                self.save_checkpoint()
        self.bar.remove_task(task)
        self._clock()
        self._clock_from = None
        state.update(epoch=state["epoch"] + 1, step_in_epoch=0, epoch_sums={})
        return sums

    def _step(self, everyone: Sequence[int]) -> tuple[float, dict[str, float], int]:
        """One optimizer step on a global batch; returns its loss, loss parts and units."""
        state, P = self.state, self.processes
        mine = everyone[self.rank::P]
        batch = to_device(self.make_batch(mine or everyone[:1], state["global_step"]), self.acc.device)
        loss, parts = self.loss(self.net, batch)
        units = sum(self.units[i] for i in everyone)
        share = sum(self.units[i] for i in mine) / units if P > 1 else 1.0  # of the batch's units
        if P > 1:  # DDP averages the gradients over P
            loss = loss * (P * share)
        keys = sorted(parts)
        total, *values = agree(self.acc, loss.item(), *(float(parts[k]) * share for k in keys))
        if not math.isfinite(total):
            raise DistillError(
                f"loss is {total} at epoch {state['epoch'] + 1}, step {state['step_in_epoch'] + 1} "
                f"(global step {state['global_step'] + 1}); stopping. "
                f"Try a lower learning rate or check the input data")
        self.optimizer.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        if self.clip:
            self.acc.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        return total / P, dict(zip(keys, values)), units

    def _stop_or_checkpoint(self) -> None:
        """Before a step: stop on Ctrl-C (checkpoint, then say how to resume), or write the
        checkpoint ``checkpoint_minutes`` asks for; every process agrees on both."""
        due = self.main and bool(self.checkpoint_minutes) and \
            time.time() - self._last_checkpoint > self.checkpoint_minutes * 60
        stop, due = agree(self.acc, float(bool(self.flag.stop)), float(due))
        if stop:
            self.save_checkpoint()
            raise DistillError(
                f"interrupted ({self.flag.stop or 'by another process'}) at epoch {self.state['epoch'] + 1}, "
                f"step {self.state['step_in_epoch']}; checkpoint saved to {self.checkpoint_path}; "
                f"run the same command with --resume to continue")
        if due:
            self.save_checkpoint()

    def _progress_line(self, label: str, n_batches: int) -> None:
        """Without a live bar (output is a file or a pipe): a plain line a minute."""
        if not self.main or self.quiet or not self.bar.disable or time.time() - self._last_line <= 60:
            return
        self._last_line = time.time()
        self._clock()
        s, sums = self.state, self.state["epoch_sums"]
        rate = s["tokens_seen"] / max(1e-9, s["train_seconds"])
        print(f"{label} step {s['step_in_epoch']}/{n_batches} loss {sums['loss'] / sums['n']:.4f} "
              f"({rate:,.0f} {self.unit}/s)", flush=True)

    def _clock(self) -> None:
        """Add the time since the running interval began to the state's training time."""
        if self._clock_from is None:
            return
        wall, cpu = time.time(), time.process_time()
        self.state["train_seconds"] += wall - self._clock_from[0]
        self.state["train_cpu_seconds"] += cpu - self._clock_from[1]
        self._clock_from = (wall, cpu)
