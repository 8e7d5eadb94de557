"""How many test sentences the one-file ONNX model decodes exactly as the PyTorch model.

    python benchmarks/onnx_agreement.py PYTORCH_MODEL ONNX_MODEL [--max-test N]

Runs both on the built-in MSRA test set and prints the share of sentences
whose decoded tags are identical, and the entity F1 of each. Exits 1 unless it is 100%.
"""

from __future__ import annotations

import argparse
import sys

from distill.cli.common import quiet_libraries
from distill.data import load_dataset
from distill.evaluate import entity_metrics, predict_tags
from distill.modeling import load_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytorch_model")
    parser.add_argument("onnx_model")
    parser.add_argument("--max-test", type=int, default=None)
    args = parser.parse_args()
    quiet_libraries()
    ds = load_dataset(max_test=args.max_test)
    sentences = ds.test.tokens
    ref = predict_tags(load_model(args.pytorch_model), sentences, batch_size=32)
    onnx = predict_tags(load_model(args.onnx_model), sentences, batch_size=32)
    same = sum(a == b for a, b in zip(ref, onnx))
    f_ref, f_onnx = entity_metrics(ds.test.tags, ref)["f1"], entity_metrics(ds.test.tags, onnx)["f1"]
    print(f"{'model':<10} {'F1':>8}")
    print(f"{'pytorch':<10} {f_ref:>8.4f}\n{'onnx':<10} {f_onnx:>8.4f}")
    print(f"identical decoded sentences: {same}/{len(sentences)} ({same / len(sentences):.2%})")
    return 0 if same == len(sentences) else 1


if __name__ == "__main__":
    sys.exit(main())
