"""Viterbi decoding for :class:`distill.crf.CRF`, in NumPy: a batch of sentences
(:func:`_viterbi`) and one sentence (:func:`_viterbi_one`, the same arithmetic with
fewer calls, so the same path).

Both take the decoding constants ``start`` (K,), ``end`` (K,) and ``trans`` (K, K) as
:meth:`distill.crf.CRF.decoding_parameters` gives them (constraint penalties included),
as NumPy arrays of the emissions' dtype. Why NumPy and why from both ends at once: see
:mod:`distill.crf`.
"""

from __future__ import annotations

import numpy as np


def _viterbi(em: np.ndarray, lengths: np.ndarray, start: np.ndarray, end: np.ndarray, trans: np.ndarray,
             pad: int) -> np.ndarray:
    """Best tag paths (B, T) int64, ``pad`` past each length, for emissions ``em`` (B, T, K).

    In NumPy, whose calls on arrays this small cost a fraction of torch's, and from
    both ends at once: the max-product forward pass over each sentence's first half,
    alpha_t(j) = emissions[t, j] + max_i (alpha_{t-1}(i) + transitions[i, j]), and the
    backward pass over its second half, beta_t(i) = emissions[t, i] + max_j
    (transitions[i, j] + beta_{t+1}(j)), run side by side as one batch of 2B columns,
    so the loops take half the steps. The best path crosses the middle at the pair
    argmax_(i, j) alpha_{f-1}(i) + transitions[i, j] + beta_f(j); the two halves are
    then traced back from there, again side by side. The backtrace recomputes the one
    argmax it needs per step instead of storing back-pointers.
    """
    B, T, K = em.shape
    dt = em.dtype
    f = (lengths + 1) // 2  # positions 0 .. f-1 come from the forward pass
    c = lengths - f  # positions f .. L-1 from the backward pass (none for L = 1)
    S = int(f.max())
    W = 2 * B  # columns: B forward halves, then B backward halves
    steps = np.arange(S)[:, None]
    position = np.empty((S, W), dtype=np.int64)  # the position step s stands for in each column
    position[:, :B] = steps
    position[:, B:] = np.maximum(lengths - 1 - steps, 0)
    sentence = np.concatenate([np.arange(B), np.arange(B)])
    # Tags before columns, (K, W) per step: the add and the max run along rows of W.
    flat = sentence * T + position  # shape: (S, W), indices into (B * T)
    e = np.take(em.reshape(B * T, K), flat, axis=0)  # shape: (S, W, K)
    e = list(np.ascontiguousarray(e.transpose(0, 2, 1)))  # S x (K, W)
    step_trans = np.empty((K, K, W), dtype=dt)  # transitions for the forward columns, transposed for the backward
    step_trans[:, :, :B] = trans[:, :, None]
    step_trans[:, :, B:] = trans.T[:, :, None]
    scores = np.empty((S, K, W), dtype=dt)
    score = list(scores)
    np.add(e[0][:, :B], start[:, None], out=score[0][:, :B])
    np.add(e[0][:, B:], end[:, None], out=score[0][:, B:])
    work = np.empty((K, K, W), dtype=dt)
    for s in range(1, S):
        np.add(score[s - 1][:, None, :], step_trans, out=work)
        np.maximum.reduce(work, axis=0, out=score[s])
        score[s] += e[s]
    # Where each path crosses from its forward half into its backward half.
    rows = np.arange(B)
    alpha = scores[f - 1, :, rows]  # shape: (B, K)
    beta = scores[np.maximum(c - 1, 0), :, B + rows]  # shape: (B, K)
    pair = (alpha[:, :, None] + trans + beta[:, None, :]).reshape(B, K * K).argmax(1)
    two = c > 0
    left = np.where(two, pair // K, (alpha + end).argmax(1))
    right = pair % K
    # Trace both halves back, every column at every step. A column's score row is +inf
    # at its crossing tag at its crossing step, so the argmax lands there whatever
    # (unused) tag the column held before.
    by_row = np.ascontiguousarray(scores.transpose(0, 2, 1))  # shape: (S, W, K)
    by_row[f - 1, rows, left] = np.inf
    by_row[np.maximum(c - 1, 0), B + rows, right] = np.inf  # (for L = 1 an unused column)
    table = np.stack([trans.T, trans])  # table[0, j] = transitions[:, j]; table[1, i] = transitions[i, :]
    half = np.repeat([0, 1], B)
    path = np.empty((S, W), dtype=np.int64)
    tag, by_row = list(path), list(by_row)
    np.argmax(by_row[S - 1], axis=1, out=tag[S - 1])
    for s in range(S - 1, 0, -1):
        x = table[half, tag[s]]
        x += by_row[s - 1]
        np.argmax(x, axis=1, out=tag[s - 1])
    # Each real position is one used (step, column); the rest write to a spare last slot.
    used = steps < np.concatenate([f, c])  # shape: (S, W)
    tags = np.full(B * T + 1, pad, dtype=np.int64)
    tags[np.where(used, flat, B * T)] = path
    return tags[:-1].reshape(B, T)


def _viterbi_one(em: np.ndarray, start: np.ndarray, end: np.ndarray, trans: np.ndarray) -> list[int]:
    """The best tag path of one sentence, emissions ``em`` (L, K), as a list of L tag ids.

    :func:`_viterbi` for a batch of one: the same max-product passes from both ends,
    the same additions in the same order and the same first-index argmaxes, so it finds
    the same path to the last bit (ties and rounding included). What it saves is calls:
    it builds no (S, W) index tables, and it takes each half's back-pointers from the
    stored scores in one vectorised argmax after the passes, then follows them in
    Python, instead of three NumPy calls per step.
    """
    L, K = em.shape
    f = (L + 1) // 2  # positions 0 .. f-1 come from the forward pass
    c = L - f  # positions L-1 down to f from the backward pass: its step s stands for L-1-s
    both = np.empty((2, K, K), dtype=em.dtype)  # [0]: transitions; [1]: transposed, for the backward pass
    both[0] = trans
    both[1] = trans.T
    e = np.zeros((f, 2, K), dtype=em.dtype)  # the emissions each pass adds at each step
    e[:, 0] = em[:f]
    e[:c, 1] = em[::-1][:c]
    scores = np.empty((f, 2, K), dtype=em.dtype)
    np.add(e[0, 0], start, out=scores[0, 0])
    np.add(e[0, 1], end, out=scores[0, 1])
    work = np.empty((2, K, K), dtype=em.dtype)
    # row views made once: indexing costs as much as the arithmetic at this size
    rows, columns, emitted = list(scores), list(scores[:, :, :, None]), list(e)
    add, maximum = np.add, np.maximum.reduce
    for s in range(1, f):
        add(columns[s - 1], both, out=work)
        maximum(work, 1, None, rows[s])
        add(rows[s], emitted[s], out=rows[s])
    alpha = scores[f - 1, 0]  # shape: (K,)
    if c:
        beta = scores[c - 1, 1]  # shape: (K,)
        pair = int((alpha[:, None] + trans + beta[None, :]).argmax())
        left, right = pair // K, pair % K
    else:  # one position
        left = int((alpha + end).argmax())
    path = [0] * L
    path[f - 1] = tag = left
    if f > 1:
        pointers = (scores[:-1, 0, :, None] + trans).argmax(1).tolist()  # [s - 1][j]: best i before j at s
        for s in range(f - 1, 0, -1):
            path[s - 1] = tag = pointers[s - 1][tag]
    if c:
        path[L - c] = tag = right
        if c > 1:
            pointers = (scores[: c - 1, 1, None, :] + trans).argmax(2).tolist()  # [s - 1][i]: best k after i
            for s in range(c - 1, 0, -1):
                path[L - s] = tag = pointers[s - 1][tag]
    return path
