"""The report's F1-vs-latency plot: every point labelled, no two labels on top of each other,
even where the points crowd (measured with the renderer, on the figure as saved)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from distill import plots

COMMITTED = Path(__file__).resolve().parents[1] / "reports" / "msra-cpu" / "report.json"


def _crowded_rows(n: int = 12) -> list[dict]:
    """A teacher and a fast baseline set the axes' range; between them ``n - 2`` models whose
    F1 and latency differ in the fourth digit, so their points all but coincide."""
    rows = [{"name": "teacher", "f1": 0.70, "latency_ms_median": 20.0, "size_mb": 90.0, "role": "teacher"},
            {"name": "baseline", "f1": 0.55, "latency_ms_median": 0.5, "size_mb": 0.7, "role": "student"}]
    rows += [{"name": f"bilstm-crf-kd-variant-{i}", "f1": 0.62 + 0.0001 * i, "latency_ms_median": 1.5 + 0.001 * i,
              "size_mb": 0.5 + 2.0 * (i % 3), "role": "student"} for i in range(n - 2)]
    return rows


def _saved_figure(rows, tmp_path, monkeypatch):
    """Draw and save the plot; return the figure exactly as it was written."""
    figures = []
    save = plots._save

    def spy(fig, path, *args, **kwargs):
        figures.append(fig)
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "_save", spy)
    path = plots.f1_vs_latency(rows, tmp_path / "f1_vs_latency.png")
    assert path.stat().st_size > 0 and len(figures) == 1
    return figures[0]


def _label_boxes(fig):
    """(text, box) of every label; the box of the text alone (an annotation's own extent adds its leader line)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), Text.get_window_extent(t, renderer)) for ax in fig.axes for t in ax.texts]


@pytest.mark.parametrize("source", ["crowded", "committed report"])
def test_f1_vs_latency_labels_do_not_collide(source, tmp_path, monkeypatch):
    rows = _crowded_rows() if source == "crowded" else json.loads(COMMITTED.read_text(encoding="utf-8"))["models"]
    fig = _saved_figure(rows, tmp_path, monkeypatch)
    boxes = _label_boxes(fig)
    assert sorted(text.split(" (")[0] for text, _ in boxes) == sorted(r["name"] for r in rows)
    collisions = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    assert not collisions
    whole = fig.bbox
    assert all(whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1
               for _, box in boxes), "a label runs off the figure"
