"""What goes into a tagger's ONNX file, and its export: the model's emissions and the
Viterbi decoding in one graph (:class:`ExportGraph`, written by :func:`export_graph`).

* Viterbi runs inside the graph as two ONNX ``Scan`` loops over time (the forward
  max-product pass collecting backpointers, then the backtrack), exported from
  ``torch._higher_order_ops.scan`` by the dynamo exporter; it follows
  :meth:`distill.crf.CRF.decode` step for step, so padding decodes identically.
* BiLSTMs: the PyTorch models pack sequences, which ``torch.export`` cannot trace with
  a dynamic length (it unrolls the LSTM over the example's time steps). Each
  bidirectional layer is exported instead as one ONNX ``LSTM`` node with
  ``sequence_lens`` (a custom op with its own translation), whose backward direction
  starts at each sentence's last real word, exactly like packing.

The export command, its check and the model folder: :mod:`quantize.onnx_export`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from distill.crf import CRF
from distill.errors import DistillError
from distill.modeling import Tagger

INPUTS = {"bert-crf": ("input_ids", "attention_mask", "word_index", "word_mask"), "bilstm-crf": ("input_ids", "word_mask")}
OUTPUTS = ("emissions", "tags")
OPSET = 18


@torch.library.custom_op("distill::bilstm", mutates_args=())
def bilstm(x: Tensor, lengths: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One bidirectional LSTM layer over padded sentences, as a packed ``nn.LSTM`` runs it
    (the backward direction starts at each sentence's last real word; zeros at padding).

    x: (B, T, D); lengths: (B,) real words per sentence; w_ih (2, 4H, D), w_hh (2, 4H, H),
    b_ih and b_hh (2, 4H): the forward then the reverse direction, PyTorch gate order
    (i, f, g, o). Returns (B, T, 2H). Exported as one ONNX ``LSTM`` node with
    ``sequence_lens`` (:func:`_bilstm_onnx`), which has the same semantics.
    """
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    B, T, _ = x.shape
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    h0 = x.new_zeros(2, B, w_hh.shape[-1])
    params = [w_ih[0], w_hh[0], b_ih[0], b_hh[0], w_ih[1], w_hh[1], b_ih[1], b_hh[1]]
    out = torch.lstm(packed.data, packed.batch_sizes, (h0, h0), params, True, 1, 0.0, False, True)[0]
    out = PackedSequence(out, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    return pad_packed_sequence(out, batch_first=True, total_length=T)[0]


@bilstm.register_fake
def _bilstm_shape(x, lengths, w_ih, w_hh, b_ih, b_hh):
    return x.new_empty(x.shape[0], x.shape[1], 2 * w_hh.shape[-1])


def _bilstm_onnx(x, lengths, w_ih, w_hh, b_ih, b_hh):
    """ONNX translation of :func:`bilstm`: gates reordered to ONNX's (i, o, f, c)."""
    from onnxscript import opset18 as op

    H = w_hh.shape[-1]
    gates = op.Constant(value_ints=[*range(0, H), *range(3 * H, 4 * H), *range(H, 2 * H), *range(2 * H, 3 * H)])
    W = op.Gather(w_ih, gates, axis=1)  # shape: (2, 4H, D)
    R = op.Gather(w_hh, gates, axis=1)  # shape: (2, 4H, H)
    bias = op.Concat(op.Gather(b_ih, gates, axis=1), op.Gather(b_hh, gates, axis=1), axis=1)  # shape: (2, 8H)
    Y, _, _ = op.LSTM(op.Transpose(x, perm=[1, 0, 2]), W, R, bias, op.Cast(lengths, to=6),  # 6: int32
                      direction="bidirectional", hidden_size=H)  # Y: (T, 2, B, H)
    return op.Reshape(op.Transpose(Y, perm=[2, 0, 1, 3]), op.Constant(value_ints=[0, 0, -1]))


class MaskedBiLSTM(nn.Module):
    """A bidirectional batch-first ``nn.LSTM`` run on padded sentences through
    :func:`bilstm`, layer by layer (sharing the original's weights), so it exports."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        if not (lstm.bidirectional and lstm.batch_first and lstm.bias and not lstm.proj_size):
            raise DistillError("ONNX export supports batch-first bidirectional LSTMs with biases and no projection")
        self.num_layers = lstm.num_layers
        for layer in range(lstm.num_layers):
            for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                both = torch.stack([getattr(lstm, f"{part}_l{layer}"), getattr(lstm, f"{part}_l{layer}_reverse")]).detach()
                self.register_buffer(f"{part}_{layer}", both)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, D); mask: (B, T) bool. Returns (B, T, 2H), zeros at padding."""
        lengths = mask.long().sum(1)
        for layer in range(self.num_layers):
            x = torch.ops.distill.bilstm(x, lengths, *(getattr(self, f"{part}_{layer}") for part in
                                                       ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
        return x


def viterbi(crf: CRF, emissions: Tensor, mask: Tensor, allowed=None) -> Tensor:
    """:meth:`distill.crf.CRF.decode` written with ``scan`` so it exports as ONNX loops.

    emissions: (B, T, K); mask: (B, T) bool, real positions first. Returns (B, T) long,
    -1 past each length; ``allowed`` constrains the paths as in :meth:`CRF.decode`
    (the penalties become constants of the graph). One padded step is appended so every scan runs at least once
    (ONNX Runtime rejects a reverse Scan over zero steps, i.e. T = 1).
    """
    from torch._higher_order_ops.scan import scan

    B, T, K = emissions.shape
    emissions = emissions.detach()  # decoding is not differentiable; scan would trace gradients
    emissions = torch.cat([emissions, emissions.new_zeros(B, 1, K)], 1)
    full_mask = torch.cat([mask, mask.new_zeros(B, 1)], 1)
    start, end, transitions = crf.decoding_parameters(allowed)
    identity = torch.arange(K, device=emissions.device).unsqueeze(0).expand(B, K)

    def forward_step(score: Tensor, xs: tuple[Tensor, Tensor]):
        emission, step = xs  # shapes: (B, K), (B,)
        best, index = (score.unsqueeze(2) + transitions).max(1)  # shape: (B, K_next)
        step = step.unsqueeze(1)
        # Past a sentence's end the score is carried and the pointer is the identity.
        return torch.where(step, best + emission, score), torch.where(step, index, identity)

    score, backpointers = scan(forward_step, start + emissions[:, 0],
                               (emissions[:, 1:].transpose(0, 1), full_mask[:, 1:].transpose(0, 1)))
    last = (score + end).argmax(1)  # shape: (B,)

    def backtrack(tag: Tensor, pointers: Tensor):
        previous = pointers.gather(1, tag.unsqueeze(1)).squeeze(1)
        return previous, previous.clone()

    _, tags = scan(backtrack, last, backpointers, reverse=True)  # shape: (T, B)
    tags = torch.cat([tags.transpose(0, 1), last.unsqueeze(1)], 1)[:, :T]
    return tags.masked_fill(~mask, -1)


def input_names(source) -> tuple[str, ...]:
    """The graph's inputs: :data:`INPUTS` of the kind, plus ``piece_shape`` for a BERT
    model with the natural alignment."""
    names = INPUTS[source.kind]
    return (*names, "piece_shape") if getattr(source, "alignment", "first") == "natural" else names


class ExportGraph(nn.Module):
    """What goes into the ONNX file: the source model's emissions (without packing)
    and the Viterbi decoding; ``forward(*INPUTS[kind]) -> (emissions, tags)``."""

    def __init__(self, source: Tagger):
        super().__init__()
        if source.kind not in INPUTS:
            raise DistillError(f"ONNX export supports {', '.join(INPUTS)} models, not {source.kind!r}")
        self.source = source
        self.kind = source.kind
        lstm = getattr(source, "lstm", None)
        self.lstm = MaskedBiLSTM(lstm) if lstm is not None else None

    def emissions(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        s = self.source
        if self.kind == "bert-crf":
            named = dict(zip(input_names(s), inputs))
            mask = named["word_mask"]
            hidden = s.encoder(input_ids=named["input_ids"], attention_mask=named["attention_mask"]).last_hidden_state
            words = s.read_words(hidden, named)  # shape: (B, W, H)
        else:
            input_ids, mask = inputs
            words = s.embedding(input_ids)  # shape: (B, W, E)
        if self.lstm is not None:
            words = self.lstm(words, mask)
        return s.classifier(words), mask  # shape: (B, W, K)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        emissions, mask = self.emissions(*inputs)
        if self.source.crf is None:  # a softmax head (the teacher ablation)
            return emissions, emissions.argmax(-1).masked_fill(~mask, -1)
        return emissions, viterbi(self.source.crf, emissions, mask, self.source.allowed_transitions())

def export_graph(source: Tagger, path: Path, example: dict[str, Tensor]) -> None:
    """Export ``source`` (emissions + Viterbi) to ``path`` with dynamic batch and lengths."""
    import onnx

    graph = ExportGraph(source).eval().requires_grad_(False)
    names = input_names(source)
    batch = torch.export.Dim("batch")
    words = torch.export.Dim("words")
    dims = {"input_ids": {0: batch, 1: torch.export.Dim("subtokens")} if source.kind == "bert-crf" else {0: batch, 1: words},
            "attention_mask": None, "word_index": {0: batch, 1: words}, "word_mask": {0: batch, 1: words},
            "piece_shape": {0: batch, 1: words}}
    if source.kind == "bert-crf":
        dims["attention_mask"] = dims["input_ids"]
    dynamo_export(graph, tuple(example[n] for n in names), names, OUTPUTS, (tuple(dims[n] for n in names),), path)
    for output in onnx.load(str(path), load_external_data=False).graph.output:
        dims = output.type.tensor_type.shape.dim[:2]
        if any(d.HasField("dim_value") for d in dims):  # the exporter fell back to fixed sizes
            raise DistillError(f"ONNX export fixed the batch size or length of output {output.name!r} "
                               f"({[d.dim_value or d.dim_param for d in dims]}); the graph would only take that shape")


def dynamo_export(graph: nn.Module, args: tuple[Tensor, ...], names: Sequence[str], outputs: Sequence[str],
                  dynamic_shapes, path: Path) -> None:
    """``torch.onnx.export`` of ``graph`` (the dynamo exporter, :data:`OPSET`, the BiLSTM op
    translated to ONNX ``LSTM`` nodes) into ``path``, one file; its errors in one line."""
    import contextlib
    import io
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # The dynamo exporter prints its progress to stdout; a CLI command should not.
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(graph, args, input_names=list(names), output_names=list(outputs),
                                        dynamic_shapes=dynamic_shapes, dynamo=True, opset_version=OPSET,
                                        custom_translation_table={torch.ops.distill.bilstm.default: _bilstm_onnx},
                                        external_data=False, verbose=False)
        except Exception as e:  # the exporter's errors are long; keep the first line
            raise DistillError(f"ONNX export failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}") from None
    program.save(str(path), external_data=False)
