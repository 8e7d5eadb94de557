"""Removing attention heads from a BERT encoder, and removing them again on load.

A head-pruned encoder records the heads it lost as ``pruned_heads`` in its config
(layer index as a string -> removed heads in the original numbering), and
:meth:`teachers.bert_crf.BertTagger.build` rebuilds the full-size encoder and calls
:func:`apply_pruned_heads`: transformers 5 no longer does this itself (it dropped
``prune_heads`` and ``config.pruned_heads``). Which heads to remove is chosen by
``distill prune --method heads`` (:mod:`quantize.prune`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from distill.errors import DistillError


def attention_layers(encoder) -> list:
    """The encoder's layers, each with ``.attention.self`` and ``.attention.output``."""
    try:
        return list(encoder.encoder.layer)
    except AttributeError:
        raise DistillError("attention-head pruning needs a BERT-style encoder (encoder.encoder.layer[i].attention)") from None


def shrink_attention(layer, heads: Sequence[int]) -> None:
    """Remove ``heads`` (current numbering) from one BERT layer's attention: the query, key
    and value rows and the output projection's columns of those heads go."""
    from transformers.pytorch_utils import prune_linear_layer

    attn = layer.attention
    self_attn = attn.self
    d = self_attn.attention_head_size
    keep = [h for h in range(self_attn.num_attention_heads) if h not in set(heads)]
    if not keep:
        raise DistillError("cannot remove every attention head of a layer")
    index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep])
    self_attn.query = prune_linear_layer(self_attn.query, index)
    self_attn.key = prune_linear_layer(self_attn.key, index)
    self_attn.value = prune_linear_layer(self_attn.value, index)
    attn.output.dense = prune_linear_layer(attn.output.dense, index, dim=1)
    self_attn.num_attention_heads = len(keep)
    self_attn.all_head_size = len(keep) * d


def remove_heads(encoder, heads: dict[int, list[int]]) -> None:
    """Remove ``heads`` (layer -> head numbers as the layer has them now) and record them
    in ``encoder.config.pruned_heads`` in original numbering."""
    config = encoder.config
    done = {int(k): set(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    layers = attention_layers(encoder)
    for layer, current in heads.items():
        if not current:
            continue
        original = [h for h in range(config.num_attention_heads) if h not in done.get(layer, set())]
        done.setdefault(layer, set()).update(original[h] for h in current)
        shrink_attention(layers[layer], current)
    config.pruned_heads = {str(k): sorted(v) for k, v in sorted(done.items()) if v}


def apply_pruned_heads(encoder, pruned_heads: dict) -> None:
    """Shrink a freshly built full-size encoder to the heads kept by an earlier pruning:
    ``pruned_heads`` maps a layer index (int or str, as JSON has it) to removed heads
    (original numbers). Used when loading a head-pruned model folder."""
    layers = attention_layers(encoder)
    for layer, heads in pruned_heads.items():
        if heads:
            shrink_attention(layers[int(layer)], sorted(int(h) for h in heads))
