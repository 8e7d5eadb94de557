"""``distill quantize int8``: PyTorch dynamic int8 quantization for CPU inference.

The weights of every ``nn.Linear`` (and of the LSTM of BiLSTM models) become int8
(per output channel for Linear layers, per tensor for LSTM gates, the only kind the
quantized LSTM takes); activations are quantized per batch at run time (fbgemm
kernels). Embeddings, LayerNorm and the CRF stay fp32.

The folder holds the int8 weights themselves as plain safetensors tensors (int8
values, scales, zero points), so loading needs no fp32 weights: the architecture is
rebuilt from the config, quantized as a skeleton, and the stored weights are packed
into it.

torch.ao rather than torchao's ``quantize_``: torch 2.13 deprecates eager
``quantize_dynamic`` in favour of torchao, but torchao's int8 paths are slower on CPU
for these models without ``torch.compile`` (measured side by side by
``benchmarks/compression_probe.py``: MiniLM-L6 BERT-CRF, 2 threads, torch.ao 1.7x
faster than fp32, torchao dynamic int8 3.4x slower than fp32, weight-only 1.5x
slower), torchao has no LSTM path, and with torchao installed transformers imports
it on every model build (printing library load errors on CPU builds). The lead can
revisit when torchao gains fast eager CPU kernels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import DistillError
from quantize import (CompressedTagger, build_skeleton, check_sentences, compare, derived_meta, describe_check, load_source,
                      output_folder, read_weights, write_model_folder)

WEIGHTS = "model.int8.safetensors"
SCHEMES = ("per-channel", "per-tensor")


def _qconfigs(scheme: str, lstm: bool) -> dict:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    spec: dict = {nn.Linear: per_channel_dynamic_qconfig if scheme == "per-channel" else default_dynamic_qconfig}
    if lstm:
        spec[nn.LSTM] = default_dynamic_qconfig
    return spec


def quantize_modules(model: nn.Module, scheme: str = "per-channel", lstm: bool = True) -> nn.Module:
    """Replace Linear (and LSTM) modules of ``model`` in place by dynamic int8 ones."""
    from torch.ao.quantization import quantize_dynamic

    if scheme not in SCHEMES:
        raise DistillError(f"unknown int8 scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    with warnings.catch_warnings():  # torch.ao's deprecation notices: see the module docstring
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, _qconfigs(scheme, lstm), dtype=torch.qint8, inplace=True)


def quantized_layers(model: nn.Module) -> dict[str, str]:
    """Name -> type of every dynamically quantized module."""
    import torch.ao.nn.quantized.dynamic as nnqd

    return {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, (nnqd.Linear, nnqd.LSTM))}


# ---------------------------------------------------------------------------
# int8 weights <-> plain tensors


def _put_qtensor(out: dict[str, Tensor], name: str, q: Tensor) -> None:
    out[f"{name}.int8"] = q.int_repr().contiguous()
    if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        out[f"{name}.scale"] = q.q_per_channel_scales().contiguous()
        out[f"{name}.zero_point"] = q.q_per_channel_zero_points().contiguous()
        out[f"{name}.axis"] = torch.tensor([q.q_per_channel_axis()])
    else:
        out[f"{name}.scale"] = torch.tensor([q.q_scale()], dtype=torch.float64)
        out[f"{name}.zero_point"] = torch.tensor([q.q_zero_point()])
        out[f"{name}.axis"] = torch.tensor([-1])


def _get_qtensor(tensors: dict[str, Tensor], name: str) -> Tensor:
    try:
        values, scale, zero, axis = (tensors[f"{name}.{k}"] for k in ("int8", "scale", "zero_point", "axis"))
    except KeyError as e:
        raise DistillError(f"int8 weights file lacks {e.args[0]}; the folder is incomplete or from another model") from None
    if int(axis[0]) < 0:
        return torch._make_per_tensor_quantized_tensor(values, float(scale[0]), int(zero[0]))
    return torch._make_per_channel_quantized_tensor(values, scale, zero, int(axis[0]))


def quantized_state(model: nn.Module) -> dict[str, Tensor]:
    """Every weight of a dynamically quantized model as plain tensors (safetensors-ready)."""
    import torch.ao.nn.quantized.dynamic as nnqd

    out: dict[str, Tensor] = {}
    quantized = quantized_layers(model)
    for name, m in model.named_modules():
        if isinstance(m, nnqd.Linear):
            w, b = m._weight_bias()
            _put_qtensor(out, f"{name}.weight", w)
            if b is not None:
                out[f"{name}.bias"] = b.detach().contiguous()
        elif isinstance(m, nnqd.LSTM):
            wb = m._weight_bias()
            for key, w in wb["weight"].items():
                _put_qtensor(out, f"{name}.{key}", w)
            for key, b in wb["bias"].items():
                out[f"{name}.{key}"] = b.detach().contiguous()
    for key, value in [*model.named_parameters(), *model.named_buffers()]:
        if not any(key.startswith(q + ".") for q in quantized):
            out[key] = value.detach().contiguous()
    return out


def load_quantized_state(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Pack stored int8 weights into a quantized skeleton (the inverse of :func:`quantized_state`)."""
    import torch.ao.nn.quantized.dynamic as nnqd

    quantized = quantized_layers(model)
    for name, m in model.named_modules():
        if isinstance(m, nnqd.Linear):
            m.set_weight_bias(_get_qtensor(tensors, f"{name}.weight"), tensors.get(f"{name}.bias"))
        elif isinstance(m, nnqd.LSTM):
            wb: dict[str, Tensor] = {}
            for layer in range(m.num_layers):
                for suffix in ("", "_reverse") if m.bidirectional else ("",):
                    for part in ("ih", "hh"):
                        wb[f"weight_{part}_l{layer}{suffix}"] = _get_qtensor(tensors, f"{name}.weight_{part}_l{layer}{suffix}")
                        wb[f"bias_{part}_l{layer}{suffix}"] = tensors[f"{name}.bias_{part}_l{layer}{suffix}"]
            m.set_weight_bias(wb)
    # The remaining fp32 tensors go straight into their parameters and buffers
    # (load_state_dict would ask the quantized modules for activation scales they never use).
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    targets = {k: v for k, v in targets.items() if not any(k.startswith(q + ".") for q in quantized)}
    plain = {k: v for k, v in tensors.items() if not any(k.startswith(q + ".") for q in quantized)}
    if set(plain) != set(targets):
        missing, extra = sorted(set(targets) - set(plain)), sorted(set(plain) - set(targets))
        raise DistillError(f"int8 weights do not fit the model (missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for key, value in plain.items():
            if targets[key].shape != value.shape:
                raise DistillError(f"int8 weights do not fit the model: {key} is {tuple(value.shape)}, "
                                   f"expected {tuple(targets[key].shape)}")
            targets[key].copy_(value)


# ---------------------------------------------------------------------------


class Int8Tagger(CompressedTagger):
    """A tagger with dynamic int8 Linear/LSTM layers (CPU)."""

    kind = "torch-int8"

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any]) -> "Int8Tagger":
        from safetensors.torch import load_file

        params = info["meta"].get("params", {})
        inner = build_skeleton(folder, info, "cpu")
        quantize_modules(inner, params.get("scheme", "per-channel"), params.get("lstm", True))
        load_quantized_state(inner, read_weights(folder / WEIGHTS, "int8", load_file))
        return cls(inner.eval(), info["meta"])


def quantize_int8(*, model: Path, out: Path | None = None, scheme: str = "per-channel", lstm: bool = True,
                  dataset: dict | None = None, check: int = 200, quiet: bool = False) -> Path:
    """Write a dynamic int8 copy of ``model`` (default folder ``MODEL-int8``), checked
    against the fp32 model on ``check`` dev sentences (max abs emission diff and tag
    agreement recorded in its meta)."""
    import copy

    from safetensors.torch import save_file

    if scheme not in SCHEMES:
        raise DistillError(f"unknown int8 scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    out = output_folder(model, out, "int8")
    source = load_source(model)
    sentences = check_sentences(source.meta, dataset, check) if check else None
    qmodel = quantize_modules(copy.deepcopy(source), scheme, lstm)
    layers = quantized_layers(qmodel)
    if not layers:
        raise DistillError(f"{model}: has no Linear or LSTM layers to quantize")
    meta = derived_meta(source, model, "int8", {"scheme": scheme, "lstm": lstm, "backend": "torch.ao dynamic (fbgemm)"})
    meta["quantized_layers"] = len(layers)
    if sentences:
        meta["check"] = compare(source, qmodel, sentences)
    state = quantized_state(qmodel)
    write_model_folder(out, kind=Int8Tagger.kind, source=source, meta=meta,
                       write_weights=lambda tmp: save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"}))
    if not quiet:
        _report(out, meta)
    return out


def _report(out: Path, meta: dict) -> None:
    print(f"int8 model ({meta['quantized_layers']} layers quantized) saved to {out}{describe_check(meta.get('check'))}")
