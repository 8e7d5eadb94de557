"""A linear-chain CRF with batched Viterbi decoding, the forward algorithm and
forward-backward marginals, all with exact gradients.

Parameters have pytorch-crf's names and meaning (``start_transitions`` (K,),
``end_transitions`` (K,), ``transitions`` (K, K) with ``transitions[i, j]`` the score
of moving from tag i to tag j), so a ``torchcrf.CRF`` state dict loads as is and
pytorch-crf stays the reference the tests compare against (note that its
``forward`` is the log-likelihood; ours is the negative log-likelihood, the loss).
Everything is batch-first: ``emissions`` (B, T, K), ``mask`` (B, T) bool with the
real positions of each sentence first (left-aligned; ``mask[:, 0]`` all true).

Why it is fast. On a CPU, at NER sizes (B x K x K is a few thousand numbers), a
tensor operation costs its dispatch overhead, not its arithmetic, so the loops over
time steps do as few operations per step as possible and everything else is done
once, vectorised over all steps:

* Viterbi runs in NumPy, whose calls on arrays this small cost a fraction of
  torch's, and from both ends of the sentences at once (meet in the middle), so its
  loops take half the steps; the backtrace recomputes the one argmax it needs per
  step instead of storing back-pointers. One sentence (batch-1 inference) runs the
  same passes with fewer calls (:func:`_viterbi_one`: back-pointers in one argmax
  after the passes), and the decoding constants are kept between calls.
* The forward-backward loops sort the batch by length, longest first, so the
  sentences still running at step t are a prefix of the batch: a step works on that
  prefix in place, and no ``torch.where`` carries finished sentences along.
* log Z, its gradient and the marginals run the forward-backward recursions in
  probability space, in float64, with each alpha_t and beta_t rescaled to sum 1: a
  step is one (n, K) @ (K, K) product, a product with exp(emissions[t]) and a
  rescaling, instead of a (B, K, K) log-sum-exp. log Z is the sum of the logs of the
  rescaling factors plus the maxima subtracted before exponentiating. The gradients
  are not traced by autograd step by step: they are the marginals (for log Z) and
  their covariances (for the marginals, by a second forward-backward pass of
  conditional expectations), computed by hand in ``backward``.

Float64 keeps ratios down to e^-700 exact, far beyond any trained model's scores.
Should an emission still underflow (scores more than ~700 apart at one position) or
a result come out non-finite, the same quantity is recomputed by the log-space
recursion, exact for any scores but slower.

No Python loop runs over the batch; loops run over time steps only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

REDUCTIONS = ("none", "sum", "mean")
_TINY = 1e-300
# Score added to a forbidden start or transition when decoding is constrained: finite, so
# the meet-in-the-middle backtrace never adds -inf to +inf; far below any learned score.
FORBIDDEN = -1e4


class CRF(nn.Module):
    def __init__(self, num_tags: int):
        super().__init__()
        if num_tags <= 0:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    # --- scores ----------------------------------------------------------------
    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor, reduction: str = "mean") -> Tensor:
        """Negative log-likelihood of ``tags``.

        emissions: (B, T, K); tags: (B, T) long (any value at padding); mask: (B, T)
        bool. ``reduction``: none -> (B,), sum or mean over sentences -> scalar.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        nll = -self.log_likelihood(emissions, tags, mask)
        if reduction == "none":
            return nll
        return nll.sum() if reduction == "sum" else nll.mean()

    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """log p(tags | emissions) per sentence, shape (B,); emissions (B, T, K), tags
        and mask (B, T)."""
        lengths = self._check(emissions, mask, tags)
        # Both terms in float64: they are large and nearly cancel.
        log_z = self._log_partition(emissions, mask, lengths, 1.0)
        return (self._score(emissions, tags, mask, lengths) - log_z).to(emissions.dtype)

    def _score(self, emissions: Tensor, tags: Tensor, mask: Tensor, lengths: np.ndarray) -> Tensor:
        """The unnormalised score of ``tags``, shape (B,) float64: start + emissions +
        transitions + end."""
        K = self.num_tags
        tags = tags.masked_fill(~mask, 0)
        # masked_fill, not a product with the mask: whatever sits at padding (even inf) adds 0
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2).double().masked_fill(~mask, 0.0)  # shape: (B, T)
        trans = self.transitions.reshape(-1)[tags[:, :-1] * K + tags[:, 1:]].double()  # shape: (B, T - 1)
        trans = trans.masked_fill(~mask[:, 1:], 0.0)
        last_index = torch.from_numpy(lengths - 1).to(tags.device).unsqueeze(1)
        last = tags.gather(1, last_index).squeeze(1)  # shape: (B,)
        ends = self.start_transitions[tags[:, 0]] + self.end_transitions[last]  # shape: (B,)
        return ends.double() + emit.sum(1) + trans.sum(1)

    def log_partition(self, emissions: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
        """log Z per sentence, shape (B,), of the CRF over ``emissions / temperature``
        and ``transitions / temperature``; emissions (B, T, K), mask (B, T). Differentiable.

        The forward algorithm, alpha_t(j) = sum_i alpha_{t-1}(i) exp(transitions[i, j])
        exp(emissions[t, j]), log Z = log sum_j alpha_{T-1}(j) exp(end_transitions[j]).
        """
        lengths = self._check(emissions, mask)
        return self._log_partition(emissions, mask, lengths, temperature).to(emissions.dtype)

    def _log_partition(self, emissions: Tensor, mask: Tensor, lengths: np.ndarray, temperature: float) -> Tensor:
        """log Z (B,) in float64."""
        start, end, trans, emissions = self._tempered(emissions, temperature)
        lattice = _Lattice(start, end, trans, emissions, lengths)
        log_z = None if lattice.underflow else _LogPartition.apply(lattice, start, end, trans, emissions)
        if log_z is None or not bool(torch.isfinite(log_z).all()):
            log_z = _log_partition_logspace(*(x.double() for x in (start, end, trans, emissions)), mask)
        return log_z

    def marginals(self, emissions: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
        """Posterior tag marginals p(y_t = k | x), shape (B, T, K), zero at padding.

        Forward-backward over ``emissions / temperature`` and ``transitions /
        temperature`` (the tempered CRF of structure-level KD): p(y_t = k) =
        alpha_t(k) beta_t(k) / Z. Differentiable (the gradient is the covariance of
        the tag indicators, computed exactly). emissions: (B, T, K); mask: (B, T) bool.
        """
        lengths = self._check(emissions, mask)
        start, end, trans, emissions = self._tempered(emissions, temperature)
        lattice = _Lattice(start, end, trans, emissions, lengths)
        probs = None if lattice.underflow else _Marginals.apply(lattice, start, end, trans, emissions)
        if probs is None or not bool(torch.isfinite(probs).all()):
            probs = _marginals_logspace(*(x.double() for x in (start, end, trans, emissions)), mask)
        return probs.to(emissions.dtype) * mask.unsqueeze(2).to(emissions.dtype)

    def _tempered(self, emissions: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        params = (self.start_transitions, self.end_transitions, self.transitions, emissions)
        if temperature == 1.0:
            return params
        return tuple(p / temperature for p in params)  # type: ignore[return-value]

    # --- decoding --------------------------------------------------------------
    def decoding_parameters(self, allowed: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(start_transitions, end_transitions, transitions)`` as Viterbi uses them, detached:
        with ``allowed`` (``start`` (K,) and ``trans`` (K, K) bool, e.g. from
        :func:`distill.schemes.allowed_transitions`) every forbidden start or transition
        scores :data:`FORBIDDEN`, so no decoded path takes one."""
        start, end, trans = (p.detach() for p in (self.start_transitions, self.end_transitions, self.transitions))
        if allowed is not None:
            ok_start, ok_trans = (torch.as_tensor(a, dtype=torch.bool, device=start.device) for a in allowed)
            start = start.masked_fill(~ok_start, FORBIDDEN)
            trans = trans.masked_fill(~ok_trans, FORBIDDEN)
        return start, end, trans

    def decode(self, emissions: Tensor, mask: Tensor, pad: int = -1,
               allowed: tuple[np.ndarray, np.ndarray] | None = None) -> Tensor:
        """Viterbi: the best tag path per sentence, shape (B, T) long, ``pad`` past each
        length. emissions: (B, T, K); mask: (B, T) bool; ``allowed``: constrain the paths
        (see :meth:`decoding_parameters`). See :func:`_viterbi` (one sentence:
        :func:`_viterbi_one`, the same arithmetic, so the same path)."""
        lengths = self._check(emissions, mask)
        B, T, K = emissions.shape
        if B == 0:
            return torch.full((0, T), pad, dtype=torch.long, device=emissions.device)
        if emissions.dtype not in (torch.float32, torch.float64):
            emissions = emissions.float()
        em = emissions.detach().cpu().numpy()
        start, end, trans = self._decoding_arrays(allowed, em.dtype)
        if B == 1:
            L = int(lengths[0])
            tags = np.full((1, T), pad, dtype=np.int64)
            tags[0, :L] = _viterbi_one(em[0, :L], start, end, trans)
        else:
            tags = _viterbi(em, lengths, start, end, trans, pad)
        return torch.from_numpy(tags).to(emissions.device)

    def _decoding_arrays(self, allowed, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`decoding_parameters` as NumPy arrays of ``dtype``, kept until the
        parameters change (version counter, storage or device) or another ``allowed``
        object is given: decoding one sentence at a time asks for them on every call."""
        params = (self.start_transitions, self.end_transitions, self.transitions)
        try:
            key = (np.dtype(dtype), *((p._version, p.data_ptr(), p.device) for p in params))
        except RuntimeError:  # inference tensors keep no version counter: nothing to key on
            key = None
        cached = self.__dict__.get("_decoding_cache")
        if key is not None and cached is not None and cached[0] is allowed and cached[1] == key:
            return cached[2]
        arrays = tuple(p.cpu().numpy().astype(dtype, copy=True) for p in self.decoding_parameters(allowed))
        if key is not None:
            self.__dict__["_decoding_cache"] = (allowed, key, arrays)
        return arrays

    # --- checks ----------------------------------------------------------------
    def _check(self, emissions: Tensor, mask: Tensor, tags: Tensor | None = None) -> np.ndarray:
        """Validate shapes and the mask; return the lengths (B,) int64."""
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags:
            raise ValueError(f"emissions must be (batch, length, {self.num_tags}), got {tuple(emissions.shape)}")
        if emissions.size(1) == 0:
            raise ValueError("emissions have length 0; every sentence needs at least one position")
        if mask.shape != emissions.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(emissions.shape[:2])}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        if tags is not None and tags.shape != emissions.shape[:2]:
            raise ValueError(f"tags must have shape {tuple(emissions.shape[:2])}, got {tuple(tags.shape)}")
        m = mask.cpu().numpy()
        lengths = m.sum(1)
        # left-aligned: true first, and never a true right after a false
        if m.shape[0] and not (m[:, 0].all() and not (m[:, 1:] > m[:, :-1]).any()):
            raise ValueError("mask must be left-aligned with mask[:, 0] all true: every sentence has at "
                             "least one position, and its real positions come first")
        return lengths


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


class _Order:
    """The batch sorted by length, longest first, so that the sentences still running
    at step t are the first ``active[t]`` rows. ``order``, ``inverse`` and ``lengths``
    (sorted) are NumPy arrays; ``to(device)`` adds their torch versions."""

    def __init__(self, lengths: np.ndarray, T: int):
        B = len(lengths)
        self.order = np.argsort(-lengths, kind="stable")
        self.identity = bool((self.order == np.arange(B)).all())
        self.inverse = np.argsort(self.order)
        self.lengths = lengths[self.order]
        self.active = (B - np.cumsum(np.bincount(lengths, minlength=T + 1))[:T]).tolist()  # sentences longer than t
        self.steps = int(self.lengths[0]) if B else 0  # positions any sentence has

    def to(self, device) -> "_Order":
        self.order_t = torch.from_numpy(self.order).to(device)
        self.inverse_t = torch.from_numpy(self.inverse).to(device)
        self.lengths_t = torch.from_numpy(self.lengths).to(device)
        return self

    def time_major(self, x: Tensor) -> Tensor:
        """(B, T, ...) in batch order -> (T, B, ...) contiguous, sorted."""
        if not self.identity:
            x = x.index_select(0, self.order_t)
        return x.transpose(0, 1).contiguous()

    def batch_major(self, x: Tensor) -> Tensor:
        """(T, B, ...) sorted -> (B, T, ...) in batch order."""
        x = x.transpose(0, 1)
        return x if self.identity else x.index_select(0, self.inverse_t)

    def unsort(self, x: Tensor) -> Tensor:
        """(B, ...) sorted -> batch order."""
        return x if self.identity else x.index_select(0, self.inverse_t)


class _Lattice:
    """Forward-backward in probability space (float64, every alpha_t / beta_t rescaled
    to sum 1) over a sorted, time-major batch, and the gradients of log Z and of the
    marginals. Built from detached inputs; the autograd Functions below use it.

    Shapes (sorted, time-major): ``emit`` = exp(emissions - max over tags) (T, B, K);
    ``trans`` = exp(transitions - max) (K, K). The subtracted maxima are constants:
    log Z does not depend on them, so the gradients are exact.
    """

    def __init__(self, start: Tensor, end: Tensor, trans: Tensor, emissions: Tensor, lengths: np.ndarray):
        dt = torch.float64
        with torch.no_grad():
            T = emissions.size(1)
            self.order = _Order(lengths, T).to(emissions.device)
            B = emissions.size(0)
            self.valid = torch.arange(T, device=emissions.device).unsqueeze(1) < self.order.lengths_t  # shape: (T, B)
            # Padding is never part of a path; zeroing it keeps any value there (even inf) out.
            e = self.order.time_major(emissions.detach().to(dt)).masked_fill(~self.valid.unsqueeze(2), 0.0)
            self.shift = e.amax(2)  # shape: (T, B)
            self.emit = (e - self.shift.unsqueeze(2)).exp_()  # shape: (T, B, K)
            self.underflow = bool((self.emit == 0).any())
            start, end, trans = (p.detach().to(dt) for p in (start, end, trans))
            self.consts = start.max() + end.max()
            self.t_max = trans.max()
            self.exp_start, self.exp_end = (start - start.max()).exp(), (end - end.max()).exp()
            self.trans = (trans - self.t_max).exp()
            self.trans_t = self.trans.t().contiguous()
            self.last = (self.order.lengths_t - 1, torch.arange(B, device=e.device))  # index of each last position
        self.alphas = self.betas = None

    def forward(self) -> None:
        """alphas (T, B, K) rescaled; ``scales`` (T, B, 1) the factors; ``pred`` (T, B, K)
        = alpha_{t-1} @ exp(transitions), before the emission."""
        emit, active = self.emit, self.order.active
        T, B, K = emit.shape
        self.alphas = alphas = torch.zeros_like(emit)
        self.pred = pred = torch.ones_like(emit)
        self.scales = scales = torch.ones((T, B, 1), dtype=emit.dtype, device=emit.device)
        a = torch.mul(self.exp_start, emit[0], out=alphas[0])
        torch.sum(a, 1, keepdim=True, out=scales[0])
        a.div_(scales[0])
        for t in range(1, self.order.steps):
            n = active[t]
            p, a, c = pred[t, :n], alphas[t, :n], scales[t, :n]
            torch.mm(alphas[t - 1, :n], self.trans, out=p)
            torch.mul(p, emit[t, :n], out=a)
            torch.sum(a, 1, keepdim=True, out=c)
            a.div_(c)

    def backward(self) -> None:
        """betas (T, B, K) rescaled; ``succ`` (T, B, K) = exp(transitions) @ (emit_{t+1} *
        beta_{t+1}), before rescaling."""
        emit, active = self.emit, self.order.active
        self.betas = betas = (self.exp_end / self.exp_end.sum()).expand_as(emit).clone()
        self.succ = succ = torch.ones_like(emit)
        for t in range(self.order.steps - 1, 0, -1):
            n = active[t]
            s = succ[t - 1, :n]
            torch.mm(betas[t, :n] * emit[t, :n], self.trans_t, out=s)
            torch.div(s, s.sum(1, keepdim=True), out=betas[t - 1, :n])

    def log_partition(self) -> Tensor:
        """log Z (B,) in batch order."""
        self.forward()
        valid = self.valid.to(self.emit.dtype)
        lengths = self.order.lengths_t.to(self.emit.dtype)
        last = (self.alphas[self.last] * self.exp_end).sum(1)  # shape: (B,)
        log_z = (self.scales.squeeze(2).log().sum(0) + (self.shift * valid).sum(0) + last.log()
                 + (lengths - 1) * self.t_max + self.consts)
        return self.order.unsort(log_z)

    def marginals(self) -> Tensor:
        """p(y_t = k) (T, B, K), sorted, zero at padding."""
        if self.alphas is None:
            self.forward()
        if self.betas is None:
            self.backward()
        joint = self.alphas * self.betas
        norm = joint.sum(2, keepdim=True).masked_fill_(~self.valid.unsqueeze(2), 1.0)
        self.mu = joint.div_(norm)
        return self.mu

    def _step_weights(self) -> tuple[Tensor, Tensor]:
        """``u`` = emit * beta (T, B, K) and 1 / D_t (T - 1, B), zero where step t is
        padding: the pairwise marginal is p(y_{t-1} = i, y_t = j) =
        alpha_{t-1}(i) trans(i, j) u_t(j) / D_t."""
        u = self.emit * self.betas
        D = (self.alphas[:-1] * self.succ[:-1]).sum(2)  # shape: (T - 1, B)
        inv_D = torch.where(self.valid[1:], 1.0 / D.clamp_min(_TINY), 0.0)
        return u, inv_D

    def _param_grads(self, d_emit: Tensor, pair_left: Tensor, u: Tensor, pair_right: Tensor | None = None):
        """Gradients for (start, end, transitions, emissions) from the per-position gradient
        ``d_emit`` (T, B, K) and the pairwise weights: d transitions = trans *
        sum_t (pair_left_{t-1}^T u_t [+ alphas_{t-1}^T pair_right_t])."""
        d_start = d_emit[0].sum(0)
        d_end = d_emit[self.last].sum(0)
        K = self.trans.size(0)
        d_trans = pair_left.reshape(-1, K).t() @ u[1:].reshape(-1, K)
        if pair_right is not None:
            d_trans = d_trans + self.alphas[:-1].reshape(-1, K).t() @ pair_right.reshape(-1, K)
        d_emissions = self.order.batch_major(d_emit)  # shape: (B, T, K)
        return d_start, d_end, d_trans * self.trans, d_emissions

    def log_partition_grads(self, grad: Tensor):
        """Gradients of sum_b grad_b log Z_b: the marginals and pairwise marginals."""
        g = grad.to(self.emit.dtype)
        if not self.order.identity:
            g = g.index_select(0, self.order.order_t)
        mu = self.marginals()
        u, inv_D = self._step_weights()
        pair_left = self.alphas[:-1] * (inv_D * g).unsqueeze(2)
        return self._param_grads(mu * g[:, None], pair_left, u)

    def marginal_grads(self, grad: Tensor):
        """Gradients of sum G * marginals (G = ``grad``, (B, T, K)): with S = sum_t G_t(y_t),
        d/d emissions_t(j) = p(y_t = j) (E[S | y_t = j] - E[S]) and d/d transitions(i, j)
        = sum_t p(y_{t-1} = i, y_t = j) (E[S | y_{t-1} = i, y_t = j] - E[S]).

        E[S | y_t = j] = phi_t(j) + psi_t(j), the expected sum of G up to t and after
        t, by one more forward and backward pass: phi_t = G_t + ((alpha_{t-1} phi_{t-1})
        @ trans) / pred_t, psi_{t-1} = (trans @ (u_t (G_t + psi_t))) / succ_{t-1}.
        """
        G = self.order.time_major(grad.to(self.emit.dtype)) * self.valid.unsqueeze(2)
        mu, u = self.mu, self.emit * self.betas
        active = self.order.active
        phi = G.clone()
        psi = torch.zeros_like(G)
        pred, succ = self.pred.clamp_min(_TINY), self.succ.clamp_min(_TINY)
        for t in range(1, self.order.steps):
            n = active[t]
            step = torch.mm(self.alphas[t - 1, :n] * phi[t - 1, :n], self.trans).div_(pred[t, :n])
            phi[t, :n] += step
        for t in range(self.order.steps - 1, 0, -1):
            n = active[t]
            torch.mm(u[t, :n] * (G[t, :n] + psi[t, :n]), self.trans_t, out=psi[t - 1, :n])
            psi[t - 1, :n] /= succ[t - 1, :n]
        expected = (mu[0] * (phi[0] + psi[0])).sum(1)  # E[S], shape: (B,)
        d_emit = mu * (phi + psi - expected[:, None]) * self.valid.unsqueeze(2)
        _, inv_D = self._step_weights()
        pair_left = self.alphas[:-1] * (phi[:-1] - expected[:, None]) * inv_D.unsqueeze(2)
        pair_right = u[1:] * (G[1:] + psi[1:]) * inv_D.unsqueeze(2)
        return self._param_grads(d_emit, pair_left, u, pair_right)


def _input_grads(ctx, grads) -> tuple:
    """Backward's return for forward(ctx, lattice, start, end, trans, emissions): nothing for
    the lattice, then each gradient in its input's dtype where one was asked for."""
    return (None,) + tuple(g.to(dt) if need else None
                           for g, dt, need in zip(grads, ctx.dtypes, ctx.needs_input_grad[1:]))


class _LogPartition(torch.autograd.Function):
    """log Z (B,) float64 from a :class:`_Lattice`; backward = the marginals."""

    @staticmethod
    def forward(ctx, lattice, start, end, trans, emissions):
        ctx.lattice = lattice
        ctx.dtypes = [x.dtype for x in (start, end, trans, emissions)]
        return lattice.log_partition()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grads = ctx.lattice.log_partition_grads(grad)
        return _input_grads(ctx, grads)


class _Marginals(torch.autograd.Function):
    """Marginals (B, T, K) float64 from a :class:`_Lattice`; backward = their covariances."""

    @staticmethod
    def forward(ctx, lattice, start, end, trans, emissions):
        ctx.lattice = lattice
        ctx.dtypes = [x.dtype for x in (start, end, trans, emissions)]
        return lattice.order.batch_major(lattice.marginals()).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grads = ctx.lattice.marginal_grads(grad)
        return _input_grads(ctx, grads)


# --- the log-space recursions: exact for any scores, used when probability space underflows


def _log_partition_logspace(start: Tensor, end: Tensor, trans: Tensor, emissions: Tensor, mask: Tensor) -> Tensor:
    """log Z (B,) by log-sum-exp over (B, K, K) per step, as pytorch-crf computes it."""
    alpha = start + emissions[:, 0]  # shape: (B, K)
    for t in range(1, emissions.size(1)):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def _marginals_logspace(start: Tensor, end: Tensor, trans: Tensor, emissions: Tensor, mask: Tensor) -> Tensor:
    """Marginals (B, T, K) by log-space forward-backward."""
    T = emissions.size(1)
    alphas = [start + emissions[:, 0]]
    for t in range(1, T):
        nxt = torch.logsumexp(alphas[-1].unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alphas.append(torch.where(mask[:, t : t + 1], nxt, alphas[-1]))
    end_b = end.expand_as(alphas[0])
    betas = [end_b]
    for t in range(T - 2, -1, -1):
        nxt = torch.logsumexp(trans + (emissions[:, t + 1] + betas[-1]).unsqueeze(1), dim=2)
        betas.append(torch.where(mask[:, t + 1 : t + 2], nxt, end_b))
    alpha = torch.stack(alphas, 1)  # shape: (B, T, K)
    beta = torch.stack(betas[::-1], 1)  # shape: (B, T, K)
    log_z = torch.logsumexp(alphas[-1] + end, dim=1)  # shape: (B,)
    return (alpha + beta - log_z[:, None, None]).exp()
