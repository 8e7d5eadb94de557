"""distill.lstm.padded_bilstm against a packed nn.LSTM: the training step of a BiLSTM.

Times forward + backward of a bidirectional LSTM over a right-padded batch, the way
training runs it (distill.lstm.padded_bilstm: each direction a plain one-direction LSTM,
the backward one over each sentence reversed within its length), against packing
(pack_padded_sequence -> nn.LSTM -> pad_packed_sequence, what distill did before), and
checks in the same run that outputs and input gradients agree. Target: >= 1.5x faster
forward + backward. Exits 1 when a target or a check fails.

    python benchmarks/bench_lstm.py [--batch 32 --length 60 --dim 128 --hidden 128 --rounds 20 --threads 1]

(--hidden is per direction: the BiLSTM-CRF student's default hidden size 256 is 2 x 128.)
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from _common import Table, finish, interleaved, machine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=60, help="the longest sentence; the others 1/3 to all of it")
    ap.add_argument("--dim", type=int, default=128, help="input size (the embedding)")
    ap.add_argument("--hidden", type=int, default=128, help="hidden units per direction")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    sys.path.insert(0, ".")
    from distill.lstm import padded_bilstm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T = args.batch, args.length
    lstm = nn.LSTM(args.dim, args.hidden, num_layers=args.layers, batch_first=True, bidirectional=True)
    lengths = torch.randint(max(1, T // 3), T + 1, (B,))
    lengths[0] = T
    mask = torch.arange(T)[None] < lengths[:, None]
    x = torch.randn(B, T, args.dim, requires_grad=True)
    grad_out = torch.randn(B, T, 2 * args.hidden)

    def packed():
        p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(lstm(p)[0], batch_first=True, total_length=T)[0]

    def padded():
        return padded_bilstm(lstm, x, mask)

    def step(fn):
        def f():
            lstm.zero_grad(set_to_none=True)
            x.grad = None
            (fn() * grad_out).sum().backward()
        return f

    table = Table(f"BiLSTM over a padded batch: batch {B}, lengths {int(lengths.min())}..{T}, input {args.dim}, "
                  f"{args.layers} layer(s) of 2x{args.hidden}, CPU, wall time per call, median of {args.rounds} "
                  "interleaved rounds (ours: padded_bilstm; reference: packed)")
    with torch.no_grad():
        t = interleaved({"ours": padded, "ref": packed}, args.rounds)
    table.speed("forward, no grad", t["ours"], t["ref"], None)
    t = interleaved({"ours": step(padded), "ref": step(packed)}, args.rounds)
    table.speed("forward + backward (training)", t["ours"], t["ref"], 1.5)

    want, got = packed(), padded()
    g_want = torch.autograd.grad((want * grad_out).sum(), x)[0]
    g_got = torch.autograd.grad((got * grad_out).sum(), x)[0]
    out_err, grad_err = (want - got).abs().max().item(), (g_want - g_got).abs().max().item()
    table.add("max |difference|: outputs, input gradients", f"{out_err:.1e}", f"{grad_err:.1e}", None, "<= 1e-5",
              out_err <= 1e-5 and grad_err <= 1e-5)
    return finish(table, *machine())


if __name__ == "__main__":
    sys.exit(main())
