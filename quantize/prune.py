"""``distill prune``: magnitude pruning and attention-head pruning, with an optional
short fine-tune (distilled from the unpruned model when a teacher is given).

* ``magnitude``: global unstructured L1 pruning (``torch.nn.utils.prune.global_unstructured``)
  of every Linear weight and LSTM weight matrix, made permanent; the zeros are dense
  zeros in the saved weights (the folder is no smaller; sparse kernels are another
  matter). During a fine-tune the pruned positions get zero gradient, so with AdamW
  (moments start at zero, decoupled weight decay) they stay exactly zero.
* ``heads``: the least important attention heads of a BERT encoder are removed, so
  the query/key/value and attention-output matrices really shrink. Importance is
  Michel et al. (2019), "Are Sixteen Heads Really Better than One?": a gate xi_h = 1
  multiplies each head's output; I_h = sum over dev batches of |dL/dxi_h| with L the
  CRF NLL of the gold tags (a classifier's: the cross-entropy of the gold labels),
  normalised per layer by its L2 norm; the heads with the
  lowest I_h over all layers go first, each layer keeping at least one. Which heads
  were removed is stored as ``pruned_heads`` in the encoder config (original head
  numbers), and :meth:`teachers.bert_crf.BertTagger.build` removes them again on load
  (:mod:`teachers.heads`, which also does the removing here).
* ``vocab``: the embedding rows (and tokenizer pieces) a corpus does not need are removed,
  predictions on the kept pieces unchanged: :func:`quantize.vocab.prune_vocab_folder`.

The output is a model folder of the source's own kind (``bert-crf`` / ``bilstm-crf``, or
the classifiers ``bert-cls`` / ``bilstm-cls``, whose importance loss and fine-tune are in
:mod:`quantize.classify`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from distill.errors import DistillError
from distill.modeling import META_FILE, Tagger
from quantize import dataset_of, derived_meta, load_source, output_folder
from teachers.heads import attention_layers, remove_heads

PRUNE_METHODS = ("magnitude", "heads", "vocab")


@dataclass
class PruneConfig:
    method: str = "magnitude"
    sparsity: float = 0.5  # magnitude: share of prunable weights set to zero; heads: share of heads removed
    finetune_epochs: int = 0
    lr: float | None = None  # encoder learning rate of the fine-tune; None: the source's own
    alpha: float = 0.5  # fine-tune with a teacher: weight of the gold-tag loss (distill.kd)
    temperature: float = 4.0
    importance_sentences: int = 500  # dev sentences for head importance

    def __post_init__(self):
        if self.method not in PRUNE_METHODS:
            raise DistillError(f"unknown pruning method {self.method!r}; expected one of {', '.join(PRUNE_METHODS)}")
        if not 0 <= self.sparsity < 1:
            raise DistillError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        if self.finetune_epochs < 0:
            raise DistillError(f"--finetune-epochs must be >= 0, got {self.finetune_epochs}")
        if self.lr is not None and not self.lr > 0:
            raise DistillError(f"--lr must be > 0, got {self.lr}")
        if self.importance_sentences < 1:
            raise DistillError(f"importance_sentences must be >= 1, got {self.importance_sentences}")


# ---------------------------------------------------------------------------
# Magnitude pruning


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every Linear weight and LSTM weight matrix (not biases,
    embeddings, LayerNorm or the CRF)."""
    out = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            out.append((module, "weight"))
        elif isinstance(module, nn.LSTM):
            out += [(module, name) for name, _ in module.named_parameters(recurse=False) if name.startswith("weight_")]
    return out


def sparsity_of(model: nn.Module) -> float:
    """Share of exact zeros over all prunable weights."""
    zeros = total = 0
    for module, name in prunable_weights(model):
        w = getattr(module, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


def magnitude_prune(model: nn.Module, sparsity: float) -> list[tuple[Tensor, Tensor]]:
    """Zero the ``sparsity`` share of prunable weights with the smallest |w|, over all of
    them at once; returns (parameter, keep mask) pairs."""
    from torch.nn.utils import prune

    params = prunable_weights(model)
    if not params:
        raise DistillError("the model has no Linear or LSTM weights to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    masks = []
    for module, name in params:
        mask = getattr(module, f"{name}_mask").detach().clone()
        prune.remove(module, name)  # makes w * mask the parameter itself
        masks.append((getattr(module, name), mask))
    return masks


def keep_pruned(masks: Sequence[tuple[Tensor, Tensor]]) -> list:
    """Zero the gradient at pruned positions, so training never revives them."""
    return [param.register_hook(lambda grad, mask=mask: grad * mask.to(grad.dtype)) for param, mask in masks]


# ---------------------------------------------------------------------------
# Attention heads


def head_importance(model: Tagger, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[int]],
                    batch_size: int = 16) -> list[Tensor]:
    """Michel et al. (2019) head importance per layer (:func:`gate_importance`), L the CRF
    NLL of the gold tags."""
    from distill.features import iterate_batches, make_pieces

    def losses():
        pieces = make_pieces(model, sentences, tags)
        for _, batch in iterate_batches(model, pieces, batch_size):
            yield model.loss(model(batch), batch["tags"])

    return gate_importance(model, losses)


def gate_importance(model: nn.Module, losses: Callable[[], Iterable[Tensor]]) -> list[Tensor]:
    """Michel et al. (2019) head importance per layer of ``model.encoder``, each a (heads,)
    tensor: the sum over dev batches of |dL/dxi_h| for a gate xi_h = 1 on each head's
    output (the gate multiplies that head's slice of the input of the attention output
    projection), L each loss ``losses()`` yields (one per dev batch, computed while the
    gates are in place); then each layer's vector divided by its L2 norm."""
    layers = attention_layers(model.encoder)
    gates = [torch.ones(layer.attention.self.num_attention_heads, requires_grad=True) for layer in layers]
    hooks = []
    for layer, gate in zip(layers, gates):
        d = layer.attention.self.attention_head_size

        def gated(module, args, gate=gate, d=d):
            return (args[0] * gate.repeat_interleave(d).to(args[0].dtype),) + tuple(args[1:])

        hooks.append(layer.attention.output.dense.register_forward_pre_hook(gated))
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    importance = [torch.zeros_like(g) for g in gates]
    try:
        for loss in losses():
            grads = torch.autograd.grad(loss, gates)
            for acc, g in zip(importance, grads):
                acc += g.abs()
    finally:
        for h in hooks:
            h.remove()
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)
    return [imp / imp.norm().clamp_min(1e-20) for imp in importance]


def heads_to_remove(importance: Sequence[Tensor], share: float) -> dict[int, list[int]]:
    """The ``share`` of all heads with the lowest importance, each layer keeping one."""
    total = sum(len(i) for i in importance)
    n = int(round(share * total))
    order = sorted(((float(v), layer, h) for layer, imp in enumerate(importance) for h, v in enumerate(imp)))
    left = [len(i) for i in importance]
    chosen: dict[int, list[int]] = {}
    for _, layer, h in order:
        if n == 0:
            break
        if left[layer] > 1:
            chosen.setdefault(layer, []).append(h)
            left[layer] -= 1
            n -= 1
    return {k: sorted(v) for k, v in sorted(chosen.items())}


# ---------------------------------------------------------------------------


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _finetune(model: Tagger, masks, cfg: PruneConfig, ds, out: Path, teacher: Path | None, dataset: dict,
              extra_meta: dict, quiet: bool) -> dict:
    """A short fine-tune with :func:`distill.train.train` (NLL, or KD from ``teacher``)."""

    from distill.train import TrainConfig, default_loss, train

    src = (model.meta.get("training") or {}).get("config") or {}
    lr = cfg.lr or src.get("lr", 1e-4)
    scale = lr / src.get("lr", lr)
    train_cfg = TrainConfig(epochs=cfg.finetune_epochs, batch_size=src.get("batch_size", 32), lr=lr,
                            embedding_lr=(src.get("embedding_lr") or lr) * scale, head_lr=src.get("head_lr", 1e-3) * scale,
                            crf_lr=src.get("crf_lr", 1e-2) * scale, patience=cfg.finetune_epochs,
                            seed=src.get("seed", 13))
    loss_fn, collate, how = default_loss, None, "gold tags (CRF NLL)"
    if teacher is not None:
        from distill.kd import KDConfig, build_loss

        kd_cfg = KDConfig(alpha=cfg.alpha, temperature=cfg.temperature, kd="emission")
        wiring = build_loss(kd_cfg, model, teacher=teacher, dataset=dataset, corpus=ds.train, labels=ds.labels,
                            quiet=quiet)
        loss_fn, collate = wiring.loss_fn, wiring.collate
        how = f"KD from {teacher} (alpha {cfg.alpha}, T {cfg.temperature}, emission KL)"
    hooks = keep_pruned(masks)
    try:
        summary = train(model, ds.train, ds.dev, out, train_cfg, loss_fn=loss_fn, collate=collate, quiet=quiet,
                        extra_meta=extra_meta)
    finally:
        for h in hooks:
            h.remove()
    return {"epochs": cfg.finetune_epochs, "loss": how, "best_dev_f1": summary.get("best_f1"),
            "train_config": asdict(train_cfg)}


def prune(*, model: Path, out: Path | None = None, method: str = "magnitude", sparsity: float = 0.5,
          finetune_epochs: int = 0, teacher: Path | None = None, dataset: dict | None = None, quiet: bool = False,
          lr: float | None = None, alpha: float = 0.5, temperature: float = 4.0,
          importance_sentences: int = 500, text: Path | None = None) -> Path:
    """Prune ``model`` into ``out`` (default ``MODEL-pruned-<method><sparsity>``), optionally
    fine-tuned for ``finetune_epochs`` on ``dataset`` (default: the model's training data),
    distilled from ``teacher`` (the unpruned model) when given. Returns the folder.
    ``vocab`` prunes to the pieces of ``text`` (one sentence per line) and of ``dataset``
    (:func:`quantize.vocab.prune_vocab_folder`; no ``sparsity``, no fine-tune)."""
    from distill.data import load_dataset
    from distill.modeling import read_meta
    from distill.textdata import load_text_dataset
    from quantize.classify import classifier_head_importance, finetune_classifier, is_classifier, text_dataset_of

    cfg = PruneConfig(method=method, sparsity=sparsity, finetune_epochs=finetune_epochs, lr=lr, alpha=alpha,
                      temperature=temperature, importance_sentences=importance_sentences)
    model = Path(model)
    if method == "vocab":
        if finetune_epochs or teacher is not None:
            raise DistillError("--method vocab leaves predictions on the kept pieces unchanged; it takes no "
                               "--finetune-epochs or --teacher")
        from quantize.vocab import prune_vocab_folder

        return prune_vocab_folder(model=model, text=text, out=out, dataset=dataset, quiet=quiet)
    if text is not None:
        raise DistillError(f"--text is for --method vocab (the pieces to keep); --method {method} does not use it")
    out = output_folder(model, out, f"pruned-{method}{sparsity:g}")
    teacher = Path(teacher) if teacher is not None else None
    if teacher is not None and finetune_epochs == 0:
        raise DistillError("--teacher is used by the fine-tune; give --finetune-epochs N (>= 1) too")
    source = load_source(model)
    if teacher is not None and list(read_meta(teacher)["labels"]) != source.labels:
        raise DistillError(f"{teacher}: teacher labels differ from the pruned model's {source.labels}")
    if method == "heads" and not hasattr(source, "encoder"):
        raise DistillError(f"{model}: --method heads needs a BERT model (bert-crf, bert-cls); a {source.kind} "
                           f"has no attention heads")
    classify = is_classifier(source)  # text classifiers: quantize.classify
    data_kwargs = dataset if dataset is not None else (text_dataset_of if classify else dataset_of)(source.meta)
    need_data = method == "heads" or finetune_epochs > 0
    if need_data and data_kwargs is None:
        raise DistillError("cannot tell which data the model was trained on; give --train (and --dev) files")
    # Data given explicitly is read (and checked) even when only a fine-tune or heads would need it.
    ds = None
    if need_data or dataset is not None:
        ds = load_text_dataset(data_kwargs) if classify else load_dataset(**data_kwargs)

    pruned = copy.deepcopy(source)
    before = _count(pruned)
    info: dict[str, Any] = {"method": method, "target": sparsity}
    masks: list = []
    if method == "magnitude":
        masks = magnitude_prune(pruned, sparsity)
        info["sparsity"] = round(sparsity_of(pruned), 6)
        info["pruned_weights"] = sum(int((m == 0).sum()) for _, m in masks)
    else:
        label_index = {l: i for i, l in enumerate(source.labels)}
        dev = ds.dev.subset(range(min(len(ds.dev), cfg.importance_sentences)))
        if classify:
            importance = classifier_head_importance(pruned, dev.texts, dev.labels)
        else:
            importance = head_importance(pruned, dev.tokens, [[label_index[t] for t in s] for s in dev.tags])
        removed = heads_to_remove(importance, sparsity)
        remove_heads(pruned.encoder, removed)
        total = sum(len(i) for i in importance)
        info.update(heads_before=total, heads_removed=sum(len(v) for v in removed.values()),
                    removed=removed, pruned_heads=pruned.encoder.config.pruned_heads,
                    importance=[[round(float(v), 6) for v in imp] for imp in importance],
                    importance_sentences=len(dev))
    info.update(parameters_before=before, parameters_after=_count(pruned))
    options = {"sparsity": sparsity, "finetune_epochs": finetune_epochs, "teacher": teacher,
               "dataset": {k: str(v) if isinstance(v, Path) else v for k, v in (data_kwargs or {}).items()}}
    pruned.meta = derived_meta(source, model, f"prune-{method}", options)
    pruned.meta["pruning"] = info
    if finetune_epochs and classify:
        info["finetune"] = finetune_classifier(pruned, masks, cfg, ds, out, teacher, {"pruning": info}, quiet)
        _check_saved(out, method, info)
    elif finetune_epochs:
        info["finetune"] = _finetune(pruned, masks, cfg, ds, out, teacher, data_kwargs,
                                     {"pruning": info}, quiet)
        _check_saved(out, method, info)
    else:
        pruned.save(out)
    if not quiet:
        what = (f"sparsity {info['sparsity']:.2%} of Linear/LSTM weights" if method == "magnitude" else
                f"{info['heads_removed']} of {info['heads_before']} attention heads removed")
        print(f"pruned model ({what}; {info['parameters_after'] / 1e6:.2f}M of {before / 1e6:.2f}M parameters) saved to {out}")
    return out


def _check_saved(out: Path, method: str, info: dict) -> None:
    """After a fine-tune: the saved model kept the pruning; record it in its meta."""
    from distill.fileio import write_json
    from distill.modeling import load_model

    saved = load_model(out)
    if method == "magnitude":
        after = sparsity_of(saved)
        if after + 1e-9 < info["sparsity"]:
            raise DistillError(f"fine-tune lost sparsity ({after:.4f} < {info['sparsity']:.4f}); this is a bug")
        info["sparsity_after_finetune"] = round(after, 6)
    path = out / META_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["meta"]["pruning"] = info
    write_json(path, data)
