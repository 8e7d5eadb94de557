"""``distill quantize fp16``: half-precision weights for GPU inference.

Every weight becomes float16 except the CRF (its Viterbi scores add up over a whole
sentence, so it stays float32; emissions are cast to float32 before decoding).

fp16 is for CUDA GPUs: without one, ``quantize fp16`` stops with a one-line error
rather than silently producing a model that is slower than fp32 on CPU (no bf16
fallback: a different number format deserves its own name). ``device="cpu"`` makes
and checks the folder on CPU anyway (correct, slow; for machines preparing a GPU
model). A saved fp16 folder loads on CUDA when available, else on CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from distill.errors import DistillError
from distill.modeling import Tagger, save_weights
from quantize import (CompressedTagger, build_skeleton, check_sentences, compare, derived_meta, describe_check, load_source,
                      output_folder, read_weights, write_model_folder)

DEVICES = ("cuda", "cpu")


def to_half(model: Tagger) -> Tagger:
    """Cast ``model`` to float16 in place, the CRF kept float32."""
    model.half()
    if getattr(model, "crf", None) is not None:  # classifiers have none
        model.crf.float()
    return model


class HalfTagger(CompressedTagger):
    """A tagger in float16 (CRF in float32), on CUDA when available."""

    kind = "fp16"

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any]) -> "HalfTagger":
        from safetensors.torch import load_model

        inner = to_half(build_skeleton(folder, info, "cpu"))
        read_weights(folder / "model.safetensors", "fp16", lambda path: load_model(inner, path))
        return cls(inner.to("cuda" if torch.cuda.is_available() else "cpu").eval(), info["meta"])


def quantize_fp16(*, model: Path, out: Path | None = None, device: str = "cuda", dataset: dict | None = None,
                  check: int = 200, quiet: bool = False) -> Path:
    """Write a float16 copy of ``model`` (default folder ``MODEL-fp16``), checked against
    the fp32 model on ``check`` dev sentences on ``device`` (cuda, or cpu explicitly)."""
    if device not in DEVICES:
        raise DistillError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    out = output_folder(model, out, "fp16")
    source = load_source(model)
    sentences = check_sentences(source.meta, dataset, check) if check else None
    if device == "cuda" and not torch.cuda.is_available():
        raise DistillError("fp16 is for GPU inference and no CUDA GPU is available here; on CPU use "
                           "`distill quantize int8` (or pass --device cpu to make the fp16 folder anyway)")
    half = to_half(copy.deepcopy(source)).to(device).eval()
    meta = derived_meta(source, model, "fp16", {"dtype": "float16", "device": device})
    if sentences:
        meta["check"] = compare(source, HalfTagger(half, meta), sentences)
    write_model_folder(out, kind=HalfTagger.kind, source=source, meta=meta,
                       write_weights=lambda tmp: save_weights(half, tmp / "model.safetensors"))
    if not quiet:
        print(f"fp16 model ({device}) saved to {out}{describe_check(meta.get('check'))}")
    return out
