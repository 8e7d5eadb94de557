"""Shared helpers of the benchmark scripts: machine facts, interleaved timing, tables.

Timings on a shared machine are noisy, so every comparison is measured side by side:
each round runs every contender once (in turn, the order rotating each round) and
the reported time is the median over rounds.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from importlib import metadata
from typing import Callable, Sequence


def machine(packages: Sequence[str] = ()) -> list[str]:
    """Lines describing the CPU, the cores this process may use, threads and versions."""
    import torch

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    versions = [f"python {platform.python_version()}"]
    for name in ("torch", *packages):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return [
        f"machine: {cpu}, {cores} cores usable, load average {load}",
        f"threads: torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}",
        "versions: " + ", ".join(versions),
    ]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int, calls: int = 1,
                warmup: int = 2, clock: str = "wall") -> dict[str, float]:
    """Median seconds per call of each contender, measured in alternating rounds.

    Each round times ``calls`` calls of every contender in turn (the order rotates
    from round to round), with the garbage collector off. ``clock``: ``wall``
    (elapsed time) or ``cpu`` (this process's CPU time: on a machine other jobs
    share, it leaves out the time the process waited for a core). The minima are
    kept in ``interleaved.minima`` (the last call's), for the record.
    """
    now = CLOCKS[clock]
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                fn = contenders[name]
                t0 = now()
                for _ in range(calls):
                    fn()
                samples[name].append((now() - t0) / calls)
    finally:
        if was_enabled:
            gc.enable()
    interleaved.minima = {n: min(s) for n, s in samples.items()}  # type: ignore[attr-defined]
    return {n: statistics.median(s) for n, s in samples.items()}


class Table:
    """Rows of ``what | ours | reference | ratio | target | pass`` printed as aligned text."""

    HEADER = ("benchmark", "ours", "reference", "ratio", "target", "result")

    def __init__(self, title: str):
        self.title = title
        self.rows: list[tuple[str, ...]] = []
        self.failed: list[str] = []

    def add(self, what: str, ours: str, reference: str, ratio: float | None, target: str, ok: bool | None) -> None:
        result = "-" if ok is None else ("pass" if ok else "FAIL")
        if ok is False:
            self.failed.append(what)
        self.rows.append((what, ours, reference, "-" if ratio is None else f"{ratio:.2f}x", target, result))

    def speed(self, what: str, ours_s: float, ref_s: float, min_ratio: float | None, unit: str = "ms") -> None:
        """A timing row; ratio = reference time / our time (higher is better for us)."""
        scale = {"ms": 1e3, "s": 1.0, "us": 1e6}[unit]
        ratio = ref_s / ours_s
        ok = None if min_ratio is None else ratio >= min_ratio
        target = "-" if min_ratio is None else f">= {min_ratio:g}x"
        self.add(what, f"{ours_s * scale:.3f} {unit}", f"{ref_s * scale:.3f} {unit}", ratio, target, ok)

    def render(self) -> str:
        rows = [self.HEADER, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]
        line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        out = [self.title, line(rows[0]), "  ".join("-" * w for w in widths)]
        return "\n".join(out + [line(r) for r in rows[1:]])


def finish(table: Table, *header: str) -> int:
    """Print the header lines and the table; the exit code: 1 when a target was missed."""
    print("\n".join(header))
    print(table.render())
    if table.failed:
        print(f"missed: {', '.join(table.failed)}")
        return 1
    return 0
