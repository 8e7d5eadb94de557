"""The CRF against brute force over every tag path (tiny inputs) and against
pytorch-crf (random inputs), plus gradients: exact, and finite under -1e4
constraint transitions and huge emissions."""

from __future__ import annotations

import itertools

import pytest
import torch

from distill.crf import CRF
from distill.crf_forward_backward import _log_partition_logspace, _marginals_logspace

torchcrf = pytest.importorskip("torchcrf")

K = 5
LENGTHS = [3, 2, 1, 3]  # varied, left-aligned


def make(seed: int, lengths=LENGTHS, num_tags: int = K, scale: float = 2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    crf = CRF(num_tags).to(dtype)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    emissions = torch.randn(B, T, num_tags, generator=g, dtype=dtype) * scale
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    tags = torch.randint(0, num_tags, (B, T), generator=g)
    return crf, emissions, mask, tags


def path_score(crf, emissions, path, temperature=1.0):
    s = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
    s = s + sum(emissions[t, y] for t, y in enumerate(path))
    s = s + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
    return s / temperature


def brute_force(crf, emissions, mask, temperature=1.0):
    """Per sentence: log Z, the best path and the marginals, over all K^L paths."""
    out = []
    for b in range(emissions.size(0)):
        L = int(mask[b].sum())
        paths = list(itertools.product(range(crf.num_tags), repeat=L))
        scores = torch.stack([path_score(crf, emissions[b], p, temperature) for p in paths])
        log_z = torch.logsumexp(scores, 0)
        probs = (scores - log_z).exp()
        marg = torch.zeros(emissions.size(1), crf.num_tags, dtype=emissions.dtype)
        for p, pr in zip(paths, probs):
            for t, y in enumerate(p):
                marg[t, y] += pr
        out.append((log_z, list(paths[int(scores.argmax())]), marg))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_brute_force_log_partition_likelihood_viterbi(seed):
    crf, emissions, mask, tags = make(seed)
    oracle = brute_force(crf, emissions, mask)
    log_z = crf.log_partition(emissions, mask)
    ll = crf.log_likelihood(emissions, tags, mask)
    paths = crf.decode(emissions, mask)
    for b, (z, best, _) in enumerate(oracle):
        L = LENGTHS[b]
        assert log_z[b].item() == pytest.approx(z.item(), abs=1e-9)
        gold = path_score(crf, emissions[b], tags[b, :L].tolist())
        assert ll[b].item() == pytest.approx((gold - z).item(), abs=1e-9)
        assert paths[b, :L].tolist() == best
        assert (paths[b, L:] == -1).all()
    nll = crf(emissions, tags, mask, reduction="none")
    assert torch.allclose(nll, -ll)
    assert crf(emissions, tags, mask, reduction="sum").item() == pytest.approx(-ll.sum().item())
    assert crf(emissions, tags, mask).item() == pytest.approx(-ll.mean().item())


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_brute_force_marginals_with_temperature(temperature):
    crf, emissions, mask, _ = make(7)
    oracle = brute_force(crf, emissions, mask, temperature)
    marg = crf.marginals(emissions, mask, temperature)
    for b, (z, _, m) in enumerate(oracle):
        assert torch.allclose(marg[b], m, atol=1e-10), (b, marg[b], m)
    assert torch.allclose(marg.sum(2), mask.double())
    log_z = crf.log_partition(emissions, mask, temperature)
    assert torch.allclose(log_z, torch.stack([o[0] for o in oracle]), atol=1e-9)


def test_single_position_and_one_sentence():
    crf, emissions, mask, tags = make(3, lengths=[1])
    (z, best, m), = brute_force(crf, emissions, mask)
    assert crf.decode(emissions, mask).tolist() == [best]
    assert crf.log_partition(emissions, mask).item() == pytest.approx(z.item())
    assert torch.allclose(crf.marginals(emissions, mask)[0], m)


def reference(crf, dtype=torch.float32):
    ref = torchcrf.CRF(crf.num_tags, batch_first=True).to(dtype)
    ref.load_state_dict(crf.state_dict())
    return ref


def random_batch(seed, B=24, T=40, num_tags=9, dtype=torch.float32, full=False):
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(B, T, num_tags, generator=g, dtype=dtype) * 3
    lengths = torch.full((B,), T) if full else torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None] < lengths[:, None]
    tags = torch.randint(0, num_tags, (B, T), generator=g)
    return emissions, mask, tags, lengths.tolist()


@pytest.mark.parametrize("seed,full", [(0, False), (1, False), (2, True), (3, False)])
def test_decode_matches_pytorch_crf(seed, full):
    torch.manual_seed(seed)
    crf = CRF(9)
    emissions, mask, _, lengths = random_batch(seed, full=full)
    ours = crf.decode(emissions, mask)
    theirs = reference(crf).decode(emissions, mask)
    assert [row[:n] for row, n in zip(ours.tolist(), lengths)] == theirs
    assert all((row[n:] == -1).all() for row, n in zip(ours, lengths))
    assert crf.decode(emissions, mask, pad=0)[~mask].eq(0).all()


@pytest.mark.parametrize("seed", range(3))
def test_nll_matches_pytorch_crf(seed):
    torch.manual_seed(seed)
    crf = CRF(9).double()
    emissions, mask, tags, _ = random_batch(seed, dtype=torch.float64)
    ref = reference(crf, torch.float64)
    # pytorch-crf's forward is the log-likelihood; ours is its negative, the loss
    for reduction in ("none", "sum", "mean"):
        ours = crf(emissions, tags, mask, reduction=reduction)
        theirs = -ref(emissions, tags, mask, reduction=reduction)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), reduction
    # float32: both round, ours in float64 internally; agree to float32 precision
    crf32, ref32 = crf.float(), reference(crf.float())
    ll = crf32.log_likelihood(emissions.float(), tags, mask)
    ll_ref = ref32(emissions.float(), tags, mask, reduction="none")
    assert torch.allclose(ll, ll_ref, rtol=1e-5, atol=1e-5)


def test_pytorch_crf_state_dict_loads():
    ref = torchcrf.CRF(6, batch_first=True)
    ours = CRF(6)
    ours.load_state_dict(ref.state_dict(), strict=True)
    emissions, mask, tags, lengths = random_batch(5, num_tags=6)
    assert torch.allclose(ours.log_likelihood(emissions, tags, mask), ref(emissions, tags, mask, reduction="none"),
                          rtol=1e-5, atol=1e-4)
    assert [r[:n] for r, n in zip(ours.decode(emissions, mask).tolist(), lengths)] == ref.decode(emissions, mask)


def constrained(num_tags=5):
    """A CRF with BIO-style -1e4 constraints: tag 0 = O, odd = B-x, even = I-x."""
    torch.manual_seed(0)
    crf = CRF(num_tags).double()
    with torch.no_grad():
        for j in range(2, num_tags, 2):  # I-x only after B-x or I-x of the same type
            crf.start_transitions[j] = -1e4
            for i in range(num_tags):
                if i not in (j - 1, j):
                    crf.transitions[i, j] = -1e4
    return crf


def grads(fn, crf, emissions):
    e = emissions.clone().requires_grad_()
    crf.zero_grad(set_to_none=True)
    fn(e).backward()
    return [p.grad.clone() for p in crf.parameters()] + [e.grad]


@pytest.mark.parametrize("scale", [3.0, 100.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gradients_exact_and_finite_with_constraints(scale, temperature):
    crf = constrained()
    emissions, mask, tags, _ = random_batch(11, B=8, T=30, num_tags=5, dtype=torch.float64)
    emissions = emissions * scale
    w = torch.randn(8, 30, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def tempered(e):
        return [x / temperature for x in (crf.start_transitions, crf.end_transitions, crf.transitions, e)]

    pairs = [
        (lambda e: crf.log_partition(e, mask, temperature).sum(),
         lambda e: _log_partition_logspace(*tempered(e), mask).sum()),
        (lambda e: (crf.marginals(e, mask, temperature) * w).sum(),
         lambda e: (_marginals_logspace(*tempered(e), mask) * mask.unsqueeze(2) * w).sum()),
    ]
    for ours, naive in pairs:
        g_ours, g_naive = grads(ours, crf, emissions), grads(naive, crf, emissions)
        for a, b in zip(g_ours, g_naive):
            assert torch.isfinite(a).all()
            assert torch.allclose(a, b, atol=1e-7, rtol=1e-6), (a - b).abs().max()
    nll = grads(lambda e: crf(e, tags, mask, reduction="sum"), crf, emissions)
    assert all(torch.isfinite(g).all() for g in nll)
    # a gold path through a forbidden transition costs about 1e4 and stays finite
    assert (crf(emissions, tags, mask, reduction="none") > 1e3).any()


def test_float32_gradients_finite_with_constraints():
    crf = constrained().float()
    emissions, mask, tags, _ = random_batch(12, B=8, T=50, num_tags=5)
    for e in (emissions, emissions * 100):
        g = grads(lambda x: crf(x, tags, mask) + crf.marginals(x, mask, 2.0).square().sum(), crf, e)
        assert all(torch.isfinite(x).all() for x in g)


def test_underflow_falls_back_to_log_space():
    """Scores thousands apart underflow exp() even in float64; the log-space recursion takes over."""
    crf = constrained()
    emissions, mask, tags, _ = random_batch(13, B=4, T=12, num_tags=5, dtype=torch.float64)
    emissions[:, :, 1] += 5000.0
    ref = reference(crf, torch.float64)
    assert torch.allclose(crf.log_likelihood(emissions, tags, mask), ref(emissions, tags, mask, reduction="none"),
                          atol=1e-6)
    marg = crf.marginals(emissions, mask)
    assert torch.isfinite(marg).all() and torch.allclose(marg.sum(2), mask.double())
    g = grads(lambda e: crf.log_partition(e, mask).sum(), crf, emissions)
    assert all(torch.isfinite(x).all() for x in g)


def test_gradcheck_tiny():
    """The hand-written backward passes against finite differences (float64)."""
    crf, emissions, mask, tags = make(21, lengths=[3, 1, 2])
    e = emissions.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: crf.log_partition(x, mask, 1.5), (e,))
    assert torch.autograd.gradcheck(lambda x: crf.marginals(x, mask, 1.5), (e,))
    assert torch.autograd.gradcheck(lambda x: crf.log_likelihood(x, tags, mask), (e,))


def test_half_precision_and_long_sequences():
    torch.manual_seed(4)
    crf = CRF(7)
    emissions, mask, tags, lengths = random_batch(14, B=3, T=600, num_tags=7)
    ref = reference(crf)
    assert [r[:n] for r, n in zip(crf.decode(emissions, mask).tolist(), lengths)] == ref.decode(emissions, mask)
    half = crf.decode(emissions.half(), mask)
    assert half.shape == mask.shape and half[mask].ge(0).all()
    assert torch.allclose(crf.log_likelihood(emissions, tags, mask), ref(emissions, tags, mask, reduction="none"),
                          rtol=1e-5)


@pytest.mark.parametrize("bad", ["hole", "first", "shape", "dtype", "tags"])
def test_bad_input_raises(bad):
    crf = CRF(3)
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    tags = torch.zeros(2, 4, dtype=torch.long)
    if bad == "hole":
        mask[0, 3] = True
    elif bad == "first":
        mask[0] = False
    elif bad == "shape":
        emissions = torch.randn(2, 4, 5)
    elif bad == "dtype":
        mask = mask.long()
    else:
        tags = tags[:, :3]
    with pytest.raises(ValueError):
        crf.log_likelihood(emissions, tags, mask)
    if bad != "tags":
        with pytest.raises(ValueError):
            crf.decode(emissions, mask)


def test_values_at_padding_are_ignored():
    """Whatever a model leaves at padded positions (even inf or nan) changes nothing."""
    torch.manual_seed(6)
    crf = CRF(5).double()
    emissions, mask, tags, lengths = random_batch(15, B=6, T=9, num_tags=5, dtype=torch.float64)
    clean = emissions.masked_fill(~mask.unsqueeze(2), 0.0)
    for junk in (float("inf"), float("nan"), -1e30):
        dirty = emissions.masked_fill(~mask.unsqueeze(2), junk)
        assert torch.equal(crf.decode(dirty, mask), crf.decode(clean, mask))
        assert torch.allclose(crf.log_likelihood(dirty, tags, mask), crf.log_likelihood(clean, tags, mask))
        assert torch.allclose(crf.marginals(dirty, mask, 2.0), crf.marginals(clean, mask, 2.0))
        e = dirty.clone().requires_grad_()
        crf(e, tags, mask).backward()
        assert torch.isfinite(e.grad).all() and (e.grad[~mask] == 0).all()


def test_constrained_viterbi_is_the_best_valid_path_by_brute_force():
    """With ``allowed``, decode returns the best path among those that obey it (oracle:
    every path scored, the forbidden ones dropped), and never a forbidden one, even
    where the free best path takes one."""
    from distill.schemes import allowed_transitions

    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    ok_start, ok_trans = allowed_transitions(labels)
    differs = 0
    for seed in range(12):
        crf, emissions, mask, _ = make(seed, lengths=[4, 3, 1, 2], scale=3.0)
        got = crf.decode(emissions, mask, allowed=(ok_start, ok_trans))
        free = crf.decode(emissions, mask)
        for b in range(emissions.size(0)):
            L = int(mask[b].sum())
            valid = [p for p in itertools.product(range(K), repeat=L)
                     if ok_start[p[0]] and all(ok_trans[x, y] for x, y in zip(p, p[1:]))]
            best = max(valid, key=lambda p: float(path_score(crf, emissions[b], p)))
            assert got[b, :L].tolist() == list(best)
            differs += got[b, :L].tolist() != free[b, :L].tolist()
    assert differs > 0  # the constraint changed some decodes: the test exercises it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_sentence_decodes_as_in_a_batch_bit_for_bit(dtype):
    """Decoding one sentence (the batch-1 path, ``_viterbi_one``) gives the path the
    batched Viterbi gives the same sentence inside a padded batch, ties included:
    integer-valued scores make ties common, and a constraint forbids some moves."""
    from distill.schemes import allowed_transitions

    allowed = allowed_transitions(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    g = torch.Generator().manual_seed(0)
    ties = 0
    for trial in range(60):
        lengths = torch.randint(1, 24, (6,), generator=g).tolist()
        crf, emissions, mask, _ = make(trial, lengths=lengths, dtype=dtype)
        if trial % 2:  # integer scores: many equal paths
            with torch.no_grad():
                for p in crf.parameters():
                    p.copy_(torch.randint(-2, 3, p.shape, generator=g))
            emissions = torch.randint(-2, 3, emissions.shape, generator=g).to(dtype)
        for constraint in (None, allowed):
            batched = crf.decode(emissions, mask, allowed=constraint)
            for b, L in enumerate(lengths):
                alone = crf.decode(emissions[b : b + 1, :L], mask[b : b + 1, :L], allowed=constraint)
                assert alone[0].tolist() == batched[b, :L].tolist(), (trial, b, constraint is not None)
        ties += trial % 2
    assert ties  # the tie-heavy half ran


def test_decoding_constants_follow_parameter_changes():
    """The constants kept between calls (decoding one sentence at a time) are rebuilt when
    a parameter changes in place, when a state dict is loaded, and for another constraint."""
    from distill.schemes import allowed_transitions

    allowed = allowed_transitions(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    crf, emissions, mask, _ = make(3, lengths=[7], scale=1.0, dtype=torch.float32)
    fresh = lambda: make(3, lengths=[7], scale=1.0, dtype=torch.float32)[0]  # noqa: E731
    crf.decode(emissions, mask, allowed=allowed)
    with torch.no_grad():
        crf.transitions.mul_(-3)  # reverses the preferences: the path changes
    other = fresh()
    other.load_state_dict(crf.state_dict())
    assert torch.equal(crf.decode(emissions, mask, allowed=allowed), other.decode(emissions, mask, allowed=allowed))
    assert not torch.equal(crf.decode(emissions, mask, allowed=allowed), fresh().decode(emissions, mask, allowed=allowed))
    crf.load_state_dict(fresh().state_dict())
    assert torch.equal(crf.decode(emissions, mask, allowed=allowed), fresh().decode(emissions, mask, allowed=allowed))
    assert torch.equal(crf.decode(emissions, mask), fresh().decode(emissions, mask))  # unconstrained: another constant
