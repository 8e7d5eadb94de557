"""log Z and the tag marginals of :class:`distill.crf.CRF`, with exact gradients.

The forward-backward recursions in probability space (:class:`_Lattice`, float64, each
alpha_t and beta_t rescaled to sum 1) behind two autograd Functions whose ``backward``
is computed by hand (:class:`_LogPartition`: the marginals; :class:`_Marginals`: their
covariances), and the log-space recursions the CRF falls back to when probability
space underflows. Why it is built this way: see :mod:`distill.crf`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_TINY = 1e-300


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
