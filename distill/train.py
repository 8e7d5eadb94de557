"""One training loop for every tagger: teachers, students, distilled or not.

Length-bucketed batches, separate learning rates per parameter group, linear warmup
and decay, gradient clipping, early stopping on dev F1, a JSONL log, progress bars,
and resumable checkpoints written atomically. The loss is pluggable (distillation
passes its own), so the loop never branches on architecture.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from distill.data import Corpus
from distill.errors import DistillError
from distill.evaluate import evaluate
from distill.features import Piece, bucket_batches, make_pieces, padding_waste
from distill.fileio import atomic_path
from distill.progress import progress_bar

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4  # encoder
    embedding_lr: float | None = None  # defaults to lr
    head_lr: float = 1e-3
    crf_lr: float = 1e-2
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of all steps
    clip: float = 1.0
    patience: int = 2  # epochs without dev improvement before stopping
    seed: int = 13
    checkpoint_minutes: float = 10.0  # also checkpoint mid-epoch this often
    max_steps: int | None = None  # stop after this many steps (quick runs, tests)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "head_lr", "crf_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")


LossFn = Callable[[Any, Any, dict], "tuple[torch.Tensor, dict[str, float]]"]


def default_loss(model, out, batch) -> tuple[torch.Tensor, dict[str, float]]:
    loss = model.loss(out, batch["tags"])
    return loss, {"nll": loss.item()}


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    lrs = {"embeddings": cfg.embedding_lr or cfg.lr, "encoder": cfg.lr, "head": cfg.head_lr, "crf": cfg.crf_lr}
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        g = model.param_group_of(name)
        decay = 0.0 if (p.ndim < 2 or g == "crf") else cfg.weight_decay
        key = f"{g}/{decay}"
        groups.setdefault(key, {"params": [], "lr": lrs[g], "weight_decay": decay, "name": g})["params"].append(p)
    return torch.optim.AdamW(list(groups.values()))


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next batch."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        def handler(signum, frame):
            if self.stop:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self.stop = True
        try:
            self._old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not in the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": _rng_state(), "state": state}, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise DistillError(f"{path}: corrupt checkpoint ({type(e).__name__}); delete it to start over") from None


def train(
    model,
    train_corpus: Corpus,
    dev_corpus: Corpus,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn = default_loss,
    extra_features: Callable[[Sequence[Piece]], None] | None = None,
    resume: bool = False,
    extra_meta: dict | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train ``model`` and save the best epoch (by dev F1) as a model folder at ``out_dir``.

    ``loss_fn(model, output, batch) -> (loss, parts)`` gives the training loss;
    ``extra_features(pieces)`` may add per-piece fields (e.g. teacher emissions)
    that the model's ``collate`` passes through. Returns a summary dict.
    """
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".work")  # checkpoints and logs while training
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = work / CHECKPOINT, work / LOG

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    label_index = {l: i for i, l in enumerate(model.labels)}
    t0 = time.time()
    tag_ids = [[label_index[t] for t in tags] for tags in train_corpus.tags]
    pieces = make_pieces(model, train_corpus.tokens, tag_ids)
    if extra_features is not None:
        extra_features(pieces)
    featurize_s = time.time() - t0
    lengths = [p.n_words for p in pieces]
    steps_per_epoch = math.ceil(len(pieces) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    optimizer = make_optimizer(model, cfg)
    scheduler = linear_schedule(optimizer, int(cfg.warmup * total_steps), total_steps)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_f1": -1.0, "best_epoch": -1,
             "bad_epochs": 0, "train_seconds": 0.0, "tokens_seen": 0}
    if resume:
        if not ckpt_path.exists():
            raise DistillError(f"{ckpt_path}: no checkpoint to resume from")
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        if state.get("done"):
            return state
    elif log_path.exists():
        log_path.unlink()

    def log(record: dict) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    summary = dict(state)
    last_ckpt = time.time()
    with _StopFlag() as flag, progress_bar(disable=quiet) as bar:
        while state["epoch"] < cfg.epochs and not (cfg.max_steps and state["global_step"] >= cfg.max_steps):
            epoch = state["epoch"]
            batches = bucket_batches(lengths, cfg.batch_size, seed=cfg.seed * 1000 + epoch)
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches), completed=state["step_in_epoch"])
            model.train()
            losses: list[float] = []
            epoch_t0 = time.time()
            for b in range(state["step_in_epoch"], len(batches)):
                if flag.stop:
                    state["train_seconds"] += time.time() - epoch_t0
                    save_checkpoint(ckpt_path, model, optimizer, scheduler, state)
                    raise DistillError(
                        f"interrupted at epoch {epoch + 1}, step {b}; checkpoint saved to {ckpt_path}; "
                        f"run the same command with --resume to continue")
                batch_pieces = [pieces[i] for i in batches[b]]
                batch = model.collate([p.feature for p in batch_pieces])
                out = model(batch)
                loss, parts = loss_fn(model, out, batch)
                if not torch.isfinite(loss):
                    raise DistillError(
                        f"loss is {loss.item()} at epoch {epoch + 1}, step {b + 1} (global step {state['global_step'] + 1}); "
                        f"stopping. Try a lower learning rate or check the input data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                state["global_step"] += 1
                state["step_in_epoch"] = b + 1
                state["tokens_seen"] += int(out.mask.sum())
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs} loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
                if cfg.checkpoint_minutes and time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
                    save_checkpoint(ckpt_path, model, optimizer, scheduler, state)
                    last_ckpt = time.time()
                if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                    break
            bar.remove_task(task)
            state["train_seconds"] += time.time() - epoch_t0
            model.eval()
            dev = evaluate(model, dev_corpus)
            record = {"epoch": epoch + 1, "step": state["global_step"], "loss": sum(losses) / max(1, len(losses)),
                      "dev_f1": dev["f1"], "dev_precision": dev["precision"], "dev_recall": dev["recall"],
                      "seconds": round(time.time() - epoch_t0, 1)}
            log(record)
            if not quiet:
                bar.console.print(f"epoch {epoch + 1}: loss {record['loss']:.4f}  dev F1 {dev['f1']:.4f}")
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            if dev["f1"] > state["best_f1"]:
                state.update(best_f1=dev["f1"], best_epoch=epoch + 1, bad_epochs=0)
                model.save(out_dir, _final_meta(extra_meta, cfg, state, train_corpus, featurize_s, lengths))
                (out_dir / LOG).write_bytes(log_path.read_bytes())
            else:
                state["bad_epochs"] += 1
            save_checkpoint(ckpt_path, model, optimizer, scheduler, state)
            last_ckpt = time.time()
            if state["bad_epochs"] >= cfg.patience:
                break
    state["done"] = True
    save_checkpoint(ckpt_path, model, optimizer, scheduler, state)
    # the best model folder carries the full log
    if (out_dir / "distill.json").exists():
        with atomic_path(out_dir / LOG) as tmp:
            tmp.write_bytes(log_path.read_bytes())
    summary.update(state)
    return summary


def _final_meta(extra_meta, cfg, state, corpus, featurize_s, lengths) -> dict:
    batches = bucket_batches(lengths, cfg.batch_size, seed=cfg.seed)
    meta = dict(extra_meta or {})
    meta["training"] = {
        "config": asdict(cfg), "best_epoch": state["best_epoch"], "best_dev_f1": state["best_f1"],
        "train_sentences": len(corpus), "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_second": round(state["tokens_seen"] / max(state["train_seconds"], 1e-9), 1),
        "featurize_seconds": round(featurize_s, 2), "padding_waste": round(padding_waste(lengths, batches), 4),
    }
    return meta
