"""Training a tagger or a text classifier: teachers, students, distilled or not.

Setup (featurizing the training data, a transfer set mixed in, the optimizer over the
model's parameter groups), then per epoch the engine's :meth:`~distill.engine.Engine.run_epoch`
and :func:`end_epoch`: the dev score, the epoch's log record, the best model folder so far,
the checkpoint, early stopping. Batches are bucketed by what the model pads
(:func:`distill.features.piece_length`: sub-tokens for a BERT model, words for the BiLSTM),
so a BERT batch's sentences have similar sub-token counts. The loss is pluggable
(distillation passes its own), so nothing here branches on architecture. The optimizer
steps, multi-process training, checkpoints, Ctrl-C and resume are
:class:`distill.engine.Engine`'s; a resumed run continues bit-identically on CPU (same
batch order, dropout masks and data).

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

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from distill.checkpoint import CHECKPOINT, plain, work_folder
from distill.checkpoint import load as load_checkpoint  # noqa: F401  (callers read a run's checkpoint here)
from distill.data import Corpus
from distill.config import ConfigError
from distill.engine import Engine, adamw, linear_schedule
from distill.errors import DistillError
from distill.evaluate import evaluate
from distill.features import CACHE_MIN_SENTENCES, Piece, bucket_batches, make_pieces, padding_waste, piece_length
from distill.fileio import atomic_path, write_json
from distill.processes import accelerator, broadcast, use_fast_matmul

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
                raise ConfigError(name, ">= 1", getattr(self, name))
        for name in ("lr", "head_lr", "crf_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, "> 0", getattr(self, name))
        if self.embedding_lr is not None and not self.embedding_lr > 0:
            raise ConfigError("embedding_lr", "> 0", self.embedding_lr)
        if not 0 <= self.warmup < 1:
            raise ConfigError("warmup", "in [0, 1)", self.warmup)
        for name in ("clip", "weight_decay", "checkpoint_minutes", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(name, ">= 0", getattr(self, name))
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps", ">= 1 (or None)", self.max_steps)


LossFn = Callable[[Any, Any, dict], "tuple[torch.Tensor, dict[str, float]]"]


def default_loss(model, out, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """The gold-tag loss (``model.loss``) over the batch's labelled sentences (:func:`distill.kd.gold_nll`)."""
    from distill.kd import gold_nll

    loss = gold_nll(model, out, batch)
    return loss, {"nll": loss.item()}


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the model's parameter groups (``model.param_group_of``) at ``cfg``'s learning rates."""
    lrs = {"embeddings": cfg.embedding_lr or cfg.lr, "encoder": cfg.lr, "head": cfg.head_lr, "crf": cfg.crf_lr}
    return adamw(((model.param_group_of(n), p) for n, p in model.named_parameters()), lrs, cfg.weight_decay,
                 no_decay=("crf",))


def train(
    model,
    train_corpus: Corpus,
    dev_corpus: Corpus,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn = default_loss,
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
    model and must not run the model's forward again. ``collate(pieces) -> batch`` replaces ``model.collate`` of their features
    (e.g. to read teacher emissions per batch). The steps are :class:`distill.engine.Engine`'s;
    checkpoints and the log live in ``out_dir.work/``. Returns a JSON-clean summary (also
    written to ``out_dir.work/summary.json``).

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
    ``n_words`` its length for the loss's weighting, its gold label in ``feature`` when the
    corpus has one, and the ``input_ids`` whose length batches are bucketed by; the transfer
    corpus's unlabelled-ness is then its caller's to check), and
    ``score_dev(model) -> metrics`` replaces :func:`distill.evaluate.evaluate` on
    ``dev_corpus``: it must give ``f1`` (early stopping), ``precision`` and ``recall``, and
    every number it gives is logged as ``dev_<name>``. ``train_corpus`` and ``transfer``
    then need only ``len()``, ``name`` and ``fingerprint()``. A loss that is a mean over
    items rather than words makes the several-process equality approximate.
    """
    out_dir = Path(out_dir)
    acc = accelerator()
    use_fast_matmul(acc.device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    t0 = time.time()
    pieces, mixer, trained_on = _training_items(model, train_corpus, cfg, transfer, transfer_ratio, featurize)
    featurize_s = time.time() - t0
    words = [p.n_words for p in pieces]  # what the loss is a mean over
    padded = [piece_length(p) for p in pieces]  # what a batch pads (BERT: sub-tokens): batches are bucketed by it
    if collate is None:
        def collate(chosen: Sequence[Piece]) -> dict:
            return model.collate([p.feature for p in chosen])

    def make_batch(indices: Sequence[int], step: int) -> dict:
        chosen = [pieces[i] for i in indices]
        batch = collate(chosen)
        if mixer is not None:
            batch["gold"] = torch.tensor([p.sentence < len(train_corpus) for p in chosen])
        return batch

    def step_loss(net, batch: dict):
        return loss_fn(model, net(batch), batch)

    total_steps = _total_steps(len(pieces), mixer, cfg)
    optimizer = make_optimizer(model, cfg)
    identity = {"config": asdict(cfg), "data": trained_on, "labels": list(model.labels), "processes": acc.num_processes}
    engine = Engine(model, optimizer, linear_schedule(optimizer, total_steps, cfg.warmup), acc=acc, out=out_dir,
                    log=LOG, make_batch=make_batch, loss=step_loss, units=words, clip=cfg.clip,
                    checkpoint_every=cfg.checkpoint_every, checkpoint_minutes=cfg.checkpoint_minutes,
                    max_steps=cfg.max_steps, identity=identity)
    state = engine.state
    state.update(best_f1=-1.0, best_epoch=-1, bad_epochs=0)
    engine.start(resume, lambda ckpt: _other_run(ckpt, cfg, identity))
    if engine.done():
        return _finish(state, out_dir, engine.main)

    def score(m) -> dict[str, float]:
        if score_dev is not None:
            return score_dev(m)
        metrics = evaluate(m, dev_corpus)
        return {k: metrics[k] for k in ("f1", "precision", "recall")}

    def save_best() -> None:
        model.save(out_dir, _final_meta(extra_meta, cfg, state, train_corpus, featurize_s, padded, acc.num_processes,
                                        mixer))
        _copy_log(engine.log_path, out_dir)

    with engine.running(quiet):
        while state["epoch"] < cfg.epochs and not engine.at_max_steps():
            epoch = state["epoch"]
            sums = engine.run_epoch(_epoch_batches(padded, mixer, epoch, cfg), f"epoch {epoch + 1}/{cfg.epochs}")
            if end_epoch(engine, sums, score, save_best, cfg.patience):
                break
    engine.finish()
    if engine.main and (out_dir / "distill.json").exists():  # the best model folder carries the full log
        _copy_log(engine.log_path, out_dir)
    return _finish(state, out_dir, engine.main)


def end_epoch(engine: Engine, sums: dict[str, float], score: Callable[[Any], dict[str, float]],
              save_best: Callable[[], None], patience: int) -> bool:
    """After an epoch's steps: score the model on dev (``score(model)``: ``f1`` and other
    numbers, each logged as ``dev_<name>``), log the epoch, save the model when its dev F1
    is the best so far (``save_best``, on the main process), checkpoint. Returns whether to
    stop early: ``patience`` epochs without a better dev F1."""
    state, model = engine.state, engine.model
    model.eval()
    dev = broadcast(engine.acc, plain(score(model)) if engine.main else None)
    n = max(1.0, sums.get("n", 0.0))
    record = {"epoch": state["epoch"], "step": state["global_step"], "loss": sums.get("loss", 0.0) / n,
              **{k: v / n for k, v in sums.items() if k not in ("loss", "n")},
              **{f"dev_{k}": v for k, v in dev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
              "seconds": round(time.time() - engine.epoch_started, 1)}
    engine.log(record)
    if engine.main and not engine.quiet:
        engine.bar.console.print(f"epoch {state['epoch']}: loss {record['loss']:.4f}  dev F1 {dev['f1']:.4f}")
    if dev["f1"] > state["best_f1"]:
        state.update(best_f1=dev["f1"], best_epoch=state["epoch"], bad_epochs=0)
        if engine.main:
            save_best()
    else:
        state["bad_epochs"] += 1
    engine.save_checkpoint()
    return state["bad_epochs"] >= patience


def _training_items(model, corpus: Corpus, cfg: TrainConfig, transfer: Corpus | None, transfer_ratio: float | None,
                    featurize=None) -> tuple[list[Piece], Any, str]:
    """The pieces to train on (labelled, then transfer), the transfer mixer (None without a
    transfer set) and the identity of the data (what a resumed run must train on)."""
    if featurize is None:
        label_index = {l: i for i, l in enumerate(model.labels)}
        tag_ids = [[label_index[t] for t in tags] for tags in corpus.tags]
        pieces = make_pieces(model, corpus.tokens, tag_ids)
    else:
        pieces = featurize(corpus)
    if not pieces:
        raise DistillError(f"training data {corpus.name!r} has no non-empty sentence")
    if transfer is None:
        return pieces, None, corpus.fingerprint()
    from distill.transfer import EpochMixer, data_identity, per_epoch

    mixer = EpochMixer(len(pieces), _add_transfer(model, pieces, transfer, len(corpus), featurize),
                       per_epoch(transfer_ratio, len(corpus), len(transfer)), cfg.seed)
    return pieces, mixer, data_identity(corpus.fingerprint(), transfer, transfer_ratio)


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


def _total_steps(n_pieces: int, mixer, cfg: TrainConfig) -> int:
    if mixer is None:
        total = math.ceil(n_pieces / cfg.batch_size) * cfg.epochs
    else:
        total = sum(math.ceil(mixer.size(e) / cfg.batch_size) for e in range(cfg.epochs))
    return min(total, cfg.max_steps) if cfg.max_steps else total


def _epoch_batches(lengths: Sequence[int], mixer, epoch: int, cfg: TrainConfig) -> list[list[int]]:
    """The epoch's batches of piece indices: every piece, or the mixer's choice with a transfer set."""
    seed = cfg.seed * 1000 + epoch
    if mixer is None:
        return bucket_batches(lengths, cfg.batch_size, seed=seed)
    items = mixer.items(epoch)
    return [[items[j] for j in b] for b in bucket_batches([lengths[i] for i in items], cfg.batch_size, seed=seed)]


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


def _copy_log(log_path: Path, out_dir: Path) -> None:
    with atomic_path(out_dir / LOG) as tmp:
        tmp.write_bytes(log_path.read_bytes())


def _finish(state: dict, out_dir: Path, main: bool) -> dict[str, Any]:
    work = work_folder(out_dir)
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
