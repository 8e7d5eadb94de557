"""The vocabulary-pruning compression stage (``distill prune --method vocab``): prune a saved
BERT-family model folder to the pieces of a text and of its training data, and check that the
pruned tokenizer segments every such text as the source did. The pruning itself (which pieces
to keep, the rebuilt tokenizer, the sliced embeddings) is :mod:`teachers.vocab`, which building a
teacher uses too.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Sequence

from distill.errors import DistillError
from teachers.vocab import prune_vocabulary, sentence_texts

def _pieces(tokenizer, texts: Sequence[str]) -> list[list[str]]:
    enc = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return [tokenizer.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]


def read_text(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, one sentence each."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DistillError(f"--text {path}: cannot read it as UTF-8 text ({e})") from None
    return [line.strip() for line in lines if line.strip()]


def prune_vocab_folder(*, model: Path, text: Path | None = None, out: Path | None = None,
                       dataset: dict | None = None, keep_scripts: bool = True, quiet: bool = False) -> Path:
    """Prune a bert-crf model folder's vocabulary to the pieces of ``text`` (one sentence per
    line) and of the train and dev sentences of ``dataset`` (default: the model's own training
    data, when its meta names it), plus scripts; write a bert-crf folder to ``out`` (default
    ``MODEL-pruned-vocab``) that predicts as the source does on text made of kept pieces."""
    from distill.data import load_dataset
    from distill.modeling import load_model
    from quantize import dataset_of, derived_meta, load_source, output_folder

    model = Path(model)
    out = output_folder(model, out, "pruned-vocab")
    source = load_source(model)
    if not hasattr(source, "encoder") or not hasattr(source, "tokenizer"):
        raise DistillError(f"{model}: --method vocab needs a BERT model (bert-crf); a {source.kind} has no "
                           "sub-token vocabulary")
    texts = read_text(text) if text is not None else []
    data_kwargs = dataset if dataset is not None else dataset_of(source.meta)
    unspaced = getattr(source, "alignment", "first") == "natural"
    if data_kwargs is not None:
        ds = load_dataset(**data_kwargs)
        texts += sentence_texts(ds.train.tokens + ds.dev.tokens, unspaced)
    if not texts:
        raise DistillError(f"{model}: cannot tell which data the model was trained on; give --text FILE "
                           "(one sentence per line) or --train to prune the vocabulary to")
    t0 = time.time()
    pruned = copy.deepcopy(source)
    before = sum(p.numel() for p in pruned.parameters())
    result = prune_vocabulary(pruned.tokenizer, pruned.encoder, texts, keep_scripts)
    pruned.tokenizer = result.tokenizer
    # the pieces of every text it was pruned to are the source's own (ties aside: then the check says so)
    resegmented = sum(a != b for a, b in zip(_pieces(source.tokenizer, texts), _pieces(result.tokenizer, texts)))
    info = {"method": "vocab", **result.record(), "keep_scripts": keep_scripts, "texts": len(texts),
            "resegmented": resegmented, "parameters_before": before,
            "parameters_after": sum(p.numel() for p in pruned.parameters()), "seconds": round(time.time() - t0, 2)}
    options = {"text": text, "keep_scripts": keep_scripts,
               "dataset": {k: str(v) if isinstance(v, Path) else v for k, v in (data_kwargs or {}).items()}}
    pruned.meta = derived_meta(source, model, "prune-vocab", options)
    pruned.meta["pruning"] = info
    pruned.meta["vocabulary"] = dict(source.meta.get("vocabulary") or {}, pruned=result.record())
    pruned.save(out)
    load_model(out)  # the folder rebuilds (tokenizer, sliced embeddings) before anyone relies on it
    if not quiet:
        print(f"pruned vocabulary ({info['kept']} of {info['original']} pieces kept; "
              f"{info['parameters_after'] / 1e6:.2f}M of {before / 1e6:.2f}M parameters) saved to {out}")
    return out
