"""A bidirectional ``nn.LSTM`` over right-padded batches: :func:`run_bilstm`, the one way
every BiLSTM in distill (the students', the teacher's BiLSTM head) runs.

A packed ``nn.LSTM`` keeps the backward direction from reading padding, but on CPU its
backward pass is slow: a training step of a 2x128 BiLSTM over a batch of 32 sentences of 21-60
words took 204 ms packed and 76 ms as below, on one core (benchmarks/bench_lstm.py).
:func:`padded_bilstm` gives what the packed run gives without packing: each direction runs
as a plain one-direction LSTM with the module's own weights, the backward one over each
sequence reversed within its length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def run_bilstm(lstm: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """``lstm`` (bidirectional, batch_first) over ``x`` (B, T, D), rows real up to ``mask``
    (B, T) bool and padding after, as a packed run gives it: the backward direction starts at
    each row's last real position; (B, T, 2H), zeros at padding. The fastest path that gives
    the same: no padding, no packing (:func:`unpadded`); a plain ``nn.LSTM`` in training,
    :func:`padded_bilstm`; otherwise (eval, torch's dynamic int8 LSTM) packing."""
    if bool(mask.all()):  # one sentence, or equal lengths: packing changes nothing
        return unpadded(lstm, x)
    if lstm.training and type(lstm) is nn.LSTM:
        return padded_bilstm(lstm, x, mask)
    packed = pack_padded_sequence(x, mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.size(1))[0]


def unpadded(lstm: nn.Module, x: Tensor) -> Tensor:
    """``lstm(x)[0]`` for a batch without padding.

    In eval mode a plain ``nn.LSTM`` is run by the kernel its ``forward`` calls, with the
    same arguments and zero initial states, skipping the module's per-call Python checks
    (about a tenth of a batch-1 BiLSTM-CRF forward). Training, and any other LSTM (torch's
    dynamic int8 one), go through the module.
    """
    if lstm.training or type(lstm) is not nn.LSTM or lstm.proj_size or not lstm.batch_first:
        return lstm(x)[0]
    zeros = x.new_zeros((lstm.num_layers * (2 if lstm.bidirectional else 1), x.size(0), lstm.hidden_size))
    return torch._VF.lstm(x, (zeros, zeros), lstm._flat_weights, lstm.bias, lstm.num_layers, lstm.dropout,
                          False, lstm.bidirectional, True)[0]


def reversal_index(mask: Tensor) -> Tensor:
    """(B, T) positions that reverse each row of a right-padded batch within its length
    (``mask`` (B, T) bool, true at real positions); padding positions stay where they are.
    The index is its own inverse."""
    lengths = mask.sum(1, keepdim=True)  # shape: (B, 1)
    t = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)  # shape: (1, T)
    return torch.where(t < lengths, lengths - 1 - t, t)


def padded_bilstm(lstm: nn.LSTM, x: Tensor, mask: Tensor) -> Tensor:
    """``lstm`` (bidirectional, batch_first, no projection) over ``x`` (B, T, D) whose rows
    are real up to ``mask`` (B, T) and padding after: what ``pad_packed_sequence`` of the
    packed run returns, (B, T, 2H) with zeros at padding, up to float rounding. Between
    layers the module's dropout applies in training, as in ``nn.LSTM``."""
    if not (lstm.bidirectional and lstm.batch_first and not lstm.proj_size):
        raise ValueError("padded_bilstm needs a bidirectional, batch_first LSTM without projection")
    B = x.size(0)
    h0 = x.new_zeros(1, B, lstm.hidden_size)
    rev = reversal_index(mask).unsqueeze(-1)  # shape: (B, T, 1)
    weights = lstm._flat_weights
    n = len(weights) // (2 * lstm.num_layers)  # tensors per direction and layer: 4 with biases, 2 without

    def run(inp: Tensor, w) -> Tensor:  # one direction of one layer
        return torch._VF.lstm(inp, (h0, h0), w, lstm.bias, 1, 0.0, lstm.training, False, True)[0]

    out = x
    for layer in range(lstm.num_layers):
        if layer and lstm.dropout and lstm.training:
            out = F.dropout(out, lstm.dropout, training=True)
        first = 2 * n * layer
        forward = run(out, weights[first:first + n])  # shape: (B, T, H)
        backward = run(out.gather(1, rev.expand(-1, -1, out.size(-1))), weights[first + n:first + 2 * n])
        backward = backward.gather(1, rev.expand(-1, -1, backward.size(-1)))  # back in sentence order
        out = torch.cat([forward, backward], dim=-1)  # shape: (B, T, 2H)
    return out * mask.unsqueeze(-1).to(out.dtype)
