"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state)
and written atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from distill.fileio import atomic_path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _plain_log_axis(axis, values: Sequence[float]) -> None:
    """Tick labels on a log axis as plain numbers (5, 20, 1,000) rather than powers of ten;
    in-between ticks are labelled too when the values span less than a factor of 10."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    label = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}")
    axis.set_major_formatter(label)
    positive = [v for v in values if v > 0]
    narrow = bool(positive) and max(positive) < 10 * min(positive)
    axis.set_minor_formatter(label if narrow else NullFormatter())


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def f1_vs_latency(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Entity F1 against batch-1 median latency (log x); each model a labelled point sized by disk size."""
    fig = _figure(8, 5.5)
    ax = fig.add_subplot()
    sizes = [r["size_mb"] for r in rows]
    biggest = max(sizes + [1e-9])
    for r in rows:
        area = 40 + 900 * (r["size_mb"] / biggest)
        color = "tab:red" if r.get("role") == "teacher" else "tab:blue"
        ax.scatter(r["latency_ms_median"], r["f1"], s=area, alpha=0.55, color=color, edgecolors="black", linewidths=0.5)
        ax.annotate(f"{r['name']} ({r['size_mb']:.3g} MB)", (r["latency_ms_median"], r["f1"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, [r["latency_ms_median"] for r in rows])
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("latency per sentence, batch 1, median (ms, log scale)")
    ax.set_ylabel("entity F1 (test)")
    ax.set_title("F1 vs latency (point area ~ weights on disk; red = teacher)")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def training_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Training loss and dev F1 per epoch, one line per trained model (from its train_log.jsonl)."""
    fig = _figure(11, 4.5)
    ax_loss, ax_f1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, records in sorted(curves.items()):
        epochs = [r["epoch"] for r in records]
        ax_loss.plot(epochs, [r["loss"] for r in records], marker="o", label=name)
        ax_f1.plot(epochs, [r["dev_f1"] for r in records], marker="o", label=name)
    ax_loss.set_title("training loss per epoch\n(KD runs include the distillation term: compare within a model)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean training loss")
    ax_f1.set_title("dev entity F1 per epoch")
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("F1")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_f1):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if curves:
            ax.legend(fontsize=8)
    if not curves:
        ax_loss.text(0.5, 0.5, "no training logs found", ha="center", va="center", transform=ax_loss.transAxes)
    return _save(fig, path)


def confusion_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str]) -> list[list[int]]:
    """Token-level counts: row = gold tag, column = predicted tag, in ``labels`` order."""
    index = {l: i for i, l in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for g_row, p_row in zip(gold, pred):
        for g, p in zip(g_row, p_row):
            if g in index and p in index:
                counts[index[g]][index[p]] += 1
    return counts


def confusion_matrix(counts: Sequence[Sequence[int]], labels: Sequence[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix (each gold tag's row sums to 1), values printed in the cells."""
    n = len(labels)
    norm = [[c / max(1, sum(row)) for c in row] for row in counts]
    fig = _figure(1.2 + 0.75 * n, 0.9 + 0.65 * n)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{norm[i][j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i][j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted tag")
    ax.set_ylabel("gold tag")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def label_distribution(counts: dict[str, int], title: str, path: Path) -> Path:
    """Bar chart of tag counts (log scale, counts printed on the bars)."""
    names = list(counts)
    values = [counts[k] for k in names]
    fig = _figure(max(5, 0.8 * len(names) + 2), 4)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), values, color=["tab:gray" if k == "O" else "tab:blue" for k in names])
    for b, v in zip(bars, values):
        ax.annotate(f"{v:,}", (b.get_x() + b.get_width() / 2, max(v, 1)), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis, values)
    ax.set_ylabel("tokens (log scale)")
    ax.set_title(title)
    return _save(fig, path)
