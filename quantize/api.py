"""One entry point for every quantization method: :func:`quantize`.

``QUANTIZE_METHODS`` maps a method name to the function that writes its model folder
(each takes ``model``, ``out`` and its own keyword options and returns the folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from distill.errors import DistillError
from quantize.bnb import quantize_bnb8
from quantize.fp16 import quantize_fp16
from quantize.int8 import quantize_int8
from quantize.onnx_export import export_onnx, export_onnx_int8

QUANTIZE_METHODS: dict[str, Callable[..., Path]] = {
    "int8": quantize_int8,
    "onnx": export_onnx,
    "onnx-int8": export_onnx_int8,
    "bnb8": quantize_bnb8,
    "fp16": quantize_fp16,
}


def quantize(*, method: str, model: Path, out: Path | None = None, **options: Any) -> Path:
    """Compress the fp32 model folder ``model`` with ``method`` into ``out`` (default
    ``MODEL-<method>`` beside it); returns the new model folder."""
    import inspect

    if method not in QUANTIZE_METHODS:
        raise DistillError(f"unknown quantization method {method!r}; expected one of {', '.join(QUANTIZE_METHODS)}")
    fn = QUANTIZE_METHODS[method]
    accepted = set(inspect.signature(fn).parameters) - {"model", "out"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DistillError(f"quantize {method}: unknown option(s) {', '.join(unknown)}; "
                           f"it takes {', '.join(sorted(accepted))}")
    return fn(model=Path(model), out=None if out is None else Path(out), **options)
