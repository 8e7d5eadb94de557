"""Writing a report folder, for the tagging and the classification report alike: report.md
(:func:`markdown_page`), report.csv (:func:`table_csv`) and the plots (:func:`render_folder`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from distill.report_steps import Entry

PRF = ("precision", "recall", "f1")
NO_TEACHER = "none (no model folder has meta role 'teacher'), so deltas and speedups are n/a"


def fmt(value: Any, how: str) -> str:
    """One table cell; ``n/a`` for a value that does not apply (e.g. no teacher to compare with)."""
    if value is None:
        return "n/a"
    return {
        "text": lambda v: str(v), "f4": lambda v: f"{v:.4f}", "f2": lambda v: f"{v:.2f}", "f1": lambda v: f"{v:.1f}",
        "f0": lambda v: f"{v:.0f}", "int": lambda v: f"{int(v):,}", "signed": lambda v: f"{v:+.4f}",
        "x": lambda v: f"{v:.2f}x",
    }[how](value)


def md_table(columns: Sequence[tuple[str, str, str]], rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if how == "text" else "---:" for _, _, how in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), how).replace("|", "\\|") for k, _, how in columns) + " |")
    return "\n".join(lines)


def table_csv(report: dict[str, Any], columns: Sequence[tuple[str, str, str]], groups: Sequence[str], per: str,
              metrics: Sequence[str]) -> str:
    """One CSV row per model measured on CPU (and its GPU numbers when measured): full precision.
    ``columns``: the main table's; then P/R/F1 of each of ``groups`` (entity types or classes,
    the rows' ``per``); on a GPU, ``metrics`` and the speed."""
    keys = [k for k, _, _ in columns] + ["role", "peak_rss_over_baseline_mb", "latency_sentences", "parameters_note"]
    keys += [f"{g}_{m}" for g in groups for m in PRF]
    gpu = {r["name"]: r for r in report["gpu_models"]}
    gpu_keys = (*metrics, "latency_ms_median", "latency_ms_p90", "throughput")
    if report["gpu_measured"]:
        keys += [f"gpu_{k}" for k in gpu_keys] + ["gpu_peak_mb"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in report["models"]:
        row = {k: r.get(k) for k in keys}
        for g in groups:
            for m in PRF:
                row[f"{g}_{m}"] = r[per].get(g, {}).get(m)
        if r["name"] in gpu:
            g = gpu[r["name"]]
            row.update({f"gpu_{k}": g[k] for k in gpu_keys}, gpu_peak_mb=g.get("gpu_peak_mb"))
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def training_logs(entries: Sequence[Entry]) -> dict[str, list[dict[str, Any]]]:
    """Per trained model, the epochs of its train_log.jsonl (copies of another model's log are left out)."""
    curves, seen = {}, set()
    for e in entries:
        log = e.folder / "train_log.jsonl"
        if e.error is not None or not log.exists() or "source" in (e.meta.get("params") or {}):
            continue
        text = log.read_text(encoding="utf-8")
        if text in seen:
            continue
        seen.add(text)
        records = []
        for line in text.splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and {"epoch", "loss", "dev_f1"} <= set(r):
                records.append(r)
        if records:
            curves[e.name] = records
    return curves


def render_folder(report: dict[str, Any], folder: Path, *, entries: Sequence[Entry], teacher: Entry | None,
                  confusion: tuple[Sequence, Sequence] | None, metric_plots: dict[str, dict[str, str]],
                  dev_metric: str, unit: str, units: str, train_counts: dict[str, int], train_title: str,
                  count_unit: str, csv_text: Callable[[dict], str], markdown: Callable[[dict], str]) -> None:
    """Write report.md, report.csv and plots/*.png into ``folder``; record the plots in ``report``.

    ``metric_plots``: plots/KEY.png, a score against latency (:func:`distill.plots.f1_vs_latency`'s
    options); ``confusion``: the gold and the teacher's label rows of the test set; ``unit``,
    ``units``: one label and its plural in titles ("tag", "tags"); ``train_counts``: the labels
    counted in the training data (``count_unit``), plotted under ``train_title``."""
    from distill import plots
    from distill.fileio import write_text

    plot_dir = folder / "plots"
    plot_dir.mkdir()
    figures: dict[str, str] = {}
    if report["models"]:
        for key, options in metric_plots.items():
            plots.f1_vs_latency(report["models"], plot_dir / f"{key}.png", **options)
            figures[key] = f"plots/{key}.png"
    curves = training_logs(entries)
    plots.training_curves(curves, plot_dir / "training_curves.png", dev_metric=dev_metric)
    figures["training_curves"] = "plots/training_curves.png"
    if teacher is not None and confusion is not None:
        labels = teacher.info["labels"]
        counts = plots.confusion_counts(*confusion, labels)
        plots.confusion_matrix(counts, labels, f"teacher {teacher.name!r}: {units} on the test set, rows normalised",
                               plot_dir / "confusion_teacher.png", unit=unit)
        figures["confusion_teacher"] = "plots/confusion_teacher.png"
        report["teacher_confusion"] = {"labels": labels, "counts": counts}
    plots.label_distribution(train_counts, train_title, plot_dir / "label_distribution.png", unit=count_unit)
    figures["label_distribution"] = "plots/label_distribution.png"
    report["plots"] = figures
    report["training_curves"] = sorted(curves)
    write_text(folder / "report.csv", csv_text(report))
    write_text(folder / "report.md", markdown(report))


def per_group_table(rows: Sequence[dict[str, Any]], groups: Sequence[str], per: str) -> str:
    """Precision, recall and F1 of each of ``groups`` (entity types or classes: the rows' ``per``), a row per model."""
    cols = [("name", "model", "text")] + [(f"{g}:{k}", f"{g} {k[0].upper() if k != 'f1' else 'F1'}", "f4")
                                          for g in groups for k in PRF]
    flat = [{"name": r["name"], **{f"{g}:{k}": r[per].get(g, {}).get(k) for g in groups for k in PRF}} for r in rows]
    return md_table(cols, flat)


def markdown_page(report: dict[str, Any], *, title: str, test_set: str, bench: str, method: str,
                  columns: Sequence[tuple[str, str, str]], per_group: Sequence[str],
                  gpu_columns: Sequence[tuple[str, str, str]], captions: dict[str, str]) -> str:
    """report.md: the header (``test_set``: the test set's size and fingerprint), how it was
    measured (``bench``: the bench command; ``method``: what is timed and scored), the models
    (``columns``), the lines of a per-type or per-class section, the GPU table, notes and plots."""
    m, d, how = report["machine"], report["dataset"], report["method"]
    libs = ", ".join(f"{k} {v}" for k, v in report["libraries"].items())
    lines = [
        f"# {title}", "",
        f"- **Date:** {report['date']}",
        f"- **Command:** `{report['command']}`",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores ({m['logical_cpus']} logical CPUs), {m['memory_gb']} GiB RAM; "
        f"**{how['threads']} threads** for every model; GPU: {m['gpu'] or 'none'}",
        f"- **Software:** Python {m['python']} on {m['platform']}; {libs}",
        f"- **Dataset:** {d['name']} (`{json.dumps(d['kwargs'], ensure_ascii=False)}`), fingerprint `{d['fingerprint']}`; "
        f"test set: {test_set}",
        f"- **Teacher:** {report['teacher'] or NO_TEACHER}",
        "", "## How it was measured", "",
        f"Each model ran in its own fresh Python process (`{bench}`), one after another, with "
        f"torch.set_num_threads({how['threads']}), ONNX Runtime intra-op threads = {how['threads']} and "
        f"OMP/MKL threads = {how['threads']}. {method} **Peak RSS** is the peak resident memory of the model's "
        f"process (the kernel's high-water mark VmHWM, read from outside when the process has loaded the model and "
        f"run everything); a process that loads Python, torch, transformers and the test data but no model peaks at "
        f"{fmt(how['baseline_rss_mb'], 'f0')} MB. **Size** counts the weight files in the model folder (safetensors, "
        f"ONNX and their data files; tokenizer and vocabulary files excluded).",
        "",
    ]
    if report["gpu_measured"]:
        lines.append("GPU rows were measured the same way on CUDA (peak GPU memory: torch.cuda.max_memory_allocated).")
    else:
        lines.append("No CUDA GPU was available, so GPU latency, throughput and memory were not measured; "
                     "every number below is on the CPU.")
    lines += ["", "## Models", "", md_table(columns, report["models"]) if report["models"]
              else "No model could be measured on the CPU.", "", *per_group]
    if report["gpu_measured"]:
        lines += ["## GPU", "", md_table(gpu_columns, report["gpu_models"]) if report["gpu_models"]
                  else "No model could be measured on the GPU.", ""]
    notes = [f"- {r['name']}: parameters {r['parameters_note']}" for r in report["models"] if r.get("parameters_note")]
    notes += [f"- {n}" for n in report["notes"]]
    notes += [f"- **not measured:** {f['name']} ({f['kind'] or 'unknown kind'}): {f['reason']}" for f in report["failed"]]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    lines += ["## Plots", ""]
    for key, path in report["plots"].items():
        lines += [f"![{captions[key]}]({path})", "", f"*{captions[key]}.*", ""]
    return "\n".join(lines)
