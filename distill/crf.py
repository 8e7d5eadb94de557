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

This module is the CRF itself (parameters, scores, checks, the decoding constants);
the NumPy Viterbi is in :mod:`distill.crf_viterbi`, the forward-backward recursions and
their gradients in :mod:`distill.crf_forward_backward`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from distill.crf_forward_backward import (_Lattice, _log_partition_logspace, _LogPartition, _Marginals,
                                          _marginals_logspace)
from distill.crf_viterbi import _viterbi, _viterbi_one

REDUCTIONS = ("none", "sum", "mean")
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
