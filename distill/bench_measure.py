"""What one benchmark process measures, in that process (:mod:`distill.bench` starts it).

The process loads the model, warms it up, times batch-1 latency sentence by sentence
and batch-32 throughput over the whole test file (end to end: tokens in, tags out,
tokenization included), scores the batch-32 predictions (entity-level seqeval) and
prints one JSON line (:func:`distill.bench.main`). Only the inference interface every
model offers is used (``encode_words``, ``build_feature``, ``collate``, ``decode_batch``
through :func:`distill.evaluate.predict_ids`). A text classifier (``--task classify``: a
test file of ``texts`` and ``labels``) is measured the same way from text to class
probabilities (:func:`run_bench_classifier`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def count_parameters(model: Any, folder: str | Path) -> tuple[int, str]:
    """Number of weights in a loaded model and a note saying how it was counted.

    PyTorch modules: the elements of every parameter, plus the weights torch dynamic
    int8 keeps packed outside ``parameters()`` (unpacked to count them). ONNX files in
    the folder: the elements of every graph initializer, read from the tensor shapes
    (this includes quantization scales and zero points and folded constants, so it is
    approximate). The note is empty when the count is exact.
    """
    import torch

    total, notes = 0, []
    if isinstance(model, torch.nn.Module):
        seen: set[int] = set()
        for p in model.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        packed, unknown = _packed_weights(model)
        total += packed
        if packed:
            notes.append("includes int8 weights unpacked from torch dynamic-quantized modules")
        if unknown:
            notes.append(f"approximate: could not unpack {unknown} quantized module(s)")
    onnx_files = sorted(Path(folder).glob("*.onnx"))
    if onnx_files:
        import onnx

        for f in onnx_files:
            graph = onnx.load(str(f), load_external_data=False).graph
            total += sum(math.prod(t.dims) for t in graph.initializer)
            total += sum(math.prod(t.values.dims) for t in graph.sparse_initializer)
        notes.append("approximate: ONNX initializer elements, including quantization scales/zero points and constants")
    return int(total), "; ".join(notes)


def _packed_weights(model) -> tuple[int, int]:
    """Elements of weights packed by torch dynamic quantization, and modules that could not be unpacked."""
    import torch

    total, unknown = 0, 0
    for m in model.modules():
        if "quantized" not in type(m).__module__ or type(m).__name__.endswith("PackedParams"):
            continue  # packed-params holders are counted through the module that owns them
        try:
            if callable(getattr(m, "_weight_bias", None)):
                wb = m._weight_bias()  # Linear: (weight, bias); LSTM/GRU: {"weight": {...}, "bias": {...}}
                tensors = [t for part in wb.values() for t in part.values()] if isinstance(wb, dict) else list(wb)
            elif callable(getattr(m, "weight", None)):  # quantized Embedding and friends
                tensors = [m.weight()]
            else:
                continue
            total += sum(t.numel() for t in tensors if torch.is_tensor(t))
        except Exception:  # noqa: BLE001 — best effort: counting must not fail the benchmark
            unknown += 1
    return total, unknown


def pin_onnxruntime_threads(threads: int) -> None:
    """Make every ONNX Runtime session created from now on use ``threads`` intra-op threads.

    Model classes create their own sessions; wrapping the class is the one place that
    holds for all of them, so ONNX rows run with the same thread count as PyTorch rows.
    """
    import onnxruntime as ort

    base = ort.InferenceSession
    if getattr(base, "_distill_threads", None) == threads:
        return

    class PinnedSession(base):  # type: ignore[misc, valid-type]
        _distill_threads = threads

        def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
            opts = sess_options if sess_options is not None else ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            super().__init__(path_or_bytes, opts, *args, **kwargs)

    ort.InferenceSession = PinnedSession


def _model_device(model) -> str:
    import torch

    if isinstance(model, torch.nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            return t.device.type
        return "cpu"
    session = getattr(model, "session", None)
    providers = session.get_providers() if session is not None and hasattr(session, "get_providers") else []
    return "cuda" if any("CUDA" in p for p in providers) else "cpu"


def _place(model, device: str) -> str | None:
    """Put a model on ``device`` and route its batches there; a reason string when it cannot be."""
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        if not isinstance(model, torch.nn.Module):
            if _model_device(model) != "cuda":
                return f"{type(model).__name__} runs on CPU only (no CUDA execution provider)"
            return None
        if any("quantized" in type(m).__module__ for m in model.modules()):
            return "torch dynamic int8 runs on CPU only"
        try:
            model.to("cuda")
        except Exception as e:  # noqa: BLE001
            return f"cannot move to the GPU: {str(e).splitlines()[0][:120]}"
    actual = _model_device(model)
    if actual != device:
        return f"the model loads on {actual}, not {device}"
    if actual != "cpu" and isinstance(model, torch.nn.Module):
        original = model.collate

        def collate(features):
            batch = original(features)
            return {k: v.to(actual) if torch.is_tensor(v) else v for k, v in batch.items()}

        model.collate = collate
    return None


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency_subset(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``n`` sentences (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]


def run_bench(*, model_dir: str | Path, test_file: str | Path, threads: int, latency_sentences: int = 500,
              batch_size: int = 32, warmup: int = 10, device: str = "cpu",
              predictions: str | Path | None = None) -> dict[str, Any]:
    """Benchmark one model on the test file (JSON with ``tokens`` and ``tags``); returns the result dict."""
    from distill.evaluate import entity_metrics, predict_ids
    from distill.modeling import read_meta

    def score(model, gold, pred_ids):
        labels = model.labels
        pred = [[labels[i] for i in row] for row in pred_ids]
        m = entity_metrics(gold, pred)
        return pred, {"precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "support": m["support"],
                      "per_type": m["per_type"]}

    folder = Path(model_dir)
    return _measure(folder, read_meta(folder), test_file, ("tokens", "tags"), predict_ids, score,
                    counted=("sentences", "tokens"), skip_empty=True, threads=threads,
                    latency_sentences=latency_sentences, batch_size=batch_size, warmup=warmup, device=device,
                    predictions=predictions)


def run_bench_classifier(*, model_dir: str | Path, test_file: str | Path, threads: int, latency_sentences: int = 500,
                         batch_size: int = 32, warmup: int = 10, device: str = "cpu",
                         predictions: str | Path | None = None) -> dict[str, Any]:
    """Benchmark one text classifier on the test file (JSON with ``texts`` and ``labels``), as
    :func:`run_bench` does a tagger: warm-up, batch-1 latency text by text, throughput at
    ``batch_size`` over every text, end to end from text to class probabilities
    (:func:`distill.classify.predict_proba`: tokenization included); accuracy, macro-F1 and
    per-class P/R/F1 of those batched predictions (:func:`distill.classify.classification_metrics`)."""
    from distill.classify import classification_metrics, predict_proba
    from distill.errors import DistillError
    from distill.modeling import read_meta

    def score(model, gold, proba):  # proba: (N, C)
        labels = list(model.labels)
        pred = [labels[i] for i in proba.argmax(1).tolist()]
        m = classification_metrics(gold, pred, labels)
        return pred, {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "f1": m["macro_f1"],
                      "per_class": m["per_class"]}

    folder = Path(model_dir)
    info = read_meta(folder)
    if (info.get("meta") or {}).get("task") != "classify":
        raise DistillError(f"{folder}: a tagger, not a text classifier (meta task 'classify')")
    return _measure(folder, info, test_file, ("texts", "labels"), predict_proba, score, counted=("texts", "chars"),
                    skip_empty=False, threads=threads, latency_sentences=latency_sentences, batch_size=batch_size,
                    warmup=warmup, device=device, predictions=predictions)


def _measure(folder: Path, info: dict[str, Any], test_file: str | Path, keys: tuple[str, str], predict, score, *,
             counted: tuple[str, str], skip_empty: bool, threads: int, latency_sentences: int, batch_size: int,
             warmup: int, device: str, predictions: str | Path | None) -> dict[str, Any]:
    """What :func:`run_bench` and :func:`run_bench_classifier` share: load the model in this process
    on ``threads`` threads and ``device``; warm up (single items, one full batch); time
    ``predict(model, items, batch_size=...)`` item by item over ``latency_sentences`` items
    spread over the test set (empty ones left out with ``skip_empty``), then over every item at
    ``batch_size``; ``score(model, gold, output)`` -> (predictions, scores) of that batched run.

    ``keys``: the test file's inputs and gold labels; ``counted``: what an item is and what
    its ``len`` counts, naming ``test_<item>``, ``test_<unit>`` and ``<unit>_per_second``.
    """
    import torch

    torch.set_num_threads(threads)
    from distill.modeling import load_model

    if any(folder.glob("*.onnx")):
        pin_onnxruntime_threads(threads)
    test = json.loads(Path(test_file).read_text(encoding="utf-8"))
    items, gold = test[keys[0]], test[keys[1]]

    t0 = time.perf_counter()
    model = load_model(folder)
    result: dict[str, Any] = {"model": str(folder), "kind": info["kind"], "requested_device": device,
                              "threads": threads, "load_seconds": round(time.perf_counter() - t0, 3)}
    reason = _place(model, device)
    if reason is not None:
        result.update(skipped=reason)
        return result
    result["device"] = _model_device(model)
    cuda = result["device"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    with torch.inference_mode():
        for item in items[:warmup]:  # warm-up: single items and one full batch, untimed
            predict(model, [item], batch_size=1)
        predict(model, items[:batch_size], batch_size=batch_size)
        sync()
        times = []
        for i in latency_subset(len(items), latency_sentences):
            if skip_empty and not len(items[i]):
                continue
            t = time.perf_counter()
            predict(model, [items[i]], batch_size=1)
            sync()
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        output = predict(model, items, batch_size=batch_size)
        sync()
        seconds = time.perf_counter() - t

    pred, scores = score(model, gold, output)
    item, unit = counted
    n_units = sum(len(x) for x in items)
    params, params_note = count_parameters(model, folder)
    result.update(
        **scores, **{f"test_{item}": len(items), f"test_{unit}": n_units},
        latency_sentences=len(times), warmup_sentences=min(warmup, len(items)),
        latency_ms_median=_percentile(times, 50) * 1000, latency_ms_p90=_percentile(times, 90) * 1000,
        latency_ms_mean=sum(times) / max(1, len(times)) * 1000, throughput_batch_size=batch_size,
        throughput=len(items) / seconds, **{f"{unit}_per_second": n_units / seconds}, throughput_seconds=seconds,
        parameters=params, parameters_note=params_note, torch_threads=torch.get_num_threads(),
    )
    if cuda:
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu_name"] = torch.cuda.get_device_name()
    if predictions is not None:
        Path(predictions).write_text(json.dumps(pred, ensure_ascii=False), encoding="utf-8")
    return result


def run_baseline(*, test_file: str | Path, threads: int, task: str = "tag") -> dict[str, Any]:
    """What a bench process holds before any model: Python, torch, the transformers model
    and tokenizer machinery, safetensors, the test data, and the scorer run once (seqeval;
    for ``task`` "classify", the classification metrics on a file of texts and labels)."""
    import importlib

    import torch

    torch.set_num_threads(threads)
    for module in ("transformers.modeling_utils", "transformers.tokenization_utils_fast", "safetensors.torch"):
        importlib.import_module(module)
    test = json.loads(Path(test_file).read_text(encoding="utf-8"))
    if task == "classify":
        from distill.classify import classification_metrics

        classification_metrics(test["labels"], test["labels"], sorted(set(test["labels"])))
        return {"baseline": True, "test_texts": len(test["texts"]), "threads": threads}
    from distill.evaluate import entity_metrics

    entity_metrics(test["tags"], test["tags"])
    return {"baseline": True, "test_sentences": len(test["tokens"]), "threads": threads}
