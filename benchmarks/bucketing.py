"""Length-bucketed training batches: bucketed by words (as before issue 13) or by what the
model pads (``distill.features.piece_length``: sub-tokens for a BERT tagger, words for the
BiLSTM-CRF), on the cpu profile's data and teacher.

    python benchmarks/bucketing.py [--teacher runs/cpu/teacher] [--max-train 8000] [--steps 0]

Prints the padding waste (``distill.features.padding_waste``: the share of padded
positions) of the sub-token input the BERT encoder runs on, for one training epoch's
batches (seed 13, epoch 0, as ``distill.train`` builds them) bucketed each way, and the
word-level waste the training meta reported before. With ``--steps N``, also times N
training steps (forward, backward, AdamW) of the teacher on the first N batches of each
bucketing, interleaved one step each in turn (timings on a shared machine are noisy: the
median step is printed, and the share of padded positions is the stable figure).
"""

from __future__ import annotations

import argparse
import statistics
import time

from distill.features import bucket_batches, make_pieces, padding_waste, piece_length

SEED = 13


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="runs/cpu/teacher")
    ap.add_argument("--max-train", type=int, default=8000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=0, help="also time this many training steps of each (0: none)")
    args = ap.parse_args()

    from distill.data import load_dataset
    from distill.modeling import load_model

    ds = load_dataset(name="msra", max_train=args.max_train)
    model = load_model(args.teacher)
    labels = {l: i for i, l in enumerate(model.labels)}
    pieces = make_pieces(model, ds.train.tokens, [[labels[t] for t in tags] for tags in ds.train.tags])
    words = [p.n_words for p in pieces]
    padded = [piece_length(p) for p in pieces]  # sub-tokens with [CLS] and [SEP]
    by_words = bucket_batches(words, args.batch_size, seed=SEED * 1000)
    by_padded = bucket_batches(padded, args.batch_size, seed=SEED * 1000)
    print(f"{args.teacher} ({model.kind}), msra train {len(ds.train)} sentences, {len(pieces)} pieces, "
          f"batch {args.batch_size}, {len(by_words)} batches an epoch")
    print("| batches bucketed by | padding waste (sub-tokens) | padded sub-token positions | "
          "padding waste (words, as reported before) |")
    print("| --- | ---: | ---: | ---: |")
    for name, batches in (("words (before)", by_words), ("sub-tokens (after)", by_padded)):
        positions = sum(len(b) * max(padded[i] for i in b) for b in batches)
        print(f"| {name} | {padding_waste(padded, batches):.4f} | {positions:,} | {padding_waste(words, batches):.4f} |")
    if args.steps:
        time_steps(model, pieces, {"words": by_words, "sub-tokens": by_padded}, args.steps)


def time_steps(model, pieces, bucketings: dict, steps: int) -> None:
    import torch

    from distill.train import TrainConfig, default_loss, make_optimizer

    optimizer = make_optimizer(model, TrainConfig())
    model.train()
    seconds: dict[str, list[float]] = {name: [] for name in bucketings}
    for s in range(steps):
        for name, batches in bucketings.items():
            batch = model.collate([pieces[i].feature for i in batches[s % len(batches)]])
            t0 = time.perf_counter()
            loss, _ = default_loss(model, model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds[name].append(time.perf_counter() - t0)
    print(f"\n{steps} training steps each, interleaved, {torch.get_num_threads()} threads:")
    for name, times in seconds.items():
        print(f"  bucketed by {name}: median {statistics.median(times) * 1000:.0f} ms/step, "
              f"total {sum(times):.1f} s")


if __name__ == "__main__":
    main()
