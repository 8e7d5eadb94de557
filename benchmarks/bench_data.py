"""The data path on MSRA train: tokenization + alignment time, the featurization
cache, and padding waste of length-bucketed batches.

Targets: ``make_pieces`` over the whole MSRA train set (48,289 sentences, ~2.1M
characters) with the MiniLM tokenizer after vocabulary extension in under 30 s on a
cold cache; a warm cache gives identical pieces; padding waste under 10% with batch
32, for training (seeded buckets) and inference, in sub-tokens for the BERT teacher
and in words for the BiLSTM student. The reference for tokenization speed is the
previous per-sentence ``encode_words`` (one tokenizer call per sentence batch and a
Python loop over ``word_ids``), timed on a subset in the same run and checked to give
the same ids. Exits 1 when a target or a check fails.

    python benchmarks/bench_data.py [--subset 5000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import Table, finish, machine  # noqa: E402


def reference_encode_words(tokenizer, sentences):
    """The previous BertTagger.encode_words: whole sentences through the tokenizer, ids
    grouped by ``word_ids`` in Python."""
    unk = tokenizer.unk_token_id
    out = []
    for s in range(0, len(sentences), 2048):
        chunk = [list(x) for x in sentences[s : s + 2048]]
        enc = tokenizer(chunk, is_split_into_words=True, add_special_tokens=False,
                        return_attention_mask=False, return_token_type_ids=False)
        for i, words in enumerate(chunk):
            per = [[] for _ in words]
            for tid, w in zip(enc["input_ids"][i], enc.word_ids(i)):
                per[w].append(tid)
            out.append([p or [unk] for p in per])
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def waste_rows(table: Table, name: str, pieces, unit: str, batch_size: int, seeds=(13000, 13001, 13002)) -> None:
    from distill.features import bucket_batches, padding_waste, piece_length

    padded = [piece_length(p) for p in pieces]  # what a batch pads (sub-tokens for BERT, words for BiLSTM)
    words = [p.n_words for p in pieces]
    rng = random.Random(0)
    shuffled = list(range(len(pieces)))
    rng.shuffle(shuffled)
    unbucketed = padding_waste(padded, [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)])
    train_by_words = max(padding_waste(padded, bucket_batches(words, batch_size, seed=s)) for s in seeds)
    inference = padding_waste(padded, bucket_batches(padded, batch_size))
    table.add(f"{name}: padding waste, training (seeded, by words; {unit})", f"{train_by_words:.1%}",
              f"{unbucketed:.1%}", None, "< 10%", train_by_words < 0.10)
    if padded != words:
        train_by_padded = max(padding_waste(padded, bucket_batches(padded, batch_size, seed=s)) for s in seeds)
        table.add(f"{name}: padding waste, training (seeded, by {unit})", f"{train_by_padded:.1%}",
                  f"{unbucketed:.1%}", None, "< 10%", train_by_padded < 0.10)
    table.add(f"{name}: padding waste, inference (sorted; {unit})", f"{inference:.1%}", f"{unbucketed:.1%}",
              None, "< 10%", inference < 0.10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=5000, help="sentences for the reference tokenization timing")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from distill.data import load_dataset
    from distill.features import make_pieces
    from students.bilstm_crf import BiLSTMTagger, build_vocabulary
    from teachers.bert_crf import build_teacher

    table = Table("Data path: MSRA train (reference column: previous encode_words, or unbucketed batches)")
    ds, load_s = timed(load_dataset)
    sentences = ds.train.tokens
    label_index = {l: i for i, l in enumerate(ds.labels)}
    tag_ids = [[label_index[t] for t in tags] for tags in ds.train.tags]
    model, build_s = timed(lambda: build_teacher(ds.labels, sentences))
    n_chars = ds.train.n_tokens()

    with tempfile.TemporaryDirectory() as cache:
        os.environ["DISTILL_CACHE"] = cache
        cold, cold_s = timed(lambda: make_pieces(model, sentences, tag_ids))
        warm, warm_s = timed(lambda: make_pieces(model, sentences, tag_ids))
    same = [(p.sentence, p.start, p.end, p.feature) for p in cold] == [(p.sentence, p.start, p.end, p.feature) for p in warm]
    table.add(f"make_pieces, {len(sentences)} sentences, cold cache", f"{cold_s:.1f} s", "", None, "< 30 s", cold_s < 30)
    table.add("make_pieces, warm cache (identical pieces)", f"{warm_s:.1f} s", "", None, "identical", same)

    subset = random.Random(1).sample(range(len(sentences)), min(args.subset, len(sentences)))
    sub = [sentences[i] for i in subset]
    ours, ours_s = timed(lambda: model.encode_words(sub))
    ref, ref_s = timed(lambda: reference_encode_words(model.tokenizer, sub))
    table.speed(f"encode_words, {len(sub)} sentences", ours_s, ref_s, None, unit="s")
    table.add("encode_words ids equal the reference", str(ours == ref), "", None, "equal", ours == ref)

    waste_rows(table, "BERT teacher", cold, "sub-tokens", args.batch_size)
    student = BiLSTMTagger(build_vocabulary(sentences), ds.labels)
    waste_rows(table, "BiLSTM student", make_pieces(student, sentences, tag_ids, cache=False), "words", args.batch_size)

    return finish(table, *machine(["transformers", "tokenizers"]),
                  f"data: {len(sentences)} sentences, {n_chars} characters; load {load_s:.1f} s; "
                  f"build_teacher (vocabulary extension to {len(model.tokenizer)} tokens) {build_s:.1f} s; "
                  f"pieces {len(cold)}; wall-clock times (single runs) on a shared machine")


if __name__ == "__main__":
    sys.exit(main())
