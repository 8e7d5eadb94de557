"""``distill quantize onnx`` / ``onnx-int8``: the whole tagger in one ONNX file.

The graph takes the model's own inputs (BERT: ``input_ids``, ``attention_mask``,
``word_index``, ``word_mask``; BiLSTM: ``input_ids``, ``word_mask``), any batch size and
length, and returns ``emissions`` (B, W, K) and the Viterbi-decoded ``tags`` (B, W),
-1 at padding: a bare ``onnxruntime.InferenceSession`` tags text with no distill code.

* Viterbi runs inside the graph as two ONNX ``Scan`` loops over time (the forward
  max-product pass collecting backpointers, then the backtrack), exported from
  ``torch._higher_order_ops.scan`` by the dynamo exporter; it follows
  :meth:`distill.crf.CRF.decode` step for step, so padding decodes identically.
* BiLSTMs: the PyTorch models pack sequences, which ``torch.export`` cannot trace with
  a dynamic length (it unrolls the LSTM over the example's time steps). Each
  bidirectional layer is exported instead as one ONNX ``LSTM`` node with
  ``sequence_lens`` (a custom op with its own translation), whose backward direction
  starts at each sentence's last real word, exactly like packing.
* Export is checked at once against the PyTorch model on a dev sample: emissions within
  ``EMISSION_TOLERANCE`` and decoded tags identical on every sentence, or it fails with
  the mismatch. For ``onnx-int8`` (ONNX Runtime dynamic int8 of the checked graph) the
  in-graph Viterbi must equal :meth:`CRF.decode` on the graph's own emissions; the
  emission difference to fp32 and the tag agreement are recorded in the folder's meta.
* Running a BiLSTM graph (:class:`OnnxTagger`), distill cuts it to its ``emissions`` at
  load and replays the graph's Viterbi in NumPy with the same float32 operations
  (:class:`GraphDecoder`): the tags are the graph's own, and ONNX Runtime no longer
  runs the ``Scan`` loops kernel by kernel (a third of a batch-1 call). A bare session
  still runs the whole file.
* Text classifiers (meta ``"task": "classify"``) export a graph of their own, returning
  class ``probabilities`` and the argmax ``label``: :mod:`quantize.classify`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from distill.crf import CRF
from distill.errors import DistillError
from distill.modeling import Tagger, TaggerOutput
from quantize import build_skeleton, check_sentences, describe_check, derived_meta, load_source, output_folder, write_model_folder
from quantize.onnx_decode import GraphDecoder, emissions_graph

ONNX_FILE = "model.onnx"
INPUTS = {"bert-crf": ("input_ids", "attention_mask", "word_index", "word_mask"), "bilstm-crf": ("input_ids", "word_mask")}
OUTPUTS = ("emissions", "tags")
EMISSION_TOLERANCE = 1e-3  # max abs emission diff, ONNX fp32 vs PyTorch, at real words
# Graphs of these source kinds are cut to their emissions at load and decoded in NumPy
# (:class:`GraphDecoder`): for a BiLSTM the in-graph Viterbi is a third of a batch-1 call.
# For a BERT it is a sliver of one (no measurable gain on the e5-small or 3-layer ONNX
# int8 teachers and students), while cutting holds the graph twice for a moment (+18 to
# +30 MB peak memory for those two).
HOST_DECODING_KINDS = ("bilstm-crf",)
OPSET = 18


# ---------------------------------------------------------------------------
# The graph


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


def _example_batch(source: Tagger, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
    from distill.features import make_pieces

    pieces = make_pieces(source, sentences[:4])
    return source.collate([p.feature for p in pieces[:4]])


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


# ---------------------------------------------------------------------------
# Running the graph


def make_session(path: Path, device: str = "auto", threads: int | None = None, model_bytes: bytes | None = None):
    """An ONNX Runtime session: CUDA when available (``device`` auto|cpu|cuda), else CPU;
    ``threads`` intra-op threads, default PyTorch's (one per physical core, or as set),
    so ONNX and PyTorch models compare on the same cores. ``model_bytes``: a serialized
    graph to run instead of the file (errors still name ``path``)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device not in ("auto", "cpu", "cuda"):
        raise DistillError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise DistillError("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu); use device cpu")
    use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
    providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes if model_bytes is not None else str(path), sess_options=options,
                                    providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise DistillError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None


def run_session(session, batch: dict[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(emissions (B, W, K) float32, tags (B, W) int64) for a collated batch."""
    feed = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
    emissions, tags = session.run(list(OUTPUTS), feed)
    return emissions, tags


class OnnxTagger:
    """An exported tagger run by ONNX Runtime, with the inference interface of
    :mod:`distill.evaluate` (``labels``, ``meta``, ``kind``, ``max_length``,
    ``encode_words``, ``build_feature``, ``collate``, ``decode_batch``).

    Featurizing is the source model's own (its class rebuilt from the folder's
    tokenizer or vocabulary, with no weights in memory). When the graph's Viterbi is
    found (:class:`GraphDecoder`), the session runs the graph up to ``emissions`` and
    the decoder gives the graph's tags; otherwise the session runs the whole graph.
    """

    kind = "onnx"

    def __init__(self, featurizer: Tagger, session, meta: dict[str, Any], decoder: GraphDecoder | None = None):
        self.featurizer = featurizer
        self.session = session
        self.decoder = decoder
        self.labels = list(featurizer.labels)
        self.meta = dict(meta)
        self.max_length = featurizer.max_length
        self.input_names = [i.name for i in session.get_inputs()]

    def encode_words(self, sentences):
        return self.featurizer.encode_words(sentences)

    def build_feature(self, word_ids):
        return self.featurizer.build_feature(word_ids)

    def collate(self, features):
        return self.featurizer.collate(features)

    def run(self, batch: dict[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(emissions (B, W, K) float32, tags (B, W) int64, -1 at padding) for a collated batch."""
        return self._run({name: batch[name].numpy() for name in self.input_names})

    def _run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.decoder is None:
            emissions, tags = self.session.run(list(OUTPUTS), feed)
            return emissions, tags
        (emissions,) = self.session.run(["emissions"], feed)
        return emissions, self.decoder.decode(emissions, feed["word_mask"].sum(1))

    def decode_batch(self, batch: dict[str, Tensor]) -> list[list[int]]:
        feed = {name: batch[name].numpy() for name in self.input_names}
        mask = feed["word_mask"]
        if self.decoder is not None and len(mask) == 1 and mask.all():  # one sentence, no padding
            (emissions,) = self.session.run(["emissions"], feed)
            return [self.decoder.path(emissions[0])]
        _, tags = self._run(feed)
        return [row[:n] for row, n in zip(tags.tolist(), mask.sum(1).tolist())]

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any], device: str = "auto", threads: int | None = None,
             host_decoding: bool = True) -> "OnnxTagger":
        """``host_decoding=False`` runs the whole graph, its own Viterbi included (as it
        always does for source kinds other than :data:`HOST_DECODING_KINDS`)."""
        if (info.get("meta") or {}).get("task") == "classify":  # a classifier's graph: probabilities and label
            from quantize.classify import OnnxClassifier

            return OnnxClassifier.load(folder, info, device, threads)
        path = folder / ONNX_FILE
        if not path.exists():
            raise DistillError(f"{path}: missing; the ONNX model folder is incomplete")
        featurizer = build_skeleton(folder, info, "meta")
        decoder, graph = None, None
        if host_decoding and featurizer.kind in HOST_DECODING_KINDS:
            import onnx

            try:
                model = onnx.load(str(path))
            except Exception as e:  # onnx's parse errors
                raise DistillError(f"{path}: not a readable ONNX file ({str(e).splitlines()[0][:200]})") from None
            decoder = GraphDecoder.find(model)
            graph = emissions_graph(model) if decoder is not None else None
            del model
            if graph is None:
                decoder = None
        return cls(featurizer, make_session(path, device, threads, model_bytes=graph), info["meta"], decoder)


# ---------------------------------------------------------------------------
# Checking an export against PyTorch


@torch.inference_mode()
def check_export(source: Tagger, session, sentences: Sequence[Sequence[str]], exact: bool,
                 batch_size: int = 32) -> dict[str, Any]:
    """Run ``session`` and ``source`` on the same batches (varied lengths, padded).

    Always: the graph's tags equal :meth:`CRF.decode` of the graph's own emissions.
    ``exact`` (fp32 export): emissions within ``EMISSION_TOLERANCE`` of PyTorch and tags
    identical to PyTorch's on every sentence. Raises :class:`DistillError` naming the
    first mismatch; returns the measured numbers.
    """
    from distill.features import iterate_batches, make_pieces

    # The dev batches (varied sizes and lengths, padded), then one one-word sentence
    # alone: a graph that fixed a size at export fails here.
    pieces = make_pieces(source, [*sentences, sentences[0][:1]])
    batches = list(iterate_batches(source, pieces[:-1], batch_size))
    batches.append(([len(pieces) - 1], source.collate([pieces[-1].feature])))
    max_diff, same, total, same_pieces = 0.0, 0, 0, 0
    for idx, batch in batches:
        ref = source(batch)
        ref_tags = source.decode(ref)
        try:
            emissions, tags = run_session(session, batch)
        except Exception as e:  # onnxruntime's own error types
            shape = tuple(batch["word_mask"].shape)
            raise DistillError(f"ONNX check failed: the graph cannot run a batch of shape {shape}: "
                               f"{str(e).splitlines()[0][:200]}") from None
        emissions, tags = torch.from_numpy(emissions), torch.from_numpy(tags)
        mask = ref.mask
        own = source.decode(TaggerOutput(emissions, mask))
        bad = ((own != tags) & mask).any(1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DistillError(f"ONNX check failed: the in-graph Viterbi differs from CRF.decode on sentence "
                               f"{pieces[idx[i]].sentence} ({int(mask[i].sum())} words)")
        diff = (emissions - ref.emissions).abs()[mask]
        max_diff = max(max_diff, diff.max().item())
        agree = (tags == ref_tags) | ~mask
        if exact:
            if max_diff > EMISSION_TOLERANCE:
                raise DistillError(f"ONNX check failed: emissions differ from PyTorch by {max_diff:.2e} "
                                   f"(tolerance {EMISSION_TOLERANCE:.0e})")
            if not agree.all():
                i = int((~agree.all(1)).nonzero()[0])
                raise DistillError(f"ONNX check failed: tags differ from PyTorch on sentence {pieces[idx[i]].sentence} "
                                   f"({int((~agree[i]).sum())} of {int(mask[i].sum())} words)")
        same += int((agree & mask).sum())
        total += int(mask.sum())
        same_pieces += int(agree.all(1).sum())
    return {"sentences": len(sentences), "pieces": len(pieces), "max_abs_diff": round(max_diff, 6),
            "tolerance": EMISSION_TOLERANCE if exact else None, "tag_agreement": round(same / max(total, 1), 6),
            "identical_sentences": round(same_pieces / max(len(pieces), 1), 6)}


# ---------------------------------------------------------------------------
# The commands' plain functions


def _export(model: Path, out: Path | None, int8: bool, dataset: dict | None, check: int, per_channel: bool,
            quiet: bool) -> Path:
    method = "onnx-int8" if int8 else "onnx"
    out = output_folder(model, out, method)
    source = load_source(model)
    if check < 1:
        raise DistillError(f"--check must be >= 1 (an export is always checked), got {check}")
    if source.meta.get("task") == "classify":
        from quantize.classify import export_classifier

        return export_classifier(source, model, out, int8=int8, dataset=dataset, check=check,
                                 per_channel=per_channel, quiet=quiet)
    sentences = check_sentences(source.meta, dataset, check)
    return write_onnx_folder(
        source, model, out, int8=int8, per_channel=per_channel, quiet=quiet,
        export=lambda path: export_graph(source, path, _example_batch(source, sentences)),
        check=lambda session, exact: check_export(source, session, sentences, exact=exact),
        # the decoding is baked into the graph
        extra_meta={"decoding": "constrained" if source.allowed_transitions() is not None else "free",
                    "inputs": list(input_names(source)), "outputs": list(OUTPUTS)})


def write_onnx_folder(source, model: Path, out: Path, *, int8: bool, per_channel: bool, quiet: bool,
                      export: Callable[[Path], None], check: Callable[[Any, bool], dict[str, Any]],
                      extra_meta: dict[str, Any], finish: Callable[[Path], None] | None = None,
                      what: str = "model") -> Path:
    """Write the ONNX model folder ``out`` of ``source`` (loaded from ``model``), tagger or
    classifier: ``export(path)`` writes the fp32 graph; ``check(session, exact)`` compares a
    session of it with PyTorch (exactly for fp32); for int8 the checked graph is quantized
    (ONNX Runtime dynamic int8) and checked again, the fp32 check kept as ``check_fp32``;
    ``finish(path)`` last touches the final file. ``what`` names it in the saved message."""
    method = "onnx-int8" if int8 else "onnx"
    options: dict[str, Any] = {"opset": OPSET, "exporter": f"torch.onnx dynamo (torch {torch.__version__.split('+')[0]})"}
    if int8:
        options.update(per_channel=per_channel, backend="onnxruntime.quantization.quantize_dynamic (QInt8 weights)")
    meta = derived_meta(source, model, method, options)
    meta.update(extra_meta)

    def write(tmp: Path) -> None:
        fp32 = tmp / (ONNX_FILE if not int8 else "model.fp32.onnx")
        export(fp32)
        meta["check"] = check(make_session(fp32, "cpu"), True)
        if int8:
            meta["check_fp32"] = meta.pop("check")
            _quantize_onnx(fp32, tmp / ONNX_FILE, per_channel)
            fp32.unlink()
            meta["check"] = check(make_session(tmp / ONNX_FILE, "cpu"), False)
        if finish is not None:
            finish(tmp / ONNX_FILE)
        meta["onnx_bytes"] = (tmp / ONNX_FILE).stat().st_size

    # a classifier's folder has the same kind; loading dispatches on its meta task
    write_model_folder(out, kind=OnnxTagger.kind, source=source, meta=meta, write_weights=write)
    if not quiet:
        print(f"{method} {what} saved to {out} ({meta['onnx_bytes'] / 2**20:.1f} MiB)"
              f"{describe_check(meta['check'], precise=True)}")
    return out


def _quantize_onnx(src: Path, dst: Path, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import logging

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs pre-processing advice at WARNING
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)


def export_onnx(*, model: Path, out: Path | None = None, dataset: dict | None = None, check: int = 200,
                quiet: bool = False) -> Path:
    """Export ``model`` with its CRF decoding to ``out/model.onnx`` (default ``MODEL-onnx``),
    checked against PyTorch on ``check`` dev sentences."""
    return _export(model, out, False, dataset, check, False, quiet)


def export_onnx_int8(*, model: Path, out: Path | None = None, dataset: dict | None = None, check: int = 200,
                     per_channel: bool = True, quiet: bool = False) -> Path:
    """Export ``model`` as above, then quantize its weights to int8 with ONNX Runtime
    (dynamic: activations quantized at run time); default folder ``MODEL-onnx-int8``."""
    return _export(model, out, True, dataset, check, per_channel, quiet)
