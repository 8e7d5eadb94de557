"""The ``tags`` half of an exported tagger graph, run in NumPy instead of ONNX Runtime.

:func:`quantize.onnx_graph.viterbi` exports the CRF's Viterbi as two ONNX ``Scan``
loops; ONNX Runtime runs their bodies one small kernel at a time, several per word,
which for a BiLSTM is a third of a batch-1 call. :class:`GraphDecoder` reads that
Viterbi's constants from the file and replays its steps with the same float32
operations, so its tags are the graph's own, bit for bit; :func:`emissions_graph` cuts
the graph to what its ``emissions`` need, for the session to run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class GraphDecoder:
    """The exported Viterbi's constants (``start`` (K,), ``end`` (K,), ``transitions``
    (K, K), constraint penalties included) read from the file, and its steps replayed
    with the same float32 additions, maxima and first-index argmaxes, so the tags are
    the graph's own, bit for bit.

    :meth:`find` reads the constants from the graph's layout as
    :func:`quantize.onnx_graph.export_graph` writes it, and gives None for any other
    graph (a softmax head, another exporter), which then runs whole.
    """

    def __init__(self, start: np.ndarray, end: np.ndarray, transitions: np.ndarray):
        self.start, self.end, self.transitions = start, end, transitions

    @classmethod
    def find(cls, model) -> "GraphDecoder | None":
        """The decoder of an ``onnx.ModelProto`` exported by distill, or None."""
        from onnx import AttributeProto, numpy_helper

        graph = model.graph
        initializers = {t.name: t for t in graph.initializer}
        constants = {n.output[0]: a.t for n in graph.node if n.op_type == "Constant"
                     for a in n.attribute if a.name == "value"}

        def constant(name: str, shape: tuple[int, ...], scope=()) -> np.ndarray | None:
            for table in (*scope, initializers, constants):
                if name in table:
                    value = numpy_helper.to_array(table[name])
                    return value if value.shape == shape and value.dtype == np.float32 else None
            return None

        def body(node):
            return next((a.g for a in node.attribute if a.type == AttributeProto.GRAPH and a.name == "body"), None)

        scans = [n for n in graph.node if n.op_type == "Scan"]
        forward = [n for n in scans if body(n) is not None and any(b.op_type == "ReduceMax" for b in body(n).node)]
        outputs = {o.name for o in graph.output}
        if len(scans) != 2 or len(forward) != 1 or "emissions" not in outputs or "tags" not in outputs:
            return None
        forward = forward[0]
        producer = {o: n for n in graph.node for o in n.output}
        # start: the constant of the Add that makes the first scan state (start + emissions[:, 0])
        first = producer.get(forward.input[0])
        if first is None or first.op_type != "Add":
            return None
        sizes = [initializers[x].dims[0] for x in first.input if x in initializers and len(initializers[x].dims) == 1]
        K = sizes[0] if len(sizes) == 1 else 0
        starts = [c for c in (constant(x, (K,)) for x in first.input) if c is not None]
        # end: the constant of the Add on the final state, whose argmax is the last tag
        ends = []
        for n in graph.node:
            if n.op_type == "Add" and forward.output[0] in n.input:
                consumers = [m for m in graph.node if n.output[0] in m.input]
                if [m.op_type for m in consumers] == ["ArgMax"]:
                    ends += [c for c in (constant(x, (K,)) for x in n.input) if c is not None]
        # transitions: the one (K, K) constant the forward body adds to the unsqueezed state
        scan_body = body(forward)
        local = ({t.name: t for t in scan_body.initializer},
                 {n.output[0]: a.t for n in scan_body.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
        unsqueezed = {n.output[0] for n in scan_body.node if n.op_type == "Unsqueeze" and n.input[0] == scan_body.input[0].name}
        transitions = [c for n in scan_body.node if n.op_type == "Add" and any(x in unsqueezed for x in n.input)
                       for c in (constant(x, (K, K), local) for x in n.input) if c is not None]
        if len(starts) != 1 or len(ends) != 1 or len(transitions) != 1:
            return None
        return cls(starts[0], ends[0], transitions[0])

    def decode(self, emissions: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
        """Tags (B, T) int64, -1 past each length, of emissions (B, T, K) float32.

        The exported Viterbi's forward pass (score_0 = start + e_0; score_t = max_i(score_{t-1}(i)
        + transitions(i, j)) + e_t(j)), the last tag argmax(score_{L-1} + end), and the
        back-pointers argmax_i(score_{t-1}(i) + transitions(i, j)), taken together after
        the pass. Positions past a sentence's length never reach its real ones, so they
        need no masking here (the graph carries the score through them instead).
        """
        B, T, K = emissions.shape
        tags = np.full((B, T), -1, dtype=np.int64)
        if B == 1:
            L = int(lengths[0])
            tags[0, :L] = self.path(emissions[0, :L])
            return tags
        trans = self.transitions
        scores = np.empty((T, B, K), dtype=emissions.dtype)
        np.add(self.start, emissions[:, 0], out=scores[0])
        work = np.empty((B, K, K), dtype=emissions.dtype)
        with np.errstate(all="ignore"):  # whatever sits at padding only reaches padding
            for t in range(1, T):
                np.add(scores[t - 1][:, :, None], trans, out=work)
                np.maximum.reduce(work, axis=1, out=scores[t])
                scores[t] += emissions[:, t]
            lengths = np.asarray(lengths, dtype=np.int64)
            rows = np.arange(B)
            tag = (scores[lengths - 1, rows] + self.end).argmax(1)
            pointers = (scores[:-1, :, :, None] + trans).argmax(2)  # shape: (T - 1, B, K)
        for t in range(T - 1, -1, -1):
            real = t < lengths
            tags[real, t] = tag[real]
            if t:
                tag = np.where(real, pointers[t - 1, rows, tag], tag)
        return tags

    def path(self, emissions: np.ndarray) -> list[int]:
        """The tags of one sentence, emissions (L, K): :meth:`decode` without a batch
        (three NumPy calls per word, the back-pointers followed in Python)."""
        L, K = emissions.shape
        trans = self.transitions
        scores = np.empty((L, K), dtype=emissions.dtype)
        np.add(self.start, emissions[0], out=scores[0])
        work = np.empty((K, K), dtype=emissions.dtype)
        # row views made once: indexing costs as much as the arithmetic at this size
        rows, columns, emitted = list(scores), list(scores[:, :, None]), list(emissions)
        add, maximum = np.add, np.maximum.reduce
        for t in range(1, L):
            add(columns[t - 1], trans, out=work)
            maximum(work, 0, None, rows[t])
            add(rows[t], emitted[t], out=rows[t])
        tag = int((scores[L - 1] + self.end).argmax())
        path = [tag] * L
        if L > 1:
            pointers = (scores[:-1, :, None] + trans).argmax(1).tolist()  # [t - 1][j]: the best tag before j at t
            for t in range(L - 1, 0, -1):
                path[t - 1] = tag = pointers[t - 1][tag]
        return path


def emissions_graph(model) -> bytes | None:
    """``model`` (an ``onnx.ModelProto``, changed in place) cut down to what its
    ``emissions`` output needs, serialized; None when that part holds a subgraph."""
    from onnx import AttributeProto

    graph = model.graph
    needed, keep = {"emissions"}, []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
                return None  # its body could read outer names this walk does not see
            copy = type(node)()
            copy.CopyFrom(node)
            keep.append(copy)
            needed.update(node.input)
    outputs = []
    for o in graph.output:
        if o.name == "emissions":
            copy = type(o)()
            copy.CopyFrom(o)
            outputs.append(copy)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    del graph.output[:]
    graph.output.extend(outputs)
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name not in needed:
            del graph.initializer[i]
    return model.SerializeToString()
