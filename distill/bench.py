"""Benchmark one model folder in a fresh process: ``python -m distill.bench MODEL --test FILE``.

The report starts one such process per model so no model profits from another's warm
caches, and measures the process's peak resident memory from outside. This module is
both ends of that: the process's entry point (:func:`main`: one JSON line of results)
and the parent's side (:func:`run_child`, the machine and library versions, a folder's
size on disk). What the process measures, and how: :mod:`distill.bench_measure`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.bench_measure import run_baseline, run_bench, run_bench_classifier

# Files in a model folder that hold weights (what "size on disk" counts).
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx.data", ".onnx_data", ".data", ".bin", ".pt", ".pth")
LIBRARIES = ("torch", "transformers", "tokenizers", "onnxruntime", "onnx", "bitsandbytes", "seqeval",
             "safetensors", "numpy", "matplotlib")


def weight_files(folder: Path) -> list[Path]:
    """The weight files directly in ``folder`` (tokenizer, vocabulary and subfolders excluded)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def size_on_disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in weight_files(folder)) / 2**20


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
