"""Two `distill run` folders side by side: is every model the same? For issue 13's check that a
refactor leaves a seeded run unchanged (the same command before and after, same threads).

Per model folder: the sha256 of each weight file (safetensors; ONNX files compared with the
exporter's per-node source locations removed, since those name the Python file and line that
traced each node), then every score in the two reports (P, R, F1, per type, parameters).

    python benchmarks/compare_runs.py runs/quick-before runs/quick-after
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

SCORES = ("precision", "recall", "f1", "per_type", "parameters", "labelled", "transfer", "f1_vs_gold", "f1_delta")


def onnx_bytes(path: Path) -> bytes:
    """The ONNX model without node metadata and doc strings (where the exporter records source locations)."""
    import onnx

    model = onnx.load(path)
    graphs = [model.graph] + [a.g for n in model.graph.node for a in n.attribute if a.g.node]
    for nodes in [g.node for g in graphs] + [f.node for f in model.functions]:
        for n in nodes:
            del n.metadata_props[:]
            n.doc_string = ""
    return model.SerializeToString()


def weights(folder: Path) -> dict[str, str]:
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.suffix in (".safetensors", ".onnx") and f.is_file():
            data = onnx_bytes(f) if f.suffix == ".onnx" else f.read_bytes()
            out[str(f.relative_to(folder))] = hashlib.sha256(data).hexdigest()[:16]
    return out


def main(a: Path, b: Path) -> int:
    differ = 0
    models = sorted(p.name for p in a.iterdir() if (p / "distill.json").exists())
    for name in models:
        wa, wb = weights(a / name), weights(b / name)
        same = wa == wb and bool(wa)
        differ += not same
        print(f"{name:28s} weights {'identical' if same else 'DIFFERENT'} ({len(wa)} files)")
    ra, rb = ({r["name"]: r for r in json.loads((run / "report" / "report.json").read_text())["models"]} for run in (a, b))
    for name in sorted(ra):
        diffs = [k for k in SCORES if ra[name].get(k) != rb.get(name, {}).get(k)]
        differ += bool(diffs)
        other = rb.get(name, {}).get("f1")
        print(f"{name:28s} F1 {ra[name]['f1']:.4f} vs {'missing' if other is None else f'{other:.4f}'}: "
              + ("scores identical" if not diffs else f"DIFFERENT {diffs}"))
    print(f"{len(models)} model folders, {len(ra)} report rows: {'all identical' if not differ else f'{differ} differences'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
