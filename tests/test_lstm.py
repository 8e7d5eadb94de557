"""distill.lstm.padded_bilstm against a packed nn.LSTM: the same outputs and gradients."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from distill.lstm import padded_bilstm, reversal_index


def test_reversal_index_reverses_within_length_and_is_its_own_inverse():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [True] * 4])
    idx = reversal_index(mask)
    assert idx.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]
    assert idx.gather(1, idx).tolist() == [list(range(4))] * 3


def _packed(lstm, x, lengths):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.size(1))[0]


@pytest.mark.parametrize("layers,bias", [(1, True), (2, True), (1, False)])
def test_padded_bilstm_matches_a_packed_run_with_gradients(layers, bias):
    torch.manual_seed(layers)
    lstm = nn.LSTM(6, 4, num_layers=layers, bias=bias, batch_first=True, bidirectional=True)
    lengths = torch.tensor([7, 3, 1, 5])
    mask = torch.arange(7)[None] < lengths[:, None]
    x = torch.randn(4, 7, 6, requires_grad=True)
    want = _packed(lstm, x, lengths)
    got = padded_bilstm(lstm, x, mask)
    torch.testing.assert_close(got, want)
    assert (got[~mask] == 0).all()
    g = torch.randn_like(want)
    params = [x] + list(lstm.parameters())
    for a, b in zip(torch.autograd.grad((want * g).sum(), params), torch.autograd.grad((got * g).sum(), params)):
        torch.testing.assert_close(b, a)


def test_padded_bilstm_refuses_a_one_direction_lstm():
    with pytest.raises(ValueError, match="bidirectional"):
        padded_bilstm(nn.LSTM(3, 2, batch_first=True), torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool))
