"""What truncation costs on long reviews (issue 16): a BERT classifier reads at most
``max_length`` sub-tokens (256 by default), and a longer text keeps its head and tail
(``distill.classify.head_tail``). On the test reviews longer than that, compare:

- head + tail at the model's limit (what distill does),
- the head alone at the same limit (plain truncation),
- head + tail at 512 (the encoder's position limit: twice the attention cost),

with accuracy on those reviews and milliseconds per review at batch 1 for each.

    python benchmarks/long_texts.py runs/sentiment-cpu/teacher [--dataset sentiment]
"""

from __future__ import annotations

import argparse
import time

import torch

from distill.classify import head_tail
from distill.modeling import load_model
from distill.textdata import load_text_dataset


def variants(model):
    limit = model.max_length - 2
    return {
        f"head + tail, {model.max_length} (distill)": lambda ids: head_tail(ids, limit, model.max_length // 2),
        f"head only, {model.max_length}": lambda ids: ids[:limit],
        "head + tail, 512": lambda ids: head_tail(ids, 510, 256),
    }


@torch.inference_mode()
def score(model, token_ids, labels, cut) -> tuple[float, float]:
    """(accuracy, ms per text at batch 1) of ``model`` reading ``cut(ids)`` of each text."""
    tok = model.tokenizer
    right, t0 = 0, time.perf_counter()
    for ids, gold in zip(token_ids, labels):
        batch = model.collate([{"input_ids": [tok.cls_token_id] + cut(ids) + [tok.sep_token_id]}])
        right += model.labels[int(model(batch).logits.argmax(-1))] == gold
    return right / len(labels), (time.perf_counter() - t0) * 1000 / len(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--dataset", default="sentiment")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    test = load_text_dataset({"name": args.dataset}).test
    enc = model.tokenizer(test.texts, add_special_tokens=False)["input_ids"]
    long = [i for i, ids in enumerate(enc) if len(ids) > model.max_length - 2]
    print(f"{args.model}: {len(long)} of {len(test)} test texts are longer than {model.max_length - 2} sub-tokens "
          f"(longest {max(len(ids) for ids in enc)})")
    print("| reading | accuracy on the long texts | ms per text (batch 1) |")
    print("| --- | ---: | ---: |")
    for name, cut in variants(model).items():
        acc, ms = score(model, [enc[i] for i in long], [test.labels[i] for i in long], cut)
        print(f"| {name} | {acc:.4f} ({round(acc * len(long))}/{len(long)}) | {ms:.1f} |")


if __name__ == "__main__":
    main()
