"""Running an exported model with ONNX Runtime: :func:`make_session` (tagger or
classifier), and :class:`OnnxTagger`, a tagger's graph behind distill's inference interface.

Running a BiLSTM graph, distill cuts it to its ``emissions`` at load and replays the
graph's Viterbi in NumPy with the same float32 operations (:class:`GraphDecoder`): the
tags are the graph's own, and ONNX Runtime no longer runs the ``Scan`` loops kernel by
kernel (a third of a batch-1 call). A bare session still runs the whole file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill.errors import DistillError
from distill.modeling import Tagger
from quantize import build_skeleton
from quantize.onnx_decode import GraphDecoder, emissions_graph
from quantize.onnx_graph import OUTPUTS

ONNX_FILE = "model.onnx"
# Graphs of these source kinds are cut to their emissions at load and decoded in NumPy
# (:class:`GraphDecoder`): for a BiLSTM the in-graph Viterbi is a third of a batch-1 call.
# For a BERT it is a sliver of one (no measurable gain on the e5-small or 3-layer ONNX
# int8 teachers and students), while cutting holds the graph twice for a moment (+18 to
# +30 MB peak memory for those two).
HOST_DECODING_KINDS = ("bilstm-crf",)


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
