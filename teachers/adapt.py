"""Language-adaptive pretraining of a backbone: continued masked-language-model (MLM)
training on in-domain text after the vocabulary extension, so the new token embeddings
learn from text and not only from NER labels ("Don't Stop Pretraining", Gururangan et
al. 2020).

Whole-word masking, the text and the batches: :mod:`teachers.mlm_data`. The loss is
cross-entropy at the masked positions only. The decoder of the MLM head is tied to the
input embeddings, so every step gives every new row a gradient.

The output folder is a backbone that ``distill teacher train --backbone`` accepts: the
base encoder (``config.json`` + ``model.safetensors``), the extended tokenizer, the MLM
head's own weights (``mlm_head.safetensors``, for a later round of adaptation), the
loss log and ``adapt.json`` (what was done).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from distill import checkpoint
from distill.config import ConfigError
from distill.data import load_dataset
from distill.engine import Engine, adamw, linear_schedule
from distill.errors import DistillError
from distill.features import bucket_batches, make_pieces
from distill.fileio import atomic_dir, stamp, write_json
from distill.processes import accelerator, use_fast_matmul
from teachers.backbones import resolve_backbone
from teachers.backbone_load import _offline_kwargs, load_tokenizer
from teachers.mlm_data import IGNORE, _Featurizer, collate, read_text
from teachers.vocab_extend import extend_vocabulary, unk_rate

ADAPT_FILE = "adapt.json"
HEAD_FILE = "mlm_head.safetensors"
LOG = "adapt_log.jsonl"
CHECKPOINT = checkpoint.CHECKPOINT  # in OUT.work/, with the log
OLD_FORMAT = "distill-adapt/1"  # checkpoints of the loop adapt had before the engine: refused on --resume


@dataclass
class AdaptConfig:
    """Hyperparameters of an adaptation run (``steps`` wins over ``epochs``; neither: 1 epoch)."""

    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    max_length: int = 128  # sub-tokens per sequence, [CLS] and [SEP] included
    lr: float = 1e-4  # encoder layers, position/type embeddings, embedding LayerNorm
    embedding_lr: float = 2e-3  # the word embedding matrix (= the tied MLM decoder)
    head_lr: float = 1e-3  # the MLM head's transform and output bias
    embeddings_only_steps: int = 0  # train only word embeddings + head for these first steps
    mask_prob: float = 0.15
    warmup: float = 0.06  # share of each group's steps for linear warmup, then linear decay
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 13
    checkpoint_every: int = 200  # steps

    def __post_init__(self):
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(f"give steps or epochs, not both (got steps={self.steps}, epochs={self.epochs})")
        if self.steps is not None and self.steps < 1:
            raise ConfigError("steps", ">= 1", self.steps)
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError("epochs", "> 0", self.epochs)
        for name in ("batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, ">= 1", getattr(self, name))
        if self.max_length < 3:
            raise ConfigError("max_length", ">= 3 ([CLS], a token, [SEP])", self.max_length)
        for name in ("lr", "embedding_lr", "head_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, "> 0", getattr(self, name))
        if self.embeddings_only_steps < 0:
            raise ConfigError("embeddings_only_steps", ">= 0", self.embeddings_only_steps)
        if not 0 < self.mask_prob < 1:
            raise ConfigError("mask_prob", "in (0, 1)", self.mask_prob)
        if not 0 <= self.warmup < 1:
            raise ConfigError("warmup", "in [0, 1)", self.warmup)



# ---------------------------------------------------------------------------
# Model and parameter groups


def load_mlm(source: str):
    """The MLM model and fast tokenizer of a backbone (folder or hub id).

    A backbone without an MLM head (all-MiniLM-L6-v2 is a sentence encoder) gets a newly
    initialised one; a folder written by :func:`adapt_backbone` brings its trained head.
    Returns ``(model, tokenizer, head)`` where ``head`` says where the head came from.
    """
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True, **_offline_kwargs(source))
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load backbone {source!r} as a masked language model: {str(e).splitlines()[0]}") from None
    tokenizer = load_tokenizer(source)
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(model.base_model_prefix + "."))
    head: dict[str, Any] = {"source": "backbone checkpoint" if not missing else "newly initialised", "missing": missing}
    head_file = Path(source) / HEAD_FILE
    if head_file.exists():
        from safetensors.torch import load_file

        result = model.load_state_dict(load_file(str(head_file)), strict=False)
        if result.unexpected_keys:
            raise DistillError(f"{head_file}: unexpected keys {result.unexpected_keys[:3]}; not an MLM head of this model")
        head = {"source": str(head_file), "missing": []}
    if tokenizer.mask_token_id is None:
        raise DistillError(f"{source!r}: the tokenizer has no mask token; cannot train a masked language model")
    return model, tokenizer, head


def tie_decoder(model) -> bool:
    """Make the MLM decoder share the input embedding matrix; True when it had to be tied here."""
    emb, dec = model.get_input_embeddings(), model.get_output_embeddings()
    if dec is None:
        raise DistillError(f"{type(model).__name__} has no output embeddings to tie")
    if dec.weight is emb.weight:
        return False
    dec.weight = emb.weight
    return True


def group_params(model) -> list[tuple[str, Any]]:
    """Each parameter (tied ones once) with its learning-rate group: embeddings (the word
    embedding matrix, shared with the MLM decoder), encoder (the rest of the base model:
    layers, position/type embeddings, LayerNorm) or head (the MLM head's own weights)."""
    emb = model.get_input_embeddings().weight
    base = {id(p) for p in model.base_model.parameters()}
    return [("embeddings" if p is emb else "encoder" if id(p) in base else "head", p) for p in model.parameters()]


def set_embeddings_only(groups: list[tuple[str, Any]], on: bool) -> None:
    """Freeze (``on``) or unfreeze everything but the word embeddings and the MLM head
    (``groups`` from :func:`group_params`). Frozen parameters get no gradient, so AdamW
    leaves them exactly as they are (no weight decay either)."""
    for g, p in groups:
        if g == "encoder":
            p.requires_grad = not on



def mlm_loss(model, batch: dict):
    """Mean cross-entropy over the masked positions (labels != -100).

    For BERT the head runs only at those positions: with a ~35k vocabulary the decoder
    would otherwise cost as much as the encoder."""
    labels = batch["labels"]  # shape: (B, S)
    if not hasattr(model, "cls"):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    chosen = labels != IGNORE
    logits = model.cls(hidden[chosen])  # shape: (N, V)
    return F.cross_entropy(logits.float(), labels[chosen])


# ---------------------------------------------------------------------------
# The run


def adapt_backbone(*, out: Path, backbone: str | None = None, text: Path | None = None, dataset: dict | None = None,
                   steps: int | None = None, epochs: float | None = None, batch_size: int = 32, max_length: int = 128,
                   lr: float = 1e-4, embedding_lr: float = 2e-3, head_lr: float = 1e-3, embeddings_only_steps: int = 0,
                   mask_prob: float = 0.15, warmup: float = 0.06, seed: int = 13, extend_vocab: bool = True,
                   min_count: int = 2, char_level: bool | None = None, checkpoint_every: int = 200,
                   resume: bool = False, quiet: bool = False, config: AdaptConfig | None = None) -> dict:
    """Continue MLM pretraining of ``backbone`` on ``text`` (a file) or the train text of
    ``dataset`` (kwargs of :func:`distill.data.load_dataset`; default the built-in MSRA
    train split, without its dev part), after extending the vocabulary with its [UNK]
    words. Writes the adapted backbone folder ``out``; checkpoints and the loss log live in
    ``out.work/``. ``config`` replaces the hyperparameter arguments. Returns the summary
    written to ``out/adapt.json``.
    """
    cfg = config or AdaptConfig(
        steps=steps, epochs=epochs, batch_size=batch_size, max_length=max_length, lr=lr, embedding_lr=embedding_lr,
        head_lr=head_lr, embeddings_only_steps=embeddings_only_steps, mask_prob=mask_prob, warmup=warmup, seed=seed,
        checkpoint_every=checkpoint_every)
    if text is not None and dataset is not None:
        raise DistillError("give a text file or a dataset, not both")
    out = Path(out)
    acc = accelerator()
    if acc.num_processes > 1:
        raise DistillError("distill teacher adapt trains in one process; run it without `accelerate launch`")
    use_fast_matmul(acc.device)
    t_start = time.time()

    # text
    if text is not None:
        corpus = read_text(text, char_level)
        source_info = {"source": "text file", "path": str(text)}
    else:
        ds = load_dataset(**(dataset or {}))
        corpus = ds.train  # never dev (carved from train) nor test
        source_info = {"source": "dataset train split (tags ignored)", "dataset": ds.name,
                       "options": {k: str(v) if isinstance(v, Path) else v for k, v in (dataset or {}).items()}}
    source_info.update(sentences=len(corpus), tokens=corpus.n_tokens(), char_level=corpus.char_level,
                       fingerprint=corpus.fingerprint())

    # model: load, extend the vocabulary, tie the decoder
    source = resolve_backbone(backbone)  # a built-in name becomes its folder; None the default's
    torch.manual_seed(cfg.seed)
    model, tokenizer, head = load_mlm(source)
    if extend_vocab:
        vocab = extend_vocabulary(tokenizer, model, corpus.tokens, min_count=min_count)
    else:
        vocab = {"unk_rate_before": round(unk_rate(tokenizer, corpus.tokens)[0], 4), "added": 0}
    vocab.update(vocab_size=len(tokenizer), new_token_ids=[len(tokenizer) - vocab["added"], len(tokenizer)],
                 decoder_tied_here=tie_decoder(model))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight

    limit = min(cfg.max_length, getattr(model.config, "max_position_embeddings", cfg.max_length)) - 2
    pieces = make_pieces(_Featurizer(tokenizer, limit), corpus.tokens)
    if not pieces:
        raise DistillError("no text to train on after tokenisation")
    lengths = [sum(len(w) for w in p.feature["words"]) for p in pieces]
    steps_per_epoch = math.ceil(len(pieces) / cfg.batch_size)
    total = cfg.steps or max(1, round((cfg.epochs or 1.0) * steps_per_epoch))

    # the engine: per-group learning rates, the encoder's schedule starting after the embeddings-only phase
    groups = group_params(model)
    lrs = {"embeddings": cfg.embedding_lr, "encoder": cfg.lr, "head": cfg.head_lr}
    optimizer = adamw(groups, lrs, cfg.weight_decay)
    scheduler = linear_schedule(optimizer, total, cfg.warmup, starts={"encoder": min(cfg.embeddings_only_steps, total)})

    def make_batch(indices: Sequence[int], step: int) -> dict:
        set_embeddings_only(groups, step < cfg.embeddings_only_steps)  # the step's phase, with its batch
        rng = random.Random(cfg.seed * 1_000_003 + step)  # masks depend on the step only: resumable
        return collate([pieces[i].feature for i in indices], rng, tokenizer, cfg.mask_prob)

    def step_loss(net, batch: dict):
        return mlm_loss(model, batch), {}

    run = {"backbone": source, "text_fingerprint": source_info["fingerprint"], "vocab_size": len(tokenizer),
           "total_steps": total, **{k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"}}
    engine = Engine(model, optimizer, scheduler, acc=acc, out=out, log=LOG, make_batch=make_batch, loss=step_loss,
                    units=[n + 2 for n in lengths], unit="sub-tokens", clip=cfg.clip,
                    checkpoint_every=cfg.checkpoint_every, max_steps=total, identity={"run": run}, log_by="step")
    engine.start(resume, lambda ckpt: _other_run(ckpt, run))
    if not quiet:
        print(f"adapt: {len(corpus)} sentences, {corpus.n_tokens()} tokens ({'characters' if corpus.char_level else 'words'}), "
              f"{len(pieces)} sequences; vocabulary +{vocab['added']} tokens "
              f"({vocab['unk_rate_before']:.1%} [UNK] before); {total} steps of {cfg.batch_size}")
    epochs = math.ceil(total / steps_per_epoch)
    with engine.running(quiet):
        while not engine.at_max_steps():
            epoch = engine.state["epoch"]
            engine.run_epoch(bucket_batches(lengths, cfg.batch_size, seed=cfg.seed * 1000 + epoch),
                             f"adapt epoch {epoch + 1}/{epochs}")
    set_embeddings_only(groups, False)
    engine.finish()

    state = engine.state
    losses = [json.loads(line)["loss"] for line in engine.log_path.read_text(encoding="utf-8").splitlines() if line]
    summary = {
        "source_backbone": source, "mlm_head": head, "text": source_info, "vocabulary": vocab,
        "sequences": len(pieces), "steps": total, "epochs": round(total * cfg.batch_size / len(pieces), 3),
        "config": asdict(cfg), "extend_vocab": extend_vocab, "min_count": min_count,
        "loss": {"first": losses[0], "last": losses[-1], "first_50_mean": _mean(losses[:50]),
                 "last_50_mean": _mean(losses[-50:])},
        "train_seconds": round(state["train_seconds"], 1),
        "train_cpu_seconds": round(state["train_cpu_seconds"], 1),  # wall >> cpu x threads: a busy machine
        "steps_per_second": round(total / max(state["train_seconds"], 1e-9), 3),
        "subtokens_per_second": round(state["tokens_seen"] / max(state["train_seconds"], 1e-9), 1),
        "device": str(acc.device), "torch_threads": torch.get_num_threads(),
        "wall_seconds_this_call": round(time.time() - t_start, 1),
        "finished": stamp(),
    }
    save_adapted(model, tokenizer, out, summary, engine.log_path)
    return summary


def _other_run(ckpt: dict, run: dict) -> str | None:
    """Why a checkpoint cannot be resumed by this adaptation (None: it can): any option that
    makes the run (all but ``checkpoint_every``) must be the same."""
    if ckpt.get("format") == OLD_FORMAT:
        return "written by an older distill teacher adapt, whose checkpoints this one cannot continue; " \
               "run without --resume to start over"
    before = ckpt.get("run")
    if not isinstance(before, dict):
        return "not a checkpoint of distill teacher adapt; run without --resume to start over"
    changed = [k for k in run if before.get(k) != run[k]]
    if changed:
        was = ", ".join(f"{k}={before.get(k)!r} (now {run[k]!r})" for k in changed)
        return f"was made with other options: {was}; run with the same options or without --resume"
    return None


def adapted_stamp(backbone: str | Path | None) -> str | None:
    """When ``backbone`` is a folder written by :func:`adapt_backbone`, the time it was
    finished (its identity for the teachers trained from it); else None."""
    if backbone is None:
        return None
    try:
        return json.loads((Path(backbone) / ADAPT_FILE).read_text(encoding="utf-8")).get("finished")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def save_adapted(model, tokenizer, out: Path, summary: dict, log_path: Path | None = None) -> Path:
    """Write the backbone folder atomically: base encoder, tokenizer, MLM head, adapt.json, log."""
    from safetensors.torch import save_file

    base = {id(p) for p in model.base_model.parameters()}
    head = {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if id(p) not in base}
    with atomic_dir(out) as tmp:
        model.base_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(head, str(tmp / HEAD_FILE))
        write_json(tmp / ADAPT_FILE, summary)
        if log_path is not None and log_path.exists():
            (tmp / LOG).write_bytes(log_path.read_bytes())
    return out


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 6) if xs else float("nan")
