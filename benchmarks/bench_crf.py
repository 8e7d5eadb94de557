"""distill.crf.CRF against pytorch-crf (torchcrf.CRF, batch_first=True, same parameters).

Times Viterbi decoding, the NLL (forward, and forward + backward) and marginals on
CPU for three kinds of masks (uniform lengths, bucketed lengths as the project's
batches have them, full), and checks in the same run that the paths are identical
and the log-likelihoods agree. Targets: decode >= 5x (ours converted to per-sentence
lists, as pytorch-crf returns them), NLL >= 2x faster than pytorch-crf. Marginals
have no pytorch-crf counterpart; they are compared with a plain log-sum-exp
forward-backward (below). Times are process CPU time per call, medians over rounds
that alternate the contenders. Exits 1 when a target or a check fails.

    python benchmarks/bench_crf.py [--batch 32 --length 64 --tags 13 --rounds 40 --threads 1]
"""

from __future__ import annotations

import argparse
import sys

import torch

from _common import Table, finish, interleaved, machine


def naive_marginals(crf, emissions, mask):
    """Marginals by forward-backward in log space, one log-sum-exp over (B, K, K) per
    step and a ``torch.where`` for the mask: the textbook batched implementation."""
    trans, T = crf.transitions, emissions.size(1)
    alphas = [crf.start_transitions + emissions[:, 0]]
    for t in range(1, T):
        nxt = torch.logsumexp(alphas[-1].unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alphas.append(torch.where(mask[:, t : t + 1], nxt, alphas[-1]))
    end = crf.end_transitions.expand_as(alphas[0])
    betas = [end]
    for t in range(T - 2, -1, -1):
        nxt = torch.logsumexp(trans + (emissions[:, t + 1] + betas[-1]).unsqueeze(1), dim=2)
        betas.append(torch.where(mask[:, t + 1 : t + 2], nxt, end))
    alpha, beta = torch.stack(alphas, 1), torch.stack(betas[::-1], 1)
    log_z = torch.logsumexp(alphas[-1] + crf.end_transitions, dim=1)
    return (alpha + beta - log_z[:, None, None]).exp() * mask.unsqueeze(2)


MASKS = {
    "uniform lengths": "lengths drawn uniformly from 1..T (one of length T): a stress case",
    "bucketed lengths": "lengths from 0.9T..T, as length-bucketed batches (distill.features) have them",
    "full mask": "every sentence of length T",
}


def make_inputs(B: int, T: int, K: int, kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(B, T, K, generator=g) * 3
    tags = torch.randint(0, K, (B, T), generator=g)
    if kind == "full mask":
        lengths = torch.full((B,), T)
    elif kind == "bucketed lengths":
        lengths = torch.randint(max(1, int(0.9 * T)), T + 1, (B,), generator=g)
    else:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None] < lengths[:, None]
    return emissions, tags, mask, lengths.tolist()


def run(B: int, T: int, K: int, rounds: int, clock: str) -> Table:
    import torchcrf

    from distill.crf import CRF

    torch.manual_seed(0)
    ours = CRF(K)
    ref = torchcrf.CRF(K, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    table = Table(f"CRF: batch {B}, length {T}, {K} tags, CPU, {clock} time per call, median of {rounds} interleaved rounds")
    for seed, kind in enumerate(MASKS, 1):
        emissions, tags, mask, lengths = make_inputs(B, T, K, kind, seed)

        # --- correctness, in the same run -------------------------------------------
        ours_paths = [row[:n] for row, n in zip(ours.decode(emissions, mask).tolist(), lengths)]
        same = ours_paths == ref.decode(emissions, mask)
        table.add(f"decode paths identical ({kind})", str(same), "", None, "identical", same)
        with torch.no_grad():
            ll_ours = ours.log_likelihood(emissions, tags, mask).double()
            # pytorch-crf's forward is the log-likelihood (ours is its negative, the NLL)
            ll_ref = ref(emissions, tags, mask, reduction="none").double()
            ref64 = torchcrf.CRF(K, batch_first=True).double()
            ref64.load_state_dict(ours.state_dict())
            ll_ref64 = ref64(emissions.double(), tags, mask, reduction="none")
            ll_ours64 = CRF(K).double()
            ll_ours64.load_state_dict(ours.state_dict())
            ll_ours64 = ll_ours64.log_likelihood(emissions.double(), tags, mask)
        d64 = (ll_ours64 - ll_ref64).abs().max().item()
        table.add(f"log-lik max |diff|, float64 ({kind})", f"{d64:.1e}", "", None, "<= 1e-5", d64 <= 1e-5)
        rel = ((ll_ours - ll_ref).abs() / ll_ref.abs().clamp_min(1)).max().item()
        err_ours = (ll_ours - ll_ref64).abs().max().item()
        err_ref = (ll_ref - ll_ref64).abs().max().item()
        table.add(f"log-lik rel. diff, float32 ({kind})", f"{rel:.1e}", "", None, "<= 1e-5", rel <= 1e-5)
        table.add(f"float32 |error| vs float64 ({kind})", f"{err_ours:.1e}", f"{err_ref:.1e}", None, "-", None)
        marg = ours.marginals(emissions, mask)
        dm = (marg - naive_marginals(ours, emissions.double(), mask).float()).abs().max().item()
        table.add(f"marginals max |diff| ({kind})", f"{dm:.1e}", "", None, "<= 1e-5", dm <= 1e-5)

        # --- speed --------------------------------------------------------------
        def ours_lists():
            tags_ = ours.decode(emissions, mask).tolist()
            return [row[:n] for row, n in zip(tags_, lengths)]

        # Two contenders per measurement, so each runs right after the other equally often.
        with torch.inference_mode():
            ref_decode = lambda: ref.decode(emissions, mask)  # noqa: E731
            t = interleaved({"ours": ours_lists, "ref": ref_decode}, rounds, calls=3, clock=clock)
            table.speed(f"decode -> lists ({kind})", t["ours"], t["ref"], 5.0)
            t = interleaved({"ours": lambda: ours.decode(emissions, mask), "ref": ref_decode}, rounds, calls=3,
                            clock=clock)
            table.speed(f"decode -> tensor ({kind})", t["ours"], t["ref"], None)

        em = emissions.clone().requires_grad_()

        def fwd(crf):
            return lambda: crf(em, tags, mask, reduction="sum")

        def fwd_bwd(crf):
            def f():
                crf.zero_grad(set_to_none=True)
                em.grad = None
                crf(em, tags, mask, reduction="sum").backward()
            return f

        t = interleaved({"ours": fwd(ours), "ref": fwd(ref)}, rounds, clock=clock)
        table.speed(f"NLL forward ({kind})", t["ours"], t["ref"], 2.0)
        t = interleaved({"ours": fwd_bwd(ours), "ref": fwd_bwd(ref)}, rounds, clock=clock)
        table.speed(f"NLL forward+backward ({kind})", t["ours"], t["ref"], 2.0)

        weights = torch.randn(B, T, K)
        with torch.no_grad():
            t = interleaved({"ours": lambda: ours.marginals(emissions, mask),
                             "ref": lambda: naive_marginals(ours, emissions, mask)}, rounds, clock=clock)
        table.speed(f"marginals, no grad ({kind}; ref: naive)", t["ours"], t["ref"], None)

        def marg_bwd(fn):
            def f():
                ours.zero_grad(set_to_none=True)
                em.grad = None
                (fn(ours, em, mask) * weights).sum().backward()
            return f

        t = interleaved({"ours": marg_bwd(lambda c, e, m: c.marginals(e, m)), "ref": marg_bwd(naive_marginals)}, rounds, clock=clock)
        table.speed(f"marginals fwd+bwd ({kind}; ref: naive)", t["ours"], t["ref"], None)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--tags", type=int, default=13)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: process CPU time (robust on a shared machine; default), wall: elapsed time")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: these ops are too small to split, and on a shared "
                         "machine idle OpenMP threads spinning make 2-thread timings meaningless)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = run(args.batch, args.length, args.tags, args.rounds, args.clock)
    return finish(table, *machine(["pytorch-crf", "numpy"]),
                  "masks: " + "; ".join(f"{k}: {v}" for k, v in MASKS.items()))


if __name__ == "__main__":
    sys.exit(main())
