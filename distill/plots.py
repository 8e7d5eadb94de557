"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state)
and written atomically as PNG."""

from __future__ import annotations

import math
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


def _save(fig, path: Path, layout: bool = True) -> Path:
    """Write ``fig`` as PNG (``layout``: run tight_layout first; off when labels were placed
    on the final layout and must not move)."""
    if layout:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _ring_spots(point, size, gap: float, step: float, rings: int):
    """Lower-left corners for a ``size`` (w, h) box around ``point``, nearest first: the four
    corners and two sides next to the point, then rings of 16 directions ``step`` further out."""
    (x, y), (w, h) = point, size
    yield from [(x + gap, y + gap), (x - gap - w, y + gap), (x + gap, y - gap - h), (x - gap - w, y - gap - h),
                (x + gap, y - h / 2), (x - gap - w, y - h / 2)]
    for k in range(1, rings + 1):
        for i in range(16):
            a = math.pi * i / 8
            cx = x + math.cos(a) * (w / 2 + gap + k * step)
            cy = y + math.sin(a) * (h / 2 + gap + k * step)
            yield cx - w / 2, cy - h / 2


def _place_labels(ax, points: Sequence[tuple[float, float]], texts: Sequence[str], radii: Sequence[float],
                  fontsize: float = 8, pad: float = 3.0) -> list:
    """Label every point so that no two labels overlap; returns the annotations.

    Works in display pixels, measured with the figure's renderer, so the layout must be final.
    Each label, in order, takes the spot nearest its point (:func:`_ring_spots`) that lies in
    the axes and keeps ``pad`` pixels from every label placed before it, preferring spots that
    also leave the other points' markers (``radii``, pixels) uncovered. A label anywhere but up
    and to the right of its point is joined to it by a thin leader line, so it reads as its point's.
    """
    from matplotlib.text import Text

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform(points)
    markers = [(cx - r, cy - r, cx + r, cy + r) for (cx, cy), r in zip(centres, radii)]
    step = fontsize * fig.dpi / 72  # one line of text
    rings = int(max(frame.width, frame.height) / step)

    def clear(box, others) -> bool:
        x0, y0, x1, y1 = box
        return not any(x0 - pad < b1 and b0 < x1 + pad and y0 - pad < c1 and c0 < y1 + pad for b0, c0, b1, c1 in others)

    placed, labels = [], []
    for i, ((px, py), text) in enumerate(zip(centres, texts)):
        label = ax.annotate(text, points[i], xytext=(0, 0), textcoords="offset points", fontsize=fontsize,
                            ha="left", va="bottom", annotation_clip=False,
                            arrowprops=dict(arrowstyle="-", color="0.35", linewidth=0.6, shrinkA=1, shrinkB=2))
        label.set_in_layout(False)
        label.update_positions(renderer)
        extent = Text.get_window_extent(label, renderer)  # the text alone, not its leader line
        w, h, dx, dy = extent.width, extent.height, extent.x0 - px, extent.y0 - py
        gap = max(4.0, 0.6 * radii[i])
        spots = [(x, y, x + w, y + h) for x, y in _ring_spots((px, py), (w, h), gap, step, rings)]
        inside = [b for b in spots if frame.x0 <= b[0] and b[2] <= frame.x1 and frame.y0 <= b[1] and b[3] <= frame.y1]
        others = markers[:i] + markers[i + 1:]
        box = next((b for b in inside if clear(b, placed) and clear(b, others)), None) \
            or next((b for b in inside if clear(b, placed)), None) or (inside or spots)[0]
        placed.append(box)
        label.xyann = ((box[0] - px - dx) * 72 / fig.dpi, (box[1] - py - dy) * 72 / fig.dpi)
        # a leader line unless the label sits up and to the right of its point, nearer it than any other
        nearer = any(_distance(box, c) < _distance(box, (px, py)) for c in centres)
        label.arrow_patch.set_visible(spots.index(box) > 0 or nearer)
        labels.append(label)
    return labels


def _distance(box, point) -> float:
    """Pixels from ``point`` to the nearest edge of ``box`` (x0, y0, x1, y1); 0 inside it."""
    (x0, y0, x1, y1), (x, y) = box, point
    return math.hypot(max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1))


def f1_vs_latency(rows: Sequence[dict[str, Any]], path: Path, metric: str = "f1", ylabel: str = "entity F1 (test)",
                  title: str = "F1", item: str = "sentence") -> Path:
    """Entity F1 (or the rows' ``metric``, e.g. a classifier's accuracy or macro_f1, axis ``ylabel``)
    against batch-1 median latency per ``item`` (log x); each model a labelled point sized by disk size.
    Labels are placed on the final layout so that none overlaps another (see :func:`_place_labels`)."""
    fig = _figure(8, 5.5)
    ax = fig.add_subplot()
    sizes = [r["size_mb"] for r in rows]
    biggest = max(sizes + [1e-9])
    areas = [40 + 900 * (r["size_mb"] / biggest) for r in rows]
    for r, area in zip(rows, areas):
        color = "tab:red" if r.get("role") == "teacher" else "tab:blue"
        ax.scatter(r["latency_ms_median"], r[metric], s=area, alpha=0.55, color=color, edgecolors="black", linewidths=0.5)
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, [r["latency_ms_median"] for r in rows])
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"latency per {item}, batch 1, median (ms, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} vs latency (point area ~ weights on disk; red = teacher)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    radii = [math.sqrt(area / math.pi) * fig.dpi / 72 for area in areas]  # scatter's s is an area in points^2
    _place_labels(ax, [(r["latency_ms_median"], r[metric]) for r in rows],
                  [f"{r['name']} ({r['size_mb']:.3g} MB)" for r in rows], radii)
    return _save(fig, path, layout=False)


def training_curves(curves: dict[str, list[dict[str, Any]]], path: Path, dev_metric: str = "entity F1") -> Path:
    """Training loss and dev F1 (``dev_metric``: what a log's dev_f1 is) per epoch, one line per
    trained model (from its train_log.jsonl)."""
    fig = _figure(11, 4.5)
    ax_loss, ax_f1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, records in sorted(curves.items()):
        epochs = [r["epoch"] for r in records]
        ax_loss.plot(epochs, [r["loss"] for r in records], marker="o", label=name)
        ax_f1.plot(epochs, [r["dev_f1"] for r in records], marker="o", label=name)
    ax_loss.set_title("training loss per epoch\n(KD runs include the distillation term: compare within a model)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean training loss")
    ax_f1.set_title(f"dev {dev_metric} per epoch")
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


def confusion_matrix(counts: Sequence[Sequence[int]], labels: Sequence[str], title: str, path: Path,
                     unit: str = "tag") -> Path:
    """Row-normalised confusion matrix (each gold ``unit``'s row sums to 1), values printed in the cells."""
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
    ax.set_xlabel(f"predicted {unit}")
    ax.set_ylabel(f"gold {unit}")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def label_distribution(counts: dict[str, int], title: str, path: Path, unit: str = "tokens") -> Path:
    """Bar chart of tag (or class) counts of ``unit`` (log scale, counts printed on the bars)."""
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
    ax.set_ylabel(f"{unit} (log scale)")
    ax.set_title(title)
    return _save(fig, path)
