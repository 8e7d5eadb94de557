"""A linear-chain CRF with batched Viterbi decoding and forward-backward marginals.

Parameters have pytorch-crf's names and meaning (``start_transitions`` (K,),
``end_transitions`` (K,), ``transitions`` (K, K) with ``transitions[i, j]`` the score
of moving from tag i to tag j), so a ``torchcrf.CRF`` state dict loads as is and
pytorch-crf stays the reference the tests compare against. Everything is
batch-first: ``emissions`` (B, T, K), ``mask`` (B, T) bool with the real positions of
each sentence first (``mask[:, 0]`` all true).

No Python loop runs over the batch; loops run over time steps only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor, reduction: str = "mean") -> Tensor:
        """Negative log-likelihood of ``tags`` (B, T); ``reduction`` is none|sum|mean (per sentence)."""
        nll = -self.log_likelihood(emissions, tags, mask)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        raise ValueError(f"reduction must be none|sum|mean, got {reduction!r}")

    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """log p(tags | emissions) per sentence, shape (B,)."""
        return self._score(emissions, tags, mask) - self.log_partition(emissions, mask)

    def _score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        mask_f = mask.to(emissions.dtype)
        tags = tags.masked_fill(~mask, 0)
        # shape: (B, T)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2) * mask_f
        trans = self.transitions[tags[:, :-1], tags[:, 1:]] * mask_f[:, 1:]
        lengths = mask.long().sum(1)
        last = tags.gather(1, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        return self.start_transitions[tags[:, 0]] + emit.sum(1) + trans.sum(1) + self.end_transitions[last]

    def log_partition(self, emissions: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
        """log Z per sentence, shape (B,), by the forward algorithm.

        Each step is a (B, K) @ (K, K) product in probability space, rescaled by the
        running maximum, instead of a (B, K, K) log-sum-exp: the same value to float
        rounding, several times cheaper.
        """
        start, end, trans = self._scaled(temperature)
        emissions = emissions / temperature if temperature != 1.0 else emissions
        t_max = trans.max()
        exp_trans = (trans - t_max).exp()  # shape: (K, K)
        alpha = start + emissions[:, 0]  # shape: (B, K)
        for t in range(1, emissions.size(1)):
            m = alpha.max(1, keepdim=True).values
            nxt = torch.log((alpha - m).exp() @ exp_trans + 1e-30) + m + t_max + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def _scaled(self, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
        if temperature == 1.0:
            return self.start_transitions, self.end_transitions, self.transitions
        return (self.start_transitions / temperature, self.end_transitions / temperature,
                self.transitions / temperature)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor, pad: int = -1) -> Tensor:
        """Viterbi: the best tag path per sentence, shape (B, T), ``pad`` past each length."""
        B, T, K = emissions.shape
        score = self.start_transitions + emissions[:, 0]  # shape: (B, K)
        identity = torch.arange(K, device=emissions.device).expand(B, K)
        backpointers = []
        for t in range(1, T):
            # shape: (B, K_prev, K_next)
            best, idx = (score.unsqueeze(2) + self.transitions).max(1)
            step = mask[:, t : t + 1]
            score = torch.where(step, best + emissions[:, t], score)
            # Past a sentence's end the pointer is the identity, so its last tag is carried back.
            backpointers.append(torch.where(step, idx, identity))
        best_tag = (score + self.end_transitions).argmax(1)  # shape: (B,)
        path = [best_tag]
        for bp in reversed(backpointers):
            best_tag = bp.gather(1, best_tag.unsqueeze(1)).squeeze(1)
            path.append(best_tag)
        tags = torch.stack(path[::-1], dim=1)  # shape: (B, T)
        return tags.masked_fill(~mask, pad)

    def marginals(self, emissions: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
        """Posterior tag marginals p(y_t = k | x), shape (B, T, K), zero at padding.

        Forward-backward in log space over ``emissions / temperature`` and
        ``transitions / temperature`` (the tempered CRF of structure-level KD).
        Differentiable.
        """
        start, end, trans = self._scaled(temperature)
        emissions = emissions / temperature if temperature != 1.0 else emissions
        T = emissions.size(1)
        alphas = [start + emissions[:, 0]]
        for t in range(1, T):
            nxt = torch.logsumexp(alphas[-1].unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alphas.append(torch.where(mask[:, t : t + 1], nxt, alphas[-1]))
        end_b = end.expand_as(alphas[0])
        betas = [end_b]
        for t in range(T - 2, -1, -1):
            nxt = torch.logsumexp(trans + (emissions[:, t + 1] + betas[0]).unsqueeze(1), dim=2)
            betas.insert(0, torch.where(mask[:, t + 1 : t + 2], nxt, end_b))
        alpha = torch.stack(alphas, 1)  # shape: (B, T, K)
        beta = torch.stack(betas, 1)  # shape: (B, T, K)
        log_z = torch.logsumexp(alphas[-1] + end, dim=1)  # shape: (B,)
        probs = (alpha + beta - log_z[:, None, None]).exp()
        return probs * mask.unsqueeze(2).to(probs.dtype)
