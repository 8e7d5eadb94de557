"""Benchmark one model folder in a fresh process: ``python -m distill.bench MODEL --test FILE``.

The report starts one such process per model so no model profits from another's warm
caches, and measures the process's peak resident memory from outside. The process
loads the model, warms it up, times batch-1 latency sentence by sentence and batch-32
throughput over the whole test file (end to end: tokens in, tags out, tokenization
included), scores the batch-32 predictions (entity-level seqeval) and prints one JSON
line. Only the inference interface every model offers is used (``encode_words``,
``build_feature``, ``collate``, ``decode_batch`` through :func:`distill.evaluate.predict_ids`).
A text classifier (``--task classify``: a test file of ``texts`` and ``labels``) is measured
the same way from text to class probabilities (:func:`run_bench_classifier`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# Files in a model folder that hold weights (what "size on disk" counts).
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx.data", ".onnx_data", ".data", ".bin", ".pt", ".pth")
LIBRARIES = ("torch", "transformers", "tokenizers", "onnxruntime", "onnx", "bitsandbytes", "seqeval",
             "safetensors", "numpy", "matplotlib")


def weight_files(folder: Path) -> list[Path]:
    """The weight files directly in ``folder`` (tokenizer, vocabulary and subfolders excluded)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def size_on_disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in weight_files(folder)) / 2**20


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


# --- the parent's side: launching a benchmark process and describing the machine ---


def default_threads() -> int:
    """The CPU's cores (physical when known), as torch uses by default."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def machine_info(threads: int) -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001
        gpu = None
    return {"cpu": cpu, "cores": psutil.cpu_count(logical=False), "logical_cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "threads": threads, "gpu": gpu,
            "platform": platform.platform(), "python": platform.python_version()}


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _peak_rss_mb(pid: int) -> float | None:
    """The kernel's high-water mark of a live process's resident memory (VmHWM), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_child(args: list[str], threads: int, hide_gpu: bool) -> tuple[dict[str, Any], float | None]:
    """Run ``python -m distill.bench ARGS`` in a fresh process; its JSON result and its peak RSS (MB).

    The child prints its result, then waits for its stdin to close; meanwhile the parent
    reads the child's peak resident memory (VmHWM) from /proc. (The rusage of a finished
    child is no good here: on Linux its ru_maxrss starts at the parent's own peak.)
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), DISTILL_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    if hide_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    result, peak_mb = None, None
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "distill.bench", *args, "--hold"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            for line in proc.stdout:
                if line.startswith(b"{"):
                    result = json.loads(line)
                    peak_mb = _peak_rss_mb(proc.pid)
                    break
            proc.stdin.close()
            proc.stdout.read()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if result is not None:
            return result, peak_mb
        err.seek(0)
        tail = [l for l in err.read().decode("utf-8", "replace").splitlines() if l.strip()][-1:]
        return {"error": f"benchmark process exited with status {proc.returncode}"
                         + (f": {tail[0][:200]}" if tail else "")}, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.bench", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model folder")
    parser.add_argument("--test", required=True, help="JSON file with 'tokens' and 'tags' lists (--task classify: "
                        "'texts' and 'labels')")
    parser.add_argument("--task", default="tag", choices=("tag", "classify"), help="the run's task")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--latency-sentences", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--predictions", help="write the predicted tags (JSON) here")
    parser.add_argument("--baseline", action="store_true", help="measure an empty process (no model)")
    parser.add_argument("--hold", action="store_true", help="after the result, wait for stdin to close")
    args = parser.parse_args(argv)

    from distill.cli.common import quiet_libraries
    from distill.errors import DistillError

    quiet_libraries()
    try:
        classify = args.task == "classify"
        if args.baseline:
            result = run_baseline(test_file=args.test, threads=args.threads, task=args.task)
        elif not args.model:
            raise DistillError("give a model folder (or --baseline)")
        else:
            result = (run_bench_classifier if classify else run_bench)(
                model_dir=args.model, test_file=args.test, threads=args.threads,
                latency_sentences=args.latency_sentences, batch_size=args.batch_size,
                warmup=args.warmup, device=args.device, predictions=args.predictions)
    except DistillError as e:
        result = {"error": str(e)}
    except Exception as e:  # noqa: BLE001 — the report shows one line per failed model
        if os.environ.get("DISTILL_DEBUG") == "1":
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        result = {"error": f"{type(e).__name__}: {first}"}
    print(json.dumps(result), flush=True)
    if args.hold:  # the parent reads this process's peak memory now
        sys.stdin.read()
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
