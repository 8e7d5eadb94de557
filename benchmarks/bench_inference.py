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

3. With ``--latency MODEL ...``: batch-1 latency as the report measures it
   (:func:`distill.bench_measure.run_bench`: ``predict_ids(model, [sentence], batch_size=1)`` over
   test sentences spread evenly over the MSRA test set, after the same warm-up), with
   each call's stages timed apart: featurizing (``make_pieces``), ``collate``, the model
   (PyTorch forward, or the ONNX Runtime session) and decoding (the CRF's Viterbi, or
   the ONNX graph's replayed in NumPy; "in graph" when the session decodes). With
   ``--before REV`` the same child process also runs on the code of git revision REV
   (``git archive``), in alternating rounds, and the table gives before / after per
   stage, the ratio, and whether the tags of every timed sentence are identical.

Exits 1 when a target is missed.

    python benchmarks/bench_inference.py MODEL_DIR [--rounds 3] [--teacher-sentences 1000]
    python benchmarks/bench_inference.py --latency runs/cpu/bilstm-crf-kd runs/cpu/bilstm-crf-kd-onnx-int8 \
        runs/cpu/teacher --before REV [--rounds 3] [--sentences 300]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
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


STAGES = ("end to end (predict_ids)", "featurize (make_pieces)", "collate", "model (forward / ONNX session)",
          "decode (Viterbi)")
REPO = Path(__file__).resolve().parent.parent


def latency_child(model_dir: str, n: int, threads: int) -> dict:
    """One process, one model: per-stage batch-1 timings (median seconds, wall and CPU)
    and a hash of the tags. Uses only what both the old and the new code offer."""
    import torch

    torch.set_num_threads(threads)
    from distill.bench_measure import latency_subset, pin_onnxruntime_threads
    from distill.data import msra_paths, read_msra
    from distill.evaluate import predict_ids
    from distill.features import make_pieces
    from distill.modeling import load_model

    if any(Path(model_dir).glob("*.onnx")):
        pin_onnxruntime_threads(threads)
    sentences = read_msra(msra_paths()[1]).tokens
    model = load_model(model_dir)
    inner = getattr(model, "inner", model)
    session = getattr(model, "session", None)
    decoder = getattr(model, "decoder", None)
    stages = {name: [] for name in STAGES}
    digest = hashlib.sha256()

    def timed(name, fn, *args):
        w, c = clocks()
        result = fn(*args)
        stages[name].append((time.perf_counter() - w, time.process_time() - c))
        return result

    def model_and_decode(batch):
        if session is None:  # a PyTorch tagger (or one wrapped by a compressed kind)
            out = timed(STAGES[3], inner, batch)
            timed(STAGES[4], inner.decode, out)
        elif decoder is not None:  # the ONNX graph cut to its emissions, decoded in NumPy
            feed = {name: batch[name].numpy() for name in model.input_names}
            (emissions,) = timed(STAGES[3], session.run, ["emissions"], feed)
            timed(STAGES[4], decoder.decode, emissions, feed["word_mask"].sum(1))
        else:  # the whole ONNX graph, its Viterbi inside
            from quantize.onnx_session import run_session

            timed(STAGES[3], run_session, session, batch)

    with torch.inference_mode():
        for s in sentences[:10]:  # run_bench's warm-up
            predict_ids(model, [s], batch_size=1)
        predict_ids(model, sentences[:32], batch_size=32)
        for i in latency_subset(len(sentences), n):
            if not sentences[i]:
                continue
            tags = timed(STAGES[0], predict_ids, model, [sentences[i]], 1)
            digest.update(json.dumps(tags).encode())
            pieces = timed(STAGES[1], make_pieces, model, [sentences[i]])
            for piece in pieces:
                model_and_decode(timed(STAGES[2], model.collate, [piece.feature]))
    medians = {name: [statistics.median(t[k] for t in times) if times else 0.0 for k in (0, 1)]
               for name, times in stages.items()}
    return {"stages": medians, "in_graph_decoding": session is not None and decoder is None,
            "tags": digest.hexdigest(), "sentences": len(stages[STAGES[0]])}


def checkout(rev: str, folder: Path) -> Path:
    """The inference code (distill, students, teachers, quantize) of git revision ``rev`` in ``folder``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "distill", "students", "teachers", "quantize"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def latency_breakdown(table: Table, models: list[str], before: str | None, rounds: int, n: int,
                      threads: int) -> list[str]:
    """Run :func:`latency_child` per model and code tree in alternating rounds; the breakdown lines."""
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": REPO}
        if before:
            trees = {"before": checkout(before, Path(tmp)), **trees}
        results: dict[tuple[str, str], list[dict]] = {(m, t): [] for m in models for t in trees}
        for r in range(rounds):
            for m in models:
                for tree in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                    env = dict(os.environ, PYTHONPATH=str(trees[tree]), TOKENIZERS_PARALLELISM="false",
                               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
                    out = subprocess.run([sys.executable, __file__, "--latency-child", str(Path(m).resolve()),
                                          "--sentences", str(n), "--cores", str(threads)],
                                         capture_output=True, text=True, env=env, cwd=REPO)
                    line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
                    if line is None:
                        raise SystemExit(f"latency child failed ({tree}, {m}): {out.stderr.strip()[-500:]}")
                    results[(m, tree)].append(json.loads(line))
    lines = [f"batch-1 latency by stage: medians over {n} MSRA test sentences per process, then over {rounds} "
             f"alternating rounds; µs wall (µs CPU); {threads} threads; stages timed apart from the end-to-end call"]
    for m in models:
        runs = {t: results[(m, t)] for t in trees}
        med = {t: {name: [statistics.median(x["stages"][name][k] for x in rs) for k in (0, 1)] for name in STAGES}
               for t, rs in runs.items()}
        lines.append(f"  {m} ({runs['after'][0]['sentences']} sentences)")
        for name in STAGES:
            cells = []
            for t in trees:
                wall, cpu = med[t][name]
                in_graph = name == STAGES[4] and runs[t][0]["in_graph_decoding"]
                cells.append(f"{t} {'in graph':>19}" if in_graph else f"{t} {wall * 1e6:8.1f} ({cpu * 1e6:8.1f})")
            if before and not any(name == STAGES[4] and runs[t][0]["in_graph_decoding"] for t in trees):
                b, a = med["before"][name], med["after"][name]
                cells.append(f"ratio {b[0] / a[0]:.2f}x ({b[1] / a[1]:.2f}x)" if a[0] and a[1] else "")
            lines.append(f"    {name:<31} " + "   ".join(cells))
        e2e = med["after"][STAGES[0]]
        if before:
            same = {x["tags"] for rs in runs.values() for x in rs}
            lines.append(f"    tags of every timed sentence identical before/after: {'yes' if len(same) == 1 else 'NO'}")
            b = med["before"][STAGES[0]]
            table.speed(f"batch-1 latency {Path(m).name}: wall", e2e[0], b[0], None)
            table.speed(f"batch-1 latency {Path(m).name}: CPU", e2e[1], b[1], None)
            if len(same) != 1:
                table.add(f"batch-1 tags {Path(m).name}", "differ", "", None, "identical", False)
        else:
            table.add(f"batch-1 latency {Path(m).name}: wall (CPU)", f"{e2e[0] * 1e3:.3f} ms ({e2e[1] * 1e3:.3f})", "",
                      None, "-", None)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model folder for the predict throughput (e.g. an onnx-int8 BiLSTM-CRF student)")
    ap.add_argument("--latency", nargs="+", metavar="MODEL", help="only the batch-1 latency breakdown, for these folders")
    ap.add_argument("--before", metavar="REV", help="with --latency: also time git revision REV's code, side by side")
    ap.add_argument("--sentences", type=int, default=300, help="with --latency: test sentences per process (the report's 300)")
    ap.add_argument("--latency-child", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="predict batch size (distill predict's default)")
    ap.add_argument("--teacher-sentences", type=int, default=1000)
    ap.add_argument("--teacher-batch-size", type=int, default=32)
    ap.add_argument("--skip-teacher", action="store_true")
    ap.add_argument("--cores", type=int, default=2, help="pin the process to this many CPU cores")
    args = ap.parse_args(argv)
    if args.latency_child:
        print(json.dumps(latency_child(args.latency_child, args.sentences, args.cores)))
        return 0
    if args.latency:
        table = Table("Batch-1 latency, end to end (medians of alternating rounds; ours = now, reference = --before)")
        notes = latency_breakdown(table, args.latency, args.before, args.rounds, args.sentences, args.cores)
        return finish(table, *machine(["onnxruntime", "numpy"]), *notes)
    if not args.model:
        ap.error("give a model folder (or --latency MODEL ...)")
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
