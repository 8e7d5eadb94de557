"""Distillation losses against hand-computed values and brute force over tag paths;
alpha = 1 is the plain student; emissions for other data or labels are refused."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

from distill.config import ConfigError
from distill.crf import CRF
from distill.errors import DistillError
from distill.kd import (KD_LOSSES, DistillationLoss, KDConfig, emission_kl, hidden_layer_pairs, hidden_mse,
                        kd_term, marginal_kl, teacher_crf)
from distill.modeling import TaggerOutput

# Two sentences of 3 and 2 words, 3 tags; position (1, 2) is padding.
STUDENT = [[[1.0, 0.0, -1.0], [0.5, 0.2, 0.1], [-0.3, 0.8, 0.0]],
           [[0.0, 2.0, 1.0], [1.5, -0.5, 0.3], [9.0, -9.0, 9.0]]]
TEACHER = [[[2.0, -1.0, 0.0], [0.0, 1.0, 0.5], [0.3, 0.3, -2.0]],
           [[1.0, 1.0, 0.0], [-1.0, 0.0, 2.0], [-7.0, 7.0, 3.0]]]
LENGTHS = [3, 2]


def _softmax(xs, T):
    e = [math.exp(x / T) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _mask():
    return torch.tensor([[True, True, True], [True, True, False]])


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_emission_kl_matches_hand_computation(T):
    want = []
    for b, n in enumerate(LENGTHS):
        for t in range(n):
            want.append(_kl(_softmax(TEACHER[b][t], T), _softmax(STUDENT[b][t], T)))
    expected = T * T * sum(want) / len(want)  # 5 real positions, not 6
    got = emission_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), _mask(), T)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the padded position's (wildly different) scores do not count
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    s[1, 2] = torch.tensor([-50.0, 50.0, 0.0])
    assert emission_kl(s, t, _mask(), T).item() == pytest.approx(expected, rel=1e-5)
    # ... while counting it changes the value
    assert emission_kl(s, t, torch.ones(2, 3, dtype=torch.bool), T).item() != pytest.approx(expected, rel=1e-3)


def test_emission_kl_is_zero_for_equal_emissions_and_has_gradient():
    s = torch.tensor(STUDENT, requires_grad=True)
    assert emission_kl(s, s.detach(), _mask(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    emission_kl(s, torch.tensor(TEACHER), _mask(), 3.0).backward()
    assert s.grad[1, 2].abs().sum() == 0  # padding gets no gradient
    assert s.grad[0, 0].abs().sum() > 0


def _brute_marginals(crf: CRF, emissions, length: int, T: float) -> list[list[float]]:
    K = crf.num_tags
    start, end, trans = crf.start_transitions.tolist(), crf.end_transitions.tolist(), crf.transitions.tolist()
    weights = {}
    for path in itertools.product(range(K), repeat=length):
        score = start[path[0]] + end[path[-1]] + sum(emissions[t][y] for t, y in enumerate(path))
        score += sum(trans[a][b] for a, b in zip(path, path[1:]))
        weights[path] = math.exp(score / T)
    z = sum(weights.values())
    return [[sum(w for p, w in weights.items() if p[t] == k) / z for k in range(K)] for t in range(length)]


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_marginal_kd_matches_brute_force_over_all_paths(T):
    torch.manual_seed(3)
    student_crf, t_crf = CRF(3), CRF(3)
    with torch.no_grad():
        for crf in (student_crf, t_crf):
            for p in crf.parameters():
                p.normal_(0, 1)
    want = []
    for b, n in enumerate(LENGTHS):
        q_t = _brute_marginals(t_crf, TEACHER[b], n, T)
        q_s = _brute_marginals(student_crf, STUDENT[b], n, T)
        want += [_kl(q_t[t], q_s[t]) for t in range(n)]
    expected = T * T * sum(want) / len(want)

    mask = _mask()
    q_teacher = t_crf.marginals(torch.tensor(TEACHER), mask, T)
    q_student = student_crf.marginals(torch.tensor(STUDENT), mask, T)
    assert marginal_kl(q_student, q_teacher, mask, T).item() == pytest.approx(expected, rel=1e-5)

    # the same through the registry, with the teacher CRF rebuilt from stored transitions
    stored = {"start": t_crf.start_transitions.tolist(), "end": t_crf.end_transitions.tolist(),
              "transitions": t_crf.transitions.tolist()}

    class Student:
        crf = student_crf

    out = TaggerOutput(torch.tensor(STUDENT, requires_grad=True), mask)
    batch = {"teacher_emissions": torch.tensor(TEACHER)}
    got = KD_LOSSES["marginal"](Student, out, batch, teacher_crf(stored, 3), T)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert out.emissions.grad[0].abs().sum() > 0 and out.emissions.grad[1, 2].abs().sum() == 0
    both = KD_LOSSES["both"](Student, out, batch, teacher_crf(stored, 3), T)
    emission = emission_kl(out.emissions, batch["teacher_emissions"], mask, T)
    assert both.item() == pytest.approx(expected + emission.item(), rel=1e-5)


class _Tiny(torch.nn.Module):
    """Just enough of a tagger for the loss: a CRF and ``loss``."""

    def __init__(self):
        super().__init__()
        self.crf = CRF(3)

    def loss(self, out, tags):
        return self.crf(out.emissions, tags, out.mask, reduction="sum") / out.mask.sum()


def test_distillation_loss_combines_nll_and_kd_by_alpha():
    torch.manual_seed(0)
    model = _Tiny()
    out = TaggerOutput(torch.tensor(STUDENT), _mask())
    tags = torch.tensor([[0, 1, 2], [2, 0, 0]])
    batch = {"tags": tags, "teacher_emissions": torch.tensor(TEACHER)}
    nll = model.loss(out, tags).item()
    kd = emission_kl(out.emissions, batch["teacher_emissions"], out.mask, 2.0).item()

    loss, parts = DistillationLoss(KDConfig(alpha=0.3, temperature=2.0))(model, out, batch)
    assert loss.item() == pytest.approx(0.3 * nll + 0.7 * kd, rel=1e-6)
    assert parts == pytest.approx({"nll": nll, "kd": kd})
    # alpha 1: exactly the CRF loss, and no teacher emissions are needed
    loss1, parts1 = DistillationLoss(KDConfig(alpha=1.0))(model, out, {"tags": tags})
    assert loss1.item() == model.loss(out, tags).item() and "kd" not in parts1
    # alpha 0: KD only
    loss0, _ = DistillationLoss(KDConfig(alpha=0.0, temperature=2.0))(model, out, batch)
    assert loss0.item() == pytest.approx(kd, rel=1e-6)


def test_the_teacher_crf_is_placed_on_the_first_batch_only(monkeypatch):
    model = _Tiny()
    out = TaggerOutput(torch.tensor(STUDENT), _mask())
    batch = {"tags": torch.tensor([[0, 1, 2], [2, 0, 0]]), "teacher_emissions": torch.tensor(TEACHER)}
    crf = CRF(3)
    moves = []
    real_to = crf.to
    monkeypatch.setattr(crf, "to", lambda device: moves.append(device) or real_to(device))
    loss_fn = DistillationLoss(KDConfig(alpha=0.5, kd="marginal"), teacher_crf=crf)
    for _ in range(3):
        loss_fn(model, out, batch)
    assert moves == [out.emissions.device]


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"),
    ({"kd": "attention"}, "emission, marginal, both"), ({"hidden_weight": -1.0}, "hidden_weight"),
])
def test_kd_config_refuses_bad_values(kwargs, message):
    with pytest.raises(DistillError, match=message):
        KDConfig(**kwargs)


def test_kd_config_errors_say_expected_and_got():
    with pytest.raises(ConfigError, match=re.escape("alpha must be in [0, 1] (weight of the gold-tag loss), got 1.5")):
        KDConfig(alpha=1.5)
    with pytest.raises(ConfigError, match=re.escape("temperature (--T) must be > 0, got -1.0")):
        KDConfig(temperature=-1.0)


def test_unknown_kd_name_lists_the_valid_ones():
    with pytest.raises(DistillError) as e:
        kd_term("nope")
    assert all(name in str(e.value) for name in KD_LOSSES)


def test_hidden_layer_pairs_match_block_ends():
    assert hidden_layer_pairs([0, 2, 4], 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert hidden_layer_pairs([0, 1], 2) == [(0, 0), (1, 1), (2, 2)]
    a = [torch.zeros(1, 3, 2), torch.ones(1, 3, 2)]
    b = [torch.zeros(1, 3, 2), torch.full((1, 3, 2), 3.0)]
    mask = torch.tensor([[1, 1, 0]])
    # layer 0 equal, layer 1 off by 2 everywhere: mean of (0, 4)
    assert hidden_mse(a, b, mask, [(0, 0), (1, 1)]).item() == pytest.approx(2.0)
    b[1][0, 2] = 100.0  # padding does not count
    assert hidden_mse(a, b, mask, [(0, 0), (1, 1)]).item() == pytest.approx(2.0)


# --- with real students and data ---------------------------------------------------


def test_alpha_one_is_exactly_plain_crf_training(tmp_path, tiny_dataset_kwargs, tiny_teacher):
    from safetensors.torch import load_file

    from distill.data import load_dataset
    from distill.train import train
    from students.bilstm_crf import BiLSTMTagger, build_vocabulary
    from students.train import BILSTM_DROPOUT, BiLSTMCRFConfig, default_train_config, train_student

    cfg = default_train_config("bilstm-crf", epochs=1, batch_size=8, max_steps=3, checkpoint_minutes=0)
    unused = tmp_path / "emissions"
    summary = train_student(out=tmp_path / "kd", teacher=tiny_teacher, student=BiLSTMCRFConfig(),
                            kd=KDConfig(alpha=1.0), emissions=unused, dataset=tiny_dataset_kwargs, train_config=cfg,
                            quiet=True)
    assert not unused.exists()  # alpha 1 reads no teacher output

    ds = load_dataset(**tiny_dataset_kwargs)
    torch.manual_seed(cfg.seed)
    plain = BiLSTMTagger(build_vocabulary(ds.train.tokens, 2), ds.labels, dropout=BILSTM_DROPOUT)
    base = train(plain, ds.train, ds.dev, tmp_path / "plain", cfg, quiet=True)

    a, b = load_file(tmp_path / "kd" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary["best_f1"] == base["best_f1"]
    log_a = (tmp_path / "kd" / "train_log.jsonl").read_text().splitlines()[0]
    log_b = (tmp_path / "plain" / "train_log.jsonl").read_text().splitlines()[0]
    import json

    assert json.loads(log_a)["loss"] == json.loads(log_b)["loss"]


def test_emissions_for_other_data_or_labels_are_refused(tmp_path, tiny_dataset_kwargs, tiny_teacher):
    from distill.data import load_dataset
    from distill.emissions import emit, write
    from students.train import BiLSTMCRFConfig, default_train_config, train_student

    cfg = default_train_config("bilstm-crf", epochs=1, batch_size=8, max_steps=1, checkpoint_minutes=0)
    subset = emit(model=tiny_teacher, dataset=dict(tiny_dataset_kwargs, max_train=10), out=tmp_path / "sub", quiet=True)
    with pytest.raises(DistillError, match="fingerprint"):
        train_student(out=tmp_path / "s1", teacher=tiny_teacher, student=BiLSTMCRFConfig(), emissions=subset,
                      dataset=tiny_dataset_kwargs, train_config=cfg, quiet=True)
    assert not (tmp_path / "s1").exists()

    ds = load_dataset(**tiny_dataset_kwargs)
    other = ds.labels[:-2]  # a label set without PER
    arrays = [np.zeros((len(s), len(other)), dtype=np.float32) for s in ds.train.tokens]
    write(tmp_path / "labels", arrays, other, ds.train)
    with pytest.raises(DistillError, match="labels"):
        train_student(out=tmp_path / "s2", teacher=tiny_teacher, student=BiLSTMCRFConfig(),
                      emissions=tmp_path / "labels", dataset=tiny_dataset_kwargs, train_config=cfg, quiet=True)
    assert not (tmp_path / "s2").exists()


def test_missing_emissions_are_made_and_used(tmp_path, tiny_dataset_kwargs, tiny_teacher):
    from distill.emissions import Emissions
    from students.train import BiLSTMCRFConfig, default_train_config, train_student

    cfg = default_train_config("bilstm-crf", epochs=1, batch_size=8, max_steps=2, checkpoint_minutes=0)
    folder = tmp_path / "em"
    train_student(out=tmp_path / "s", teacher=tiny_teacher, student=BiLSTMCRFConfig(), emissions=folder,
                  kd=KDConfig(kd="both"), dataset=tiny_dataset_kwargs, train_config=cfg, quiet=True)
    em = Emissions(folder)
    assert em.meta["transitions"] is not None and len(em) == 36
    import json

    meta = json.loads((tmp_path / "s" / "distill.json").read_text())["meta"]
    assert meta["distillation"] == {"alpha": 0.5, "temperature": 4.0, "kd": "both", "hidden_weight": 0.0}
    assert meta["params"]["emissions"] == str(folder)
    log = (tmp_path / "s" / "train_log.jsonl").read_text()
    assert json.loads(log.splitlines()[0])["loss"] > 0


def test_marginal_kd_needs_a_crf_teacher(tmp_path, tiny_backbone, tiny_dataset_kwargs):
    from distill.data import load_dataset
    from students.train import BiLSTMCRFConfig, train_student
    from teachers.bert_crf import build_teacher

    ds = load_dataset(**tiny_dataset_kwargs)
    folder = build_teacher(ds.labels, ds.train.tokens, backbone=str(tiny_backbone), head="softmax").save(tmp_path / "t")
    for kd in ("marginal", "both"):
        with pytest.raises(DistillError, match="softmax head"):
            train_student(out=tmp_path / "s", teacher=folder, student=BiLSTMCRFConfig(), kd=KDConfig(kd=kd),
                          dataset=tiny_dataset_kwargs, quiet=True)
    assert not (tmp_path / "s").exists() and not (folder / "emissions-train").exists()
