"""Inference speed, end to end.

1. ``distill predict`` throughput on the MSRA test set (5,000 sentences of raw text,
   one per line) for a model folder given on the command line (meant for the
   distilled BiLSTM-CRF exported to ONNX int8), from text file to tag file through
   :func:`distill.predict.predict_file`, on at most 2 CPU cores. Target: >= 50,000
   sentences per minute. Throughput is reported by wall-clock time and by process
   CPU time (CPU time counts every thread, so sentences per CPU-minute is a lower
   bound of what the same 2 cores give when nothing else runs on them; on a shared
   machine the wall-clock figure also carries the other jobs' load). The target is
   judged on the CPU-time figure. A per-stage breakdown follows.
2. The teacher's PyTorch CPU inference (:func:`distill.evaluate.predict_tags` on a
   ``BertTagger``, untrained is fine for speed) against a Hugging Face
   ``pipeline("token-classification")`` over a BERT of the same size built from the
   same backbone (``AutoModelForTokenClassification``, 7 labels), on the same MSRA
   test sentences (raw text, joined), equal batch sizes, measured in alternating
   rounds. Target: ours no slower (ratio >= 1).

Exits 1 when a target is missed.

    python benchmarks/bench_inference.py MODEL_DIR [--rounds 3] [--teacher-sentences 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import Table, finish, machine  # noqa: E402

TARGET_PER_MINUTE = 50_000


def clocks():
    return time.perf_counter(), time.process_time()


def since(start):
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def predict_throughput(table: Table, model_dir: str, lines: list[str], rounds: int, batch_size: int) -> None:
    from distill.predict import predict_file

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "msra_test.txt"
        text.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = Path(tmp) / "tags.conll"
        predict_file(model=model_dir, input=str(text), out=out, batch_size=batch_size)  # warm-up
        walls, cpus = [], []
        for _ in range(rounds):
            start = clocks()
            n = predict_file(model=model_dir, input=str(text), out=out, batch_size=batch_size)
            wall, cpu = since(start)
            walls.append(wall), cpus.append(cpu)
        blocks = out.read_text(encoding="utf-8").strip("\n").split("\n\n")
    assert n == len(lines) == len(blocks), (n, len(lines), len(blocks))
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    per_min_wall, per_min_cpu = n / wall * 60, n / cpu * 60
    table.add(f"predict {n} sentences (wall {wall:.2f} s): sentences/min", f"{per_min_wall:,.0f}", "", None,
              f">= {TARGET_PER_MINUTE:,}", None)
    table.add(f"predict {n} sentences (CPU {cpu:.2f} s): sentences/CPU-min", f"{per_min_cpu:,.0f}", "", None,
              f">= {TARGET_PER_MINUTE:,}", per_min_cpu >= TARGET_PER_MINUTE)


def predict_stages(model_dir: str, lines: list[str], batch_size: int) -> list[str]:
    """The stages of predict_file, timed one by one (one run; wall / CPU seconds)."""
    from distill.data import split_text
    from distill.evaluate import to_output
    from distill.features import iterate_batches, make_pieces, merge
    from distill.modeling import load_model

    rows = []

    def stage(name, fn):
        start = clocks()
        result = fn()
        wall, cpu = since(start)
        rows.append(f"  {name:<34} wall {wall:6.3f} s   CPU {cpu:6.3f} s")
        return result

    m = stage("load model", lambda: load_model(model_dir))
    char_level = bool(m.meta.get("char_level", False))
    sentences = stage("split text", lambda: [s for s in (split_text(l, char_level) for l in lines) if s])
    pieces = stage("featurize (make_pieces)", lambda: make_pieces(m, sentences))
    batches = stage("collate", lambda: list(iterate_batches(m, pieces, batch_size)))
    piece_tags = [None] * len(pieces)

    def run():
        for idx, batch in batches:
            for i, tags in zip(idx, m.decode_batch(batch)):
                piece_tags[i] = tags

    stage("model + decode (decode_batch)", run)
    tags = merge(pieces, piece_tags, [len(s) for s in sentences])
    scheme, sep = m.meta.get("scheme", "BIO"), m.meta.get("separator", "-")
    stage("write CoNLL (to_output)", lambda: [to_output(s, [m.labels[i] for i in t], scheme, sep, "conll", char_level)
                                              for s, t in zip(sentences, tags)])
    return rows


def teacher_vs_pipeline(table: Table, ds, n: int, batch_size: int, rounds: int) -> list[str]:
    import torch
    import transformers
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    from distill.evaluate import predict_tags
    from teachers.bert_crf import build_teacher, default_backbone

    backbone = default_backbone()
    sentences = ds.test.tokens[:n]
    texts = ["".join(s) for s in sentences]
    ours = build_teacher(ds.labels, ds.train.tokens, backbone=backbone).eval()
    hf_model = AutoModelForTokenClassification.from_pretrained(backbone, num_labels=len(ds.labels),
                                                               local_files_only=True).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(backbone, local_files_only=True)
    tagger = pipeline("token-classification", model=hf_model, tokenizer=hf_tokenizer, device=-1,
                      batch_size=batch_size)
    params_ours = sum(p.numel() for p in ours.parameters())
    params_hf = sum(p.numel() for p in hf_model.parameters())

    contenders = {"ours": lambda: predict_tags(ours, sentences, batch_size),
                  "pipeline": lambda: tagger(texts)}
    for fn in contenders.values():  # warm-up
        fn()
    times = {k: ([], []) for k in contenders}
    for r in range(rounds):
        for name in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
            start = clocks()
            contenders[name]()
            wall, cpu = since(start)
            times[name][0].append(wall), times[name][1].append(cpu)
    med = {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in times.items()}
    table.speed(f"teacher, {n} sentences, batch {batch_size}: wall", med["ours"][0], med["pipeline"][0], 1.0, unit="s")
    table.speed(f"teacher, {n} sentences, batch {batch_size}: CPU", med["ours"][1], med["pipeline"][1], None, unit="s")
    return [f"teacher: BertTagger (CRF head, vocabulary extended to {len(ours.tokenizer)} tokens) {params_ours / 1e6:.1f}M "
            f"parameters; reference: pipeline('token-classification') over AutoModelForTokenClassification "
            f"({params_hf / 1e6:.1f}M parameters, {hf_model.num_labels} labels) from {backbone}; "
            f"torch threads {torch.get_num_threads()}; transformers {transformers.__version__}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model folder for the predict throughput (e.g. an onnx-int8 BiLSTM-CRF student)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="predict batch size (distill predict's default)")
    ap.add_argument("--teacher-sentences", type=int, default=1000)
    ap.add_argument("--teacher-batch-size", type=int, default=32)
    ap.add_argument("--skip-teacher", action="store_true")
    ap.add_argument("--cores", type=int, default=2, help="pin the process to this many CPU cores")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[: args.cores]
        os.sched_setaffinity(0, cores)

    import torch
    import transformers

    torch.set_num_threads(min(torch.get_num_threads(), args.cores))
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from distill.data import load_dataset
    from distill.modeling import read_meta

    ds = load_dataset()
    info = read_meta(args.model)
    lines = ["".join(s) for s in ds.test.tokens]
    table = Table("Inference (medians of alternating rounds; wall-clock and process CPU time)")
    predict_throughput(table, args.model, lines, args.rounds, args.batch_size)
    meta = info.get("meta", {})
    method = (meta.get("params") or {}).get("method", "-") if isinstance(meta.get("params"), dict) else "-"
    notes = [f"predict model: {args.model} (kind {info['kind']}, source {meta.get('source_kind', info['kind'])}, "
             f"method {method}, config {info.get('config')}); "
             f"MSRA test {len(lines)} sentences, {sum(map(len, lines))} characters; batch {args.batch_size}",
             "predict stages (one run):", *predict_stages(args.model, lines, args.batch_size)]
    if not args.skip_teacher:
        notes += teacher_vs_pipeline(table, ds, args.teacher_sentences, args.teacher_batch_size, args.rounds)
    return finish(table, *machine(["transformers", "onnxruntime", "numpy"]), *notes)


if __name__ == "__main__":
    sys.exit(main())
