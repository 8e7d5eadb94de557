"""One training loop for every tagger: teachers, students, distilled or not.

Length-bucketed batches, separate learning rates per parameter group, linear warmup
and decay, gradient clipping, early stopping on dev F1, a JSONL log, progress bars,
and resumable checkpoints written atomically. The loss is pluggable (distillation
passes its own), so the loop never branches on architecture.

The loop runs under Hugging Face Accelerate: ``accelerate launch -m distill ...``
trains with data parallelism on several GPUs, nodes, or CPU processes (gloo). Every
process builds the same global batches; process ``r`` of ``P`` takes items
``r, r + P, ...`` of each, so the global batch stays ``batch_size`` and the
optimizer steps are the same as on one process. Only the main process evaluates,
logs and writes files. On one process nothing changes: no collective calls, same
numbers.

A checkpoint (model, optimizer, scheduler, every process's RNG states, the loop's
position) is written at the end of every epoch, every ``checkpoint_every`` steps and
every ``checkpoint_minutes``, and on Ctrl-C/SIGTERM; ``resume=True`` continues from
it bit-identically on CPU (same batch order, dropout masks and data).

A transfer set (unlabelled sentences the teacher labels) is mixed into the epochs: an
epoch is one pass over the labelled sentences plus the next ``transfer_ratio`` x
(labelled sentences) transfer sentences of an endless stream of shuffled passes over
the transfer set (by default the whole set once per epoch), bucketed and shuffled
together; each batch says which of its sentences are labelled (``batch["gold"]``).

Other tasks use the same loop through two hooks: ``featurize`` builds the training items
of a corpus (text classification: one item per text, :mod:`distill.classify`) and
``score_dev`` scores the model on dev; everything else (batching, mixing, checkpoints,
early stopping, the log) is shared.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from distill.checkpoint import CHECKPOINT, StopFlag, plain, read_for_resume, remove_stale, save, set_rng_state, trim_log
from distill.checkpoint import load as load_checkpoint  # noqa: F401  (callers read a run's checkpoint here)
from distill.data import Corpus
from distill.errors import DistillError
from distill.evaluate import evaluate
from distill.features import CACHE_MIN_SENTENCES, Piece, bucket_batches, make_pieces, padding_waste
from distill.fileio import atomic_path, write_json
from distill.processes import accelerator, agree, broadcast, to_device, use_fast_matmul
from distill.progress import progress_bar

LOG = "train_log.jsonl"
SUMMARY = "summary.json"


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32  # global: split across processes under `accelerate launch`
    lr: float = 1e-4  # encoder
    embedding_lr: float | None = None  # defaults to lr
    head_lr: float = 1e-3
    crf_lr: float = 1e-2
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of all steps
    clip: float = 1.0
    patience: int = 2  # epochs without dev improvement before stopping
    seed: int = 13
    checkpoint_minutes: float = 10.0  # also checkpoint mid-epoch this often (0: off)
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: off)
    max_steps: int | None = None  # stop after this many steps (quick runs, tests)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "head_lr", "crf_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.embedding_lr is not None and not self.embedding_lr > 0:
            raise ValueError(f"embedding_lr must be > 0, got {self.embedding_lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        for name in ("clip", "weight_decay", "checkpoint_minutes", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None), got {self.max_steps}")


LossFn = Callable[[Any, Any, dict], "tuple[torch.Tensor, dict[str, float]]"]


def default_loss(model, out, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """The gold-tag loss (``model.loss``) over the batch's labelled sentences (:func:`distill.kd.gold_nll`)."""
    from distill.kd import gold_nll

    loss = gold_nll(model, out, batch)
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


# ---------------------------------------------------------------------------
# Resume


def _other_run(ckpt: dict, cfg: TrainConfig, identity: dict) -> str | None:
    """Why a checkpoint cannot be resumed by this run (None: it can). Settings that only
    change how long or how fast it trains (epochs, learning rates, max_steps) may change."""
    saved = ckpt.get("config", {})
    changed = [f"{k} {saved[k]} -> {getattr(cfg, k)}" for k in ("batch_size", "seed")
               if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        return f"made with other settings ({'; '.join(changed)}); resume with the same ones"
    if any(ckpt.get(k, identity[k]) != identity[k] for k in ("labels", "data")):
        return "made for other training data or labels; start over without --resume"
    return None


# ---------------------------------------------------------------------------
# The loop


def train(
    model,
    train_corpus: Corpus,
    dev_corpus: Corpus,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn = default_loss,
    extra_features: Callable[[Sequence[Piece]], None] | None = None,
    collate: Callable[[Sequence[Piece]], dict] | None = None,
    transfer: Corpus | None = None,
    transfer_ratio: float | None = None,
    resume: bool = False,
    extra_meta: dict | None = None,
    quiet: bool = False,
    featurize: Callable[[Any], list[Piece]] | None = None,
    score_dev: Callable[[Any], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Train ``model`` and save the best epoch (by dev F1) as a model folder at ``out_dir``.

    ``loss_fn(model, output, batch) -> (loss, parts)`` gives the training loss, a mean
    over the batch's real words (``output.mask``): under several processes each
    computes it on its share of the batch, weighted by that share's words, so the
    averaged gradients are those of the whole batch. It gets the plain (unwrapped)
    model and must not run the model's forward again. ``extra_features(pieces)`` may
    add per-piece fields (e.g. teacher emissions) that the model's ``collate`` passes
    through; ``collate(pieces) -> batch`` replaces ``model.collate`` of their features
    (e.g. to read teacher emissions per batch). Checkpoints and the log live in
    ``out_dir.work/``. Returns a JSON-clean summary (also written to
    ``out_dir.work/summary.json``).

    ``transfer``: unlabelled sentences (tags None) mixed into every epoch, ``transfer_ratio``
    per labelled sentence (None: all of them; see :class:`distill.transfer.EpochMixer`).
    Their pieces are numbered after the labelled ones: piece ``sentence``
    ``len(train_corpus) + j`` is transfer sentence j. Batches then carry ``batch["gold"]``
    (B,) bool, true at labelled sentences, so the loss gives transfer sentences no
    gold-tag term. Under several processes each process normalises its gold-tag loss by
    its own share's labelled words, so with a transfer set the equality with one process
    holds for the KD term but only approximately for the gold-tag term.

    For a task other than tagging: ``featurize(corpus) -> pieces`` replaces the tagger's
    featurizing of ``train_corpus`` and ``transfer`` (item ``sentence`` i of the corpus, with
    ``n_words`` its length for batching, and its gold label in ``feature`` when the corpus
    has one; the transfer corpus's unlabelled-ness is then its caller's to check), and
    ``score_dev(model) -> metrics`` replaces :func:`distill.evaluate.evaluate` on
    ``dev_corpus``: it must give ``f1`` (early stopping), ``precision`` and ``recall``, and
    every number it gives is logged as ``dev_<name>``. ``train_corpus`` and ``transfer``
    then need only ``len()``, ``name`` and ``fingerprint()``. A loss that is a mean over
    items rather than words makes the several-process equality approximate.
    """
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".work")  # checkpoints and logs while training
    ckpt_path, log_path = work / CHECKPOINT, work / LOG
    acc = accelerator()
    use_fast_matmul(acc.device)
    main, P, rank = acc.is_main_process, acc.num_processes, acc.process_index

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    t0 = time.time()
    if featurize is None:
        label_index = {l: i for i, l in enumerate(model.labels)}
        tag_ids = [[label_index[t] for t in tags] for tags in train_corpus.tags]
        pieces = make_pieces(model, train_corpus.tokens, tag_ids)
    else:
        pieces = featurize(train_corpus)
    if not pieces:
        raise DistillError(f"training data {train_corpus.name!r} has no non-empty sentence")
    mixer, trained_on = None, train_corpus.fingerprint()
    if transfer is not None:
        from distill.transfer import EpochMixer, data_identity, per_epoch

        mixer = EpochMixer(len(pieces), _add_transfer(model, pieces, transfer, len(train_corpus), featurize),
                           per_epoch(transfer_ratio, len(train_corpus), len(transfer)), cfg.seed)
        trained_on = data_identity(trained_on, transfer, transfer_ratio)
    if extra_features is not None:
        extra_features(pieces)
    featurize_s = time.time() - t0
    lengths = [p.n_words for p in pieces]
    if mixer is None:
        total_steps = math.ceil(len(pieces) / cfg.batch_size) * cfg.epochs
    else:
        total_steps = sum(math.ceil(mixer.size(e) / cfg.batch_size) for e in range(cfg.epochs))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    identity = {"config": asdict(cfg), "data": trained_on, "labels": list(model.labels), "processes": P}
    if collate is None:
        def collate(chosen: Sequence[Piece]) -> dict:
            return model.collate([p.feature for p in chosen])

    optimizer = make_optimizer(model, cfg)
    scheduler = linear_schedule(optimizer, int(cfg.warmup * total_steps), total_steps)
    ddp_model, optimizer = acc.prepare(model, optimizer)  # the scheduler steps once per global step: not prepared
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_f1": -1.0, "best_epoch": -1,
             "bad_epochs": 0, "train_seconds": 0.0, "tokens_seen": 0, "epoch_sums": {}}
    if main:
        work.mkdir(parents=True, exist_ok=True)
        remove_stale(work, out_dir)
    if resume:
        ckpt = read_for_resume(ckpt_path, acc, lambda found: _other_run(found, cfg, identity))
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise DistillError(f"{ckpt_path}: does not fit this model ({str(e).splitlines()[0][:120]}); "
                               f"start over without --resume") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"][min(rank, len(ckpt["rng"]) - 1)])
        state = dict(state, **ckpt["state"])
        if state.get("done"):
            return _finish(state, out_dir, work, main)
        if main:  # drop records of epochs the checkpoint does not cover
            trim_log(log_path, "epoch", state["epoch"])
    elif main and log_path.exists():
        log_path.unlink()

    def checkpoint() -> None:
        save(ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler, state=state, acc=acc, extra=identity)

    last_ckpt = time.time()
    last_line = time.time()
    with StopFlag() as flag, progress_bar(disable=quiet or not main) as bar:
        while state["epoch"] < cfg.epochs and not (cfg.max_steps and state["global_step"] >= cfg.max_steps):
            epoch = state["epoch"]
            batches = _epoch_batches(lengths, mixer, epoch, cfg)
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches), completed=state["step_in_epoch"])
            model.train()
            sums = state["epoch_sums"]
            epoch_t0 = time.time()
            for b in range(state["step_in_epoch"], len(batches)):
                due = main and bool(cfg.checkpoint_minutes) and time.time() - last_ckpt > cfg.checkpoint_minutes * 60
                stop, due = agree(acc, float(bool(flag.stop)), float(due))
                if stop:
                    state["train_seconds"] += time.time() - epoch_t0
                    checkpoint()
                    raise DistillError(
                        f"interrupted ({flag.stop or 'by another process'}) at epoch {epoch + 1}, step {b}; "
                        f"checkpoint saved to {ckpt_path}; run the same command with --resume to continue")
                if due:
                    checkpoint()
                    last_ckpt = time.time()
                everyone = batches[b]
                mine = everyone[rank::P]
                n_words = sum(lengths[i] for i in everyone)
                chosen = [pieces[i] for i in (mine or everyone[:1])]
                batch = collate(chosen)
                if mixer is not None:
                    batch["gold"] = torch.tensor([p.sentence < len(train_corpus) for p in chosen])
                batch = to_device(batch, acc.device)
                out = ddp_model(batch)
                loss, parts = loss_fn(model, out, batch)
                share = sum(lengths[i] for i in mine) / n_words if P > 1 else 1.0  # of the batch's words
                if P > 1:  # DDP averages the gradients over P
                    loss = loss * (P * share)
                keys = sorted(parts)
                total_loss, *part_values = agree(acc, loss.item(), *(float(parts[k]) * share for k in keys))
                if not math.isfinite(total_loss):
                    raise DistillError(
                        f"loss is {total_loss} at epoch {epoch + 1}, step {b + 1} (global step {state['global_step'] + 1}); "
                        f"stopping. Try a lower learning rate or check the input data")
                optimizer.zero_grad(set_to_none=True)
                acc.backward(loss)
                if cfg.clip:
                    acc.clip_grad_norm_(model.parameters(), cfg.clip)
                optimizer.step()
                scheduler.step()
                for k, v in {"loss": total_loss / P, **dict(zip(keys, part_values)), "n": 1}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                state["global_step"] += 1
                state["step_in_epoch"] = b + 1
                state["tokens_seen"] += n_words
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs} loss {sums['loss'] / sums['n']:.4f}")
                if main and not quiet and bar.disable and time.time() - last_line > 60:
                    # no live bar (output is a file or a pipe): a plain line a minute instead
                    last_line = time.time()
                    rate = state["tokens_seen"] / max(1e-9, state["train_seconds"] + last_line - epoch_t0)
                    print(f"epoch {epoch + 1}/{cfg.epochs} step {b + 1}/{len(batches)} "
                          f"loss {sums['loss'] / sums['n']:.4f} ({rate:,.0f} words/s)", flush=True)
                if cfg.checkpoint_every and state["global_step"] % cfg.checkpoint_every == 0:
                    checkpoint()
                    last_ckpt = time.time()
                if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                    break
            bar.remove_task(task)
            state["train_seconds"] += time.time() - epoch_t0
            model.eval()
            dev = plain(evaluate(model, dev_corpus) if score_dev is None else score_dev(model)) if main else None
            dev = broadcast(acc, dev)
            n = max(1.0, sums.get("n", 0.0))
            scores = ({"dev_f1": dev["f1"], "dev_precision": dev["precision"], "dev_recall": dev["recall"]}
                      if score_dev is None else
                      {f"dev_{k}": v for k, v in dev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            record = {"epoch": epoch + 1, "step": state["global_step"], "loss": sums.get("loss", 0.0) / n,
                      **{k: v / n for k, v in sums.items() if k not in ("loss", "n")},
                      **scores, "seconds": round(time.time() - epoch_t0, 1)}
            if main:
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                if not quiet:
                    bar.console.print(f"epoch {epoch + 1}: loss {record['loss']:.4f}  dev F1 {dev['f1']:.4f}")
            state.update(epoch=epoch + 1, step_in_epoch=0, epoch_sums={})
            if dev["f1"] > state["best_f1"]:
                state.update(best_f1=dev["f1"], best_epoch=epoch + 1, bad_epochs=0)
                if main:
                    model.save(out_dir, _final_meta(extra_meta, cfg, state, train_corpus, featurize_s, lengths, P,
                                                    mixer))
                    _copy_log(log_path, out_dir)
            else:
                state["bad_epochs"] += 1
            checkpoint()
            last_ckpt = time.time()
            if state["bad_epochs"] >= cfg.patience:
                break
    state["done"] = True
    checkpoint()
    if main and (out_dir / "distill.json").exists():  # the best model folder carries the full log
        _copy_log(log_path, out_dir)
    return _finish(state, out_dir, work, main)


def _add_transfer(model, pieces: list[Piece], transfer: Corpus, first_sentence: int, featurize=None) -> np.ndarray:
    """Append the transfer sentences' pieces to ``pieces``, numbered from ``first_sentence``;
    return how many pieces each transfer sentence has (N,)."""
    if featurize is None and transfer.tags is not None:
        raise DistillError(f"transfer data {transfer.name!r} must be unlabelled text (tags None)")
    if not len(transfer):
        raise DistillError(f"transfer data {transfer.name!r} has no sentence")
    if featurize is not None:
        found = featurize(transfer)
    else:
        found = make_pieces(model, transfer.tokens, cache=len(transfer) >= CACHE_MIN_SENTENCES)
    counts = np.bincount([p.sentence for p in found], minlength=len(transfer))
    if not counts.all():
        raise DistillError(f"transfer data {transfer.name!r}: sentence {int(np.argmin(counts))} is empty")
    pieces += [Piece(first_sentence + p.sentence, p.start, p.end, p.feature) for p in found]
    return counts


def _epoch_batches(lengths: Sequence[int], mixer, epoch: int, cfg: TrainConfig) -> list[list[int]]:
    """The epoch's batches of piece indices: every piece, or the mixer's choice with a transfer set."""
    seed = cfg.seed * 1000 + epoch
    if mixer is None:
        return bucket_batches(lengths, cfg.batch_size, seed=seed)
    items = mixer.items(epoch)
    return [[items[j] for j in b] for b in bucket_batches([lengths[i] for i in items], cfg.batch_size, seed=seed)]


def _copy_log(log_path: Path, out_dir: Path) -> None:
    with atomic_path(out_dir / LOG) as tmp:
        tmp.write_bytes(log_path.read_bytes())


def _finish(state: dict, out_dir: Path, work: Path, main: bool) -> dict[str, Any]:
    summary = plain({k: v for k, v in state.items() if k != "epoch_sums"})
    summary.update(model=str(out_dir), checkpoint=str(work / CHECKPOINT))
    if main:
        write_json(work / SUMMARY, summary)
    return summary


def _final_meta(extra_meta, cfg, state, corpus, featurize_s, lengths, processes, mixer=None) -> dict:
    if mixer is not None:  # padding as in the first epoch's mix
        lengths = [lengths[i] for i in mixer.items(0)]
    batches = bucket_batches(lengths, cfg.batch_size, seed=cfg.seed)
    meta = dict(extra_meta or {})
    meta["training"] = plain({
        "config": asdict(cfg), "best_epoch": state["best_epoch"], "best_dev_f1": state["best_f1"],
        "train_sentences": len(corpus), "transfer_sentences": 0 if mixer is None else len(mixer.counts),
        "transfer_sentences_per_epoch": 0 if mixer is None else mixer.per_epoch,
        "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_second": round(state["tokens_seen"] / max(state["train_seconds"], 1e-9), 1),
        "featurize_seconds": round(featurize_s, 2), "padding_waste": round(padding_waste(lengths, batches), 4),
        "processes": processes,
    })
    return meta
