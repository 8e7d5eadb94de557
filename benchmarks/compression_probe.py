"""Which int8 path should ``distill quantize int8`` use on CPU: eager torch.ao
``quantize_dynamic`` or torchao's ``quantize_``?

Builds a real MiniLM BERT-CRF (all-MiniLM-L6-v2, untrained head: speed does not
depend on the head's training) and, if present, a BiLSTM-CRF student of the default
size, then times the same batches of MSRA test sentences through fp32, torch.ao
dynamic int8 (Linear with per-tensor or per-channel weight scales, and the LSTM
for the BiLSTM) and torchao int8 (dynamic activation +
int8 weight; and int8 weight-only), interleaved, median of several rounds. Prints
milliseconds per batch, the ratio to fp32, and the max abs emission diff to fp32.

    python benchmarks/compression_probe.py [--rounds 7] [--batch-size 32] [--batches 4] [--threads 2]

torchao is optional: without it only the torch.ao rows are printed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn


def sample_batches(model, n_batches: int, batch_size: int):
    from distill.data import load_dataset
    from distill.features import make_pieces

    ds = load_dataset(max_test=n_batches * batch_size)
    pieces = make_pieces(model, ds.test.tokens)
    return ds, [model.collate([p.feature for p in pieces[i : i + batch_size]])
                for i in range(0, len(pieces), batch_size)]


def torch_ao_int8(model, lstm: bool, per_channel: bool = False):
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    spec = {nn.Linear: per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig}
    if lstm:
        spec[nn.LSTM] = default_dynamic_qconfig
    return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)


def torchao_int8(model, weight_only: bool):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    m = copy.deepcopy(model)
    quantize_(m, Int8WeightOnlyConfig() if weight_only else Int8DynamicActivationInt8WeightConfig())
    return m


@torch.inference_mode()
def time_models(models: dict, batches, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():  # warm-up
        m(batches[0])
    for _ in range(rounds):
        for name, m in models.items():
            t0 = time.perf_counter()
            for b in batches:
                m(b)
            times[name].append((time.perf_counter() - t0) / len(batches) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def max_diff(ref, other, batches) -> float:
    return max((ref(b).emissions - other(b).emissions.float()).abs().max().item() for b in batches)


def probe(name: str, model, batches, rounds: int, lstm: bool) -> None:
    models = {"fp32": model, "torch.ao dynamic int8": torch_ao_int8(model, lstm),
              "torch.ao int8 per-channel": torch_ao_int8(model, lstm, per_channel=True)}
    if lstm:
        models["torch.ao int8, Linear only"] = torch_ao_int8(model, False)
    try:
        models["torchao int8 dyn-act+weight"] = torchao_int8(model, weight_only=False)
        models["torchao int8 weight-only"] = torchao_int8(model, weight_only=True)
    except ImportError:
        print("(torchao not installed: pip install torchao to compare)")
    ms = time_models(models, batches, rounds)
    print(f"\n{name}: {len(batches)} batches of {batches[0]['word_mask'].shape[0]} sentences, "
          f"{torch.get_num_threads()} threads, median of {rounds} rounds")
    print(f"{'method':32} {'ms/batch':>9} {'vs fp32':>8} {'max|diff|':>10}")
    for m_name, t in ms.items():
        diff = 0.0 if m_name == "fp32" else max_diff(model, models[m_name], batches)
        print(f"{m_name:32} {t:9.1f} {ms['fp32'] / t:7.2f}x {diff:10.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from distill.data import load_dataset
    from teachers.bert_crf import build_teacher

    ds = load_dataset(max_train=2000, max_test=1)
    bert = build_teacher(ds.labels, ds.train.tokens).eval()
    _, batches = sample_batches(bert, args.batches, args.batch_size)
    probe("MiniLM-L6 BERT-CRF", bert, batches, args.rounds, lstm=False)
    try:
        from students.bilstm_crf import BiLSTMTagger, build_vocabulary
    except ImportError:
        return
    bilstm = BiLSTMTagger(build_vocabulary(ds.train.tokens), ds.labels).eval()
    _, batches = sample_batches(bilstm, args.batches, args.batch_size)
    probe("BiLSTM-CRF (128 emb, 2x128 LSTM)", bilstm, batches, args.rounds, lstm=True)


if __name__ == "__main__":
    main()
