"""``distill quantize bnb8``: bitsandbytes 8-bit Linear layers (LLM.int8(), Dettmers
et al. 2022).

Every ``nn.Linear`` becomes ``bnb.nn.Linear8bitLt``: int8 weights with one scale per
output row; at run time input columns holding an outlier (any |value| >= ``threshold``)
are multiplied in 16-bit, the rest in int8. Embeddings, LayerNorm, LSTMs and the CRF
stay fp32. bitsandbytes >= 0.45 runs these layers on CUDA and on CPU.

The folder holds the int8 weights and their scales (safetensors), so loading needs no
fp32 weights.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.errors import DistillError
from quantize import (CompressedTagger, build_skeleton, check_sentences, compare, derived_meta, describe_check, load_source,
                      output_folder, read_weights, write_model_folder)

WEIGHTS = "model.bnb8.safetensors"
DEVICES = ("auto", "cpu", "cuda")


def _bnb():
    try:
        import bitsandbytes as bnb
    except Exception as e:  # ImportError, or a library load error on unsupported platforms
        raise DistillError(f"bitsandbytes cannot be loaded here ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                           f"pip install bitsandbytes, or use `distill quantize int8`") from None
    import logging

    # It logs, on every call of every layer, that it casts fp32 inputs to fp16 for the int8 matmul.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    return bnb


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise DistillError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DistillError("--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is False)")
    return device


def replace_linears(model: nn.Module, threshold: float = 6.0) -> list[str]:
    """Swap every ``nn.Linear`` of ``model`` for a ``Linear8bitLt`` holding its fp32
    weights (quantized when the model is moved to a device). Returns the swapped names."""
    bnb = _bnb()
    names = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            layer = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                        has_fp16_weights=False, threshold=threshold, device="cpu")
            layer.weight = bnb.nn.Int8Params(child.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data.clone(), requires_grad=False)
            setattr(parent, child_name, layer)
            names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


def to_device(model: nn.Module, device: str) -> nn.Module:
    """Move to ``device``; this is when bitsandbytes quantizes the weights."""
    try:
        return model.to(device)
    except (RuntimeError, NotImplementedError) as e:
        raise DistillError(f"bitsandbytes cannot run 8-bit layers on {device} here: {str(e).splitlines()[0][:200]}") from None


class Bnb8Tagger(CompressedTagger):
    """A tagger whose Linear layers are bitsandbytes ``Linear8bitLt`` (CUDA or CPU)."""

    kind = "bnb8"

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any], device: str = "auto") -> "Bnb8Tagger":
        from safetensors.torch import load_file

        params = info["meta"].get("params", {})
        inner = build_skeleton(folder, info, "cpu")
        replace_linears(inner, params.get("threshold", 6.0))
        inner = to_device(inner, resolve_device(device))
        where = str(next(inner.parameters()).device)
        read_weights(folder / WEIGHTS, "bnb8", lambda path: inner.load_state_dict(load_file(path, device=where)))
        return cls(inner.eval(), info["meta"])


def quantize_bnb8(*, model: Path, out: Path | None = None, threshold: float = 6.0, device: str = "auto",
                  dataset: dict | None = None, check: int = 200, quiet: bool = False) -> Path:
    """Write a bitsandbytes 8-bit copy of ``model`` (default folder ``MODEL-bnb8``),
    checked against the fp32 model on ``check`` dev sentences on ``device``."""
    from safetensors.torch import save_file

    if not threshold >= 0:
        raise DistillError(f"--threshold must be >= 0 (0 disables the 16-bit outlier path), got {threshold}")
    out = output_folder(model, out, "bnb8")
    source = load_source(model)
    sentences = check_sentences(source.meta, dataset, check) if check else None
    device = resolve_device(device)
    _bnb()
    qmodel = copy.deepcopy(source)
    layers = replace_linears(qmodel, threshold)
    if not layers:
        raise DistillError(f"{model}: has no Linear layers to quantize")
    qmodel = to_device(qmodel, device).eval()
    meta = derived_meta(source, model, "bnb8", {"threshold": threshold, "device": device,
                                                 "backend": "bitsandbytes Linear8bitLt (LLM.int8)"})
    meta["quantized_layers"] = len(layers)
    if sentences:
        meta["check"] = compare(source, Bnb8Tagger(qmodel, meta), sentences)
    state = {k: v.detach().cpu().contiguous() for k, v in qmodel.state_dict().items()}
    write_model_folder(out, kind=Bnb8Tagger.kind, source=source, meta=meta,
                       write_weights=lambda tmp: save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"}))
    if not quiet:
        print(f"bnb8 model ({len(layers)} Linear8bitLt layers, {device}) saved to {out}{describe_check(meta.get('check'))}")
    return out
