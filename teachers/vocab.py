"""Vocabulary pruning (TextPruner's idea, Yang et al. 2022): keep only the embedding rows of
the pieces a corpus needs.

multilingual-e5-small's 250,002 x 384 embedding matrix is 96M of its 118M parameters; a Chinese
NER corpus uses a few thousand of those rows. :func:`prune_vocabulary` keeps

* every special and added token,
* every piece that tokenizing the texts gives (the texts as the model tokenizes them: the
  unspaced sentence under the natural alignment, words joined by spaces otherwise),
* with ``keep_scripts``, every single-character piece (bare, ``▁``- or ``##``-prefixed) of the
  scripts the texts use (:func:`script_of`), so an unseen word of those scripts is still
  written with kept pieces instead of ``<unk>``;

then rebuilds the tokenizer over those pieces (scores kept, ids renumbered in the old order;
normalizer, pre-tokenizer and decoder unchanged, the post-processor's special ids remapped)
and slices the encoder's word embeddings to the kept rows. Text that tokenized to kept pieces
still tokenizes to the same pieces: a Unigram segmentation is the best-scoring path through
the pieces, and removing pieces other than those on it leaves it best; WordPiece takes the
longest piece at each step, and no kept piece is longer than the one it took. So a pruned
model gives the unpruned one's outputs on such text.

The original ids of the kept rows ride in the encoder config as ``vocab_pruning``
(``{"original": rows, "kept": [ids]}``), as head pruning records ``pruned_heads`` there, so
every copy of the model folder (quantized, ONNX, pruned again) keeps them in ``config.json``;
pruning twice composes them.

Building a teacher prunes with this module (``build_teacher``'s ``prune_vocab``); the compression
stage that prunes a saved model folder (``distill prune --method vocab``) is :mod:`quantize.vocab`.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from distill.errors import DistillError

METASPACE = "\u2581"  # SentencePiece's word-start marker
SUPPORTED = ("Unigram", "WordPiece")


@dataclass
class PrunedVocabulary:
    """What :func:`prune_vocabulary` did: the new tokenizer, and for each new id ``i`` the
    original id ``kept[i]`` (of the first, unpruned vocabulary of ``original`` rows)."""

    tokenizer: Any
    kept: list[int]
    original: int

    def record(self) -> dict[str, int]:
        """The counts a model's meta records (``meta["vocabulary"]["pruned"]``)."""
        return {"kept": len(self.kept), "original": self.original}


def model_type(tokenizer) -> str:
    """The ``tokenizers`` model type of a fast tokenizer: Unigram, WordPiece, BPE, ..."""
    return type(tokenizer.backend_tokenizer.model).__name__


def is_unigram(tokenizer) -> bool:
    """True for a SentencePiece Unigram tokenizer (XLM-R, multilingual-e5)."""
    return model_type(tokenizer) == "Unigram"


def sentence_texts(sentences: Iterable[Sequence[str]], unspaced: bool) -> list[str]:
    """Sentences as the model tokenizes them: words joined with "" (a character-level corpus
    under the natural alignment) or with " "."""
    sep = "" if unspaced else " "
    return [sep.join(s) for s in sentences]


def script_of(char: str) -> str | None:
    """The group whose single-character pieces a text using ``char`` keeps: for letters, marks
    and numbers the first word of the Unicode name (CJK, LATIN, HIRAGANA, CYRILLIC, DIGIT...);
    punctuation and symbols by major category (P, S), since names do not give their script
    (a text with "(" keeps ")"); None for separators and control characters."""
    cat = unicodedata.category(char)
    if cat[0] in "PS":
        return cat[0]
    if cat[0] not in "LMN":
        return None
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] or None


def _marker(tokenizer) -> str:
    """The prefix a piece carries inside or at the start of a word: ``▁`` or ``##``."""
    model = tokenizer.backend_tokenizer.model
    return getattr(model, "continuing_subword_prefix", None) or METASPACE


def pieces_to_keep(tokenizer, texts: Iterable[str], keep_scripts: bool = True) -> list[int]:
    """Sorted ids of the pieces to keep (see the module docstring)."""
    backend = tokenizer.backend_tokenizer
    keep = set(tokenizer.all_special_ids) | set(backend.get_added_tokens_decoder())
    texts = [t for t in texts if t]
    step = 4096
    for s in range(0, len(texts), step):
        enc = tokenizer(texts[s : s + step], add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)
        for ids in enc["input_ids"]:
            keep.update(ids)
    if keep_scripts:
        normalizer = backend.normalizer
        chars = set()
        for t in texts:
            chars.update(normalizer.normalize_str(t) if normalizer is not None else t)
        scripts = {script_of(c) for c in chars} - {None}
        marker = _marker(tokenizer)
        for piece, i in backend.get_vocab(with_added_tokens=False).items():
            core = piece[len(marker):] if piece.startswith(marker) else piece
            if piece == marker or (len(core) == 1 and script_of(core) in scripts):
                keep.add(i)
    return sorted(keep)


def _remap_post_processor(node: dict | None, new_id: dict[int, int]) -> None:
    """Point the special-token ids of a post-processor (TemplateProcessing, Roberta/Bert
    processing, or a Sequence of them) at their new ids, in place."""
    if not node:
        return
    kind = node.get("type")
    if kind == "TemplateProcessing":
        for spec in node["special_tokens"].values():
            spec["ids"] = [new_id[i] for i in spec["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            token, i = node[key]
            node[key] = [token, new_id[i]]
    elif kind == "Sequence":
        for p in node["processors"]:
            _remap_post_processor(p, new_id)


def pruned_tokenizer(tokenizer, kept: Sequence[int]):
    """A new fast tokenizer over the pieces ``kept`` (sorted original ids), id ``kept[i]``
    becoming ``i``; the rest of the pipeline as it was (see the module docstring)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    kind = model_type(tokenizer)
    if kind not in SUPPORTED:
        raise DistillError(f"vocabulary pruning supports SentencePiece Unigram and WordPiece tokenizers; "
                           f"this one is {kind}")
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    new_id = {old: new for new, old in enumerate(kept)}
    model = data["model"]
    if kind == "Unigram":
        vocab = model["vocab"]  # [[piece, score], ...] in id order
        model["vocab"] = [vocab[i] for i in kept if i < len(vocab)]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        piece_of = {i: p for p, i in model["vocab"].items()}
        model["vocab"] = {piece_of[i]: new_id[i] for i in kept if i in piece_of}
    for token in data.get("added_tokens") or []:
        token["id"] = new_id[token["id"]]
    _remap_post_processor(data.get("post_processor"), new_id)
    if data.get("padding"):
        data["padding"]["pad_id"] = new_id[data["padding"]["pad_id"]]
    backend = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tokenizer.model_max_length, **specials)


def slice_embeddings(encoder: nn.Module, kept: Sequence[int]) -> None:
    """Keep the word-embedding rows ``kept`` of ``encoder`` (in that order), in place; its
    config's ``vocab_size`` and special-token ids follow."""
    old = encoder.get_input_embeddings()
    if getattr(encoder, "get_output_embeddings", lambda: None)() is not None:
        raise DistillError("vocabulary pruning slices input embeddings only; this encoder has an output (LM) head too")
    if kept[-1] >= old.num_embeddings:
        raise DistillError(f"the tokenizer has id {kept[-1]} but the encoder only {old.num_embeddings} embedding rows")
    new_id = {o: n for n, o in enumerate(kept)}
    new = nn.Embedding(len(kept), old.embedding_dim, padding_idx=new_id.get(old.padding_idx),
                       device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(kept, device=old.weight.device)])
    new.weight.requires_grad_(old.weight.requires_grad)
    encoder.set_input_embeddings(new)
    config = encoder.config
    config.vocab_size = len(kept)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        i = getattr(config, name, None)
        if i is not None:
            setattr(config, name, new_id.get(i))


def prune_vocabulary(tokenizer, encoder: nn.Module, texts: Iterable[str],
                     keep_scripts: bool = True) -> PrunedVocabulary:
    """Prune ``tokenizer`` and ``encoder``'s word embeddings to the pieces ``texts`` need
    (see the module docstring). The encoder is changed in place; the pruned tokenizer is
    returned with the kept original ids, also stored in ``encoder.config.vocab_pruning``."""
    kept = pieces_to_keep(tokenizer, texts, keep_scripts)
    new_tokenizer = pruned_tokenizer(tokenizer, kept)
    rows = encoder.get_input_embeddings().num_embeddings
    slice_embeddings(encoder, kept)
    before = getattr(encoder.config, "vocab_pruning", None)  # pruned already: ids of the first vocabulary
    original = before["original"] if before else rows
    kept_original = [before["kept"][i] for i in kept] if before else list(kept)
    encoder.config.vocab_pruning = {"original": original, "kept": kept_original}
    return PrunedVocabulary(new_tokenizer, kept_original, original)
