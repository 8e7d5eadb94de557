"""Loading a backbone (built-in name, local folder or hub id): its pretrained encoder and
fast tokenizer, or an untrained encoder shaped as the one a model folder saved.

Shared by the BERT-CRF teacher (:mod:`teachers.bert_crf`), the text-classifier teacher
(:mod:`teachers.bert_classifier`) and domain adaptation (:mod:`teachers.adapt`).
"""

from __future__ import annotations

import os
from pathlib import Path

from distill.errors import DistillError
from teachers.backbones import DEFAULT_BACKBONE, resolve_backbone


def default_backbone() -> str:
    """The folder of the default backbone (:data:`teachers.backbones.DEFAULT_BACKBONE`)."""
    return resolve_backbone(DEFAULT_BACKBONE)


def _offline_kwargs(source: str) -> dict:
    return {"local_files_only": True} if Path(source).exists() or os.environ.get("HF_HUB_OFFLINE") == "1" else {}


def load_tokenizer(source: str):
    """The fast tokenizer of a backbone (built-in name, local folder or hub id)."""
    from transformers import AutoTokenizer

    source = resolve_backbone(source)
    try:
        tok = AutoTokenizer.from_pretrained(source, **_offline_kwargs(source))
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load a tokenizer from {source!r} (a local folder or hub id): {str(e).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise DistillError(f"{source!r}: distill needs a fast (Rust) tokenizer for word alignment")
    return tok


def load_backbone(backbone: str | None, *, num_layers: int | None = None, random_init: bool = False):
    """``(encoder, tokenizer, source)`` of a backbone (built-in name, local folder or hub id;
    None: :data:`teachers.backbones.DEFAULT_BACKBONE`): its pretrained encoder without a
    pooling layer (randomly initialised with ``random_init``), its first ``num_layers``
    layers only when given, and its fast tokenizer."""
    from transformers import AutoConfig, AutoModel

    source = resolve_backbone(backbone or DEFAULT_BACKBONE)
    kw = _offline_kwargs(source)
    try:
        config = AutoConfig.from_pretrained(source, **kw)
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load backbone {source!r} (a local folder or hub id): {str(e).splitlines()[0]}") from None
    if num_layers:
        if not 0 < num_layers <= config.num_hidden_layers:
            raise DistillError(f"--num-layers must be in 1..{config.num_hidden_layers}, got {num_layers}")
        config.num_hidden_layers = num_layers
    if random_init:
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
    else:
        encoder = AutoModel.from_pretrained(source, config=config, add_pooling_layer=False, **kw)
    return encoder, load_tokenizer(source), source


def encoder_from_folder(folder: Path):
    """An untrained encoder shaped as the one saved in a model folder (its ``config.json``),
    with the attention heads a pruned model removed (weights are loaded after)."""
    from transformers import AutoConfig, AutoModel

    enc_config = AutoConfig.from_pretrained(folder, local_files_only=True)
    encoder = AutoModel.from_config(enc_config, add_pooling_layer=False)
    if getattr(enc_config, "pruned_heads", None):  # head-pruned: transformers 5 no longer re-prunes
        from teachers.heads import apply_pruned_heads

        apply_pruned_heads(encoder, enc_config.pruned_heads)
    return encoder
