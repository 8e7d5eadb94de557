"""Text classifiers: the KD loss by hand, the mixed labelled/transfer loss, metrics by hand,
head + tail truncation, save/load/predict round trips of every classifier kind, and
training through the one loop (learning a separable toy task, KD with a transfer set,
resuming bit-identically)."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import torch

from distill.classify import (ClassificationLoss, ClassifierOutput, classification_metrics, evaluate_classifier,
                              head_tail, logit_kd, logits_path, predict_proba, teacher_logits, train_classifier)
from distill.config import ConfigError
from distill.errors import DistillError
from distill.modeling import load_model
from distill.textdata import TextCorpus, TextDataset
from distill.train import LOG, TrainConfig
from students.bilstm_classifier import BiLSTMClassifier, is_unspaced
from teachers.bert_classifier import BertClassifier

LABELS = ["neg", "pos"]


def toy(n: int, seed: int, name: str) -> TextCorpus:
    """Separable toy texts: "pos" uses letters a-l only, "neg" m-x only; 3 to 8 letters each."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        letters = "abcdefghijkl" if i % 2 else "mnopqrstuvwx"
        texts.append(" ".join(rng.choice(letters) for _ in range(rng.randint(3, 8))))
        labels.append(LABELS[i % 2])
    return TextCorpus(name, texts, labels)


@pytest.fixture(scope="module")
def toy_data() -> TextDataset:
    return TextDataset("toy", toy(64, 1, "toy:train"), toy(16, 2, "toy:dev"), toy(32, 3, "toy:test"), LABELS)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=1e-2, embedding_lr=1e-2, head_lr=1e-2, warmup=0.0, weight_decay=0.0,
                checkpoint_minutes=0, patience=10)
    return TrainConfig(**{**base, **kw})


def small_bilstm(texts, **kw) -> BiLSTMClassifier:
    torch.manual_seed(0)
    return BiLSTMClassifier.from_texts(texts, LABELS, embedding_dim=16, hidden_size=16, **kw)


# ---------------------------------------------------------------------------
# The loss


def test_logit_kd_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    # T = 2. Row 1: p_teacher = softmax(0, .5) = (.377541, .622459), p_student = (.622459, .377541),
    #   KL = (.622459 - .377541) * ln(.622459 / .377541) = .244918 * .5 = .122459.
    # Row 2: p_teacher = softmax(1, 0) = (.731059, .268941), p_student = (.5, .5),
    #   KL = .731059 ln(1.462117) + .268941 ln(.537883) = .277719 - .166774 = .110944.
    # T^2 * mean = 4 * (.122459 + .110944) / 2 = .466807.
    assert logit_kd(student, teacher, 2.0).item() == pytest.approx(0.466807, abs=1e-5)
    assert logit_kd(student[:1], teacher[:1], 2.0).item() == pytest.approx(4 * 0.122459, abs=1e-5)  # a mean, not a sum
    assert logit_kd(teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-7)


class _Fixed(torch.nn.Module):
    """Just the loss of a classifier, for ClassificationLoss."""

    labels = LABELS

    def loss(self, out, labels):
        return torch.nn.functional.cross_entropy(out.logits, labels)


def test_mixed_loss_gives_transfer_rows_no_ce_term():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    batch = {"labels": torch.tensor([0, -1]), "gold": torch.tensor([True, False]), "teacher_logits": teacher}
    loss, parts = ClassificationLoss(alpha=0.5, temperature=2.0)(_Fixed(), ClassifierOutput(logits), batch)
    ce_row0 = -math.log(math.exp(2) / (math.exp(2) + 1))  # .126928: row 0 only
    assert parts["ce"] == pytest.approx(ce_row0, abs=1e-6)
    assert parts["kd"] == pytest.approx(logit_kd(logits, teacher, 2.0).item(), abs=1e-6)  # KD over both rows
    assert loss.item() == pytest.approx(0.5 * ce_row0 + 0.5 * parts["kd"], abs=1e-6)
    # the transfer row's gradient comes from KD alone: with alpha 1 it has none
    loss, _ = ClassificationLoss(alpha=1.0)(_Fixed(), ClassifierOutput(logits), batch)
    loss.backward()
    assert logits.grad[1].abs().sum().item() == 0.0 and logits.grad[0].abs().sum().item() > 0
    # a batch of transfer texts only: no CE, the KD term still trains
    only = {"labels": torch.tensor([-1, -1]), "gold": torch.tensor([False, False]), "teacher_logits": teacher}
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # test_logit_kd_by_hand's rows
    loss, parts = ClassificationLoss(alpha=0.5, temperature=2.0)(_Fixed(), ClassifierOutput(student), only)
    assert parts["ce"] == 0.0 and loss.item() == pytest.approx(0.5 * 0.466807, abs=1e-5)


def test_loss_refuses_bad_settings():
    with pytest.raises(ConfigError, match=re.escape("alpha must be in [0, 1] (weight of the gold-label loss), got 1.5")):
        ClassificationLoss(alpha=1.5)
    with pytest.raises(ConfigError, match=re.escape("temperature (--T) must be > 0, got 0")):
        ClassificationLoss(temperature=0)
    with pytest.raises(DistillError, match="no teacher logits"):
        ClassificationLoss(alpha=0.5)(_Fixed(), ClassifierOutput(torch.zeros(1, 2)), {"labels": torch.tensor([0])})


# ---------------------------------------------------------------------------
# Metrics and truncation


def test_metrics_by_hand():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    m = classification_metrics(gold, pred, ["a", "b", "c"])
    # a: P 2/2, R 2/3, F1 .8;  b: P 1/2, R 1/2, F1 .5;  c: P 1/2, R 1/1, F1 2/3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["n"] == 6
    # a label never predicted: precision 0 (not a division by zero), and it lowers the macro mean
    m = classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_head_tail():
    ids = list(range(10))
    assert head_tail(ids, 10, 5) == ids
    assert head_tail(ids, 6, 4) == [0, 1, 2, 3, 8, 9]


def test_bert_keeps_head_and_tail(tiny_backbone):
    model = BertClassifier.from_backbone(str(tiny_backbone), LABELS, max_length=12)
    tok = model.tokenizer
    text = " ".join("abcdefghijklmnopqrst")  # 20 letters, one sub-token each
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 20
    feature = model.encode([text, "a b"])
    assert feature[0]["input_ids"] == [tok.cls_token_id] + ids[:6] + ids[-4:] + [tok.sep_token_id]  # 12 // 2 + 4
    assert feature[1]["input_ids"] == [tok.cls_token_id] + ids[:2] + [tok.sep_token_id]
    # max_length is capped at the encoder's position limit (128 in the tiny backbone)
    assert BertClassifier.from_backbone(str(tiny_backbone), LABELS, max_length=4096).max_length == 128


def test_bilstm_tokens_and_truncation():
    assert is_unspaced(["这个很好 下次还来", "太差"]) and not is_unspaced(["good one", "这 bad word"])
    model = small_bilstm(["这个很好", "太差了"], max_length=4)
    assert model.char_level
    ids = model.encode(["这个很好太差了", "", "新"])
    idx = model.index
    assert ids[0]["input_ids"] == [idx["这"], idx["个"], idx["差"], idx["了"]]  # head 2 + tail 2
    assert ids[1]["input_ids"] == [1] and ids[2]["input_ids"] == [1]  # empty text and unknown char: [UNK]
    words = small_bilstm(["good one", "bad one"], min_count=2)
    assert not words.char_level and words.vocab == ["[PAD]", "[UNK]", "one"]


# ---------------------------------------------------------------------------
# Round trips


TEXTS = ["a b c d", "x y z", "m n o p q r s t u v w", "a", "the said european german"]


def _round_trip(model, folder, texts):
    model.eval()
    before = predict_proba(model, texts, batch_size=2)
    model.save(folder, {"note": "round trip"})
    loaded = load_model(folder)
    after = predict_proba(loaded, texts, batch_size=2)
    np.testing.assert_array_equal(before, after)
    assert before.shape == (len(texts), 2) and np.allclose(before.sum(1), 1, atol=1e-6)
    info = json.loads((folder / "distill.json").read_text(encoding="utf-8"))
    assert info["meta"]["task"] == "classify" and info["meta"]["note"] == "round trip" and info["labels"] == LABELS
    return loaded, info


def test_bert_round_trip(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    model = BertClassifier.from_backbone(str(tiny_backbone), LABELS, max_length=16)
    loaded, info = _round_trip(model, tmp_path / "bert", TEXTS)
    assert isinstance(loaded, BertClassifier) and info["kind"] == "bert-cls"
    assert loaded.max_length == 16 and info["meta"]["role"] == "teacher"


def test_bert_round_trip_sentencepiece_pruned(sp_backbone, corpus, tmp_path):
    """Raw Chinese text through a SentencePiece tokenizer, its vocabulary pruned to the texts."""
    texts = ["".join(s) for s in corpus.train.tokens[:6]]
    torch.manual_seed(0)
    model = BertClassifier.from_backbone(str(sp_backbone), LABELS, texts=texts)
    assert model.meta["vocabulary"]["pruned"]["kept"] < model.meta["vocabulary"]["pruned"]["original"]
    _round_trip(model, tmp_path / "sp", texts)


def test_bilstm_round_trip(tmp_path):
    model = small_bilstm(["这个很好", "太差了", "还行吧"], lstm_layers=2)
    loaded, info = _round_trip(model, tmp_path / "bilstm", ["这个很好", "差", "未见过的字", "很好很好很好"])
    assert info["kind"] == "bilstm-cls" and info["config"]["char_level"] is True and loaded.lstm_layers == 2
    (tmp_path / "bilstm" / "vocab.json").unlink()
    with pytest.raises(DistillError, match="vocab.json: missing"):
        load_model(tmp_path / "bilstm")


def test_small_student_round_trip(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    teacher = BertClassifier.from_backbone(str(tiny_backbone), LABELS, max_length=32)
    teacher.save(tmp_path / "teacher")
    student = BertClassifier.from_teacher(tmp_path / "teacher", num_layers=1, layers=[1])
    assert student.encoder.config.num_hidden_layers == 1 and student.meta["layers"] == [1]
    assert torch.equal(student.encoder.encoder.layer[0].output.dense.weight,
                       teacher.encoder.encoder.layer[1].output.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    loaded, info = _round_trip(student, tmp_path / "student", TEXTS)
    assert info["config"]["num_layers"] == 1 and info["meta"]["role"] == "student" and loaded.max_length == 32
    with pytest.raises(DistillError, match="layers"):
        BertClassifier.from_teacher(teacher, num_layers=3)


# ---------------------------------------------------------------------------
# Training


def test_bilstm_learns_a_separable_task(toy_data, tmp_path):
    model = small_bilstm(toy_data.train.texts, dropout=0.0)
    summary = train_classifier(model=model, data=toy_data, out=tmp_path / "m", cfg=cfg(epochs=4), quiet=True)
    loaded = load_model(tmp_path / "m")
    metrics = evaluate_classifier(loaded, toy_data.test)
    assert metrics["accuracy"] >= 0.95 and metrics["f1"] == metrics["macro_f1"]
    assert summary["best_f1"] >= 0.95
    record = json.loads((tmp_path / "m" / LOG).read_text(encoding="utf-8").splitlines()[0])
    assert {"ce", "dev_f1", "dev_precision", "dev_recall", "dev_accuracy"} <= set(record) and "kd" not in record
    info = json.loads((tmp_path / "m" / "distill.json").read_text(encoding="utf-8"))
    assert info["meta"]["training"]["train_sentences"] == 64 and info["meta"]["distillation"]["alpha"] == 1.0


def test_resume_is_bit_identical(toy_data, tmp_path, monkeypatch):
    def run(out, **kw):
        return train_classifier(model=small_bilstm(toy_data.train.texts), data=toy_data, out=out,
                                cfg=cfg(epochs=2, checkpoint_every=3), quiet=True, **kw)

    run(tmp_path / "whole")
    calls = [0]
    real = ClassificationLoss.__call__

    def dies_at_step_5(self, model, out, batch):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("killed")
        return real(self, model, out, batch)

    monkeypatch.setattr(ClassificationLoss, "__call__", dies_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "cut")
    monkeypatch.setattr(ClassificationLoss, "__call__", real)
    run(tmp_path / "cut", resume=True)  # from the checkpoint of step 3
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def log(folder):
        return [{k: v for k, v in json.loads(l).items() if k != "seconds"}
                for l in (folder / LOG).read_text(encoding="utf-8").splitlines()]
    assert log(tmp_path / "whole") == log(tmp_path / "cut")


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory, tiny_backbone, toy_data):
    """A tiny BERT classifier teacher trained a few steps on the toy task."""
    out = tmp_path_factory.mktemp("cls-teacher") / "teacher"
    torch.manual_seed(0)
    model = BertClassifier.from_backbone(str(tiny_backbone), LABELS, max_length=16)
    train_classifier(model=model, data=toy_data, out=out, cfg=cfg(epochs=1, lr=1e-3, embedding_lr=1e-3), quiet=True)
    return out


def test_teacher_logits_are_cached(toy_teacher, toy_data, monkeypatch):
    texts = toy_data.train.texts[:10]
    first = teacher_logits(toy_teacher, texts)
    assert first.shape == (10, 2) and first.dtype == np.float32
    assert logits_path(toy_teacher, texts, LABELS).is_file()

    def no_compute(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr("distill.classify.predict_logits", no_compute)
    np.testing.assert_array_equal(teacher_logits(toy_teacher, texts), first)
    with pytest.raises(AssertionError, match="computed again"):  # other texts: not in the cache
        teacher_logits(toy_teacher, texts[:9])


def test_distilled_student_with_transfer(toy_teacher, toy_data, tmp_path):
    transfer = toy(24, 9, "toy:transfer").without_labels()
    student = BertClassifier.from_teacher(toy_teacher, num_layers=1)
    train_classifier(model=student, data=toy_data, out=tmp_path / "s", cfg=cfg(epochs=1, max_steps=4, lr=1e-3),
                     teacher_logits=teacher_logits(toy_teacher, toy_data.train.texts), transfer=transfer,
                     transfer_logits=teacher_logits(toy_teacher, transfer.texts), alpha=0.5, temperature=2.0,
                     transfer_ratio=0.25, quiet=True)
    info = json.loads((tmp_path / "s" / "distill.json").read_text(encoding="utf-8"))
    assert info["kind"] == "bert-cls" and info["meta"]["transfer"]["texts"] == 24
    assert info["meta"]["training"]["transfer_sentences_per_epoch"] == 16
    record = json.loads((tmp_path / "s" / LOG).read_text(encoding="utf-8").splitlines()[0])
    assert record["step"] == 4 and record["kd"] > 0 and "dev_accuracy" in record


def test_train_classifier_refuses_bad_inputs(toy_data, tmp_path):
    model = small_bilstm(toy_data.train.texts)
    unlabelled = toy(4, 5, "toy:transfer").without_labels()
    with pytest.raises(DistillError, match="needs the teacher's logits"):
        train_classifier(model=model, data=toy_data, out=tmp_path / "m", cfg=cfg(), alpha=0.5)
    with pytest.raises(DistillError, match=r"shape \(64, 2\)"):
        train_classifier(model=model, data=toy_data, out=tmp_path / "m", cfg=cfg(), alpha=0.5,
                         teacher_logits=np.zeros((63, 2)))
    with pytest.raises(DistillError, match="needs distillation"):
        train_classifier(model=model, data=toy_data, out=tmp_path / "m", cfg=cfg(), transfer=unlabelled)
    with pytest.raises(DistillError, match="must be unlabelled"):
        train_classifier(model=model, data=toy_data, out=tmp_path / "m", cfg=cfg(), alpha=0.5,
                         teacher_logits=np.zeros((64, 2)), transfer=toy(4, 5, "toy:labelled"))
    other = TextDataset("toy", TextCorpus("t", ["a b", "c d"], ["neg", "odd"]), toy_data.dev, toy_data.test, LABELS)
    with pytest.raises(DistillError, match=r"labels \['odd'\] are not among"):
        train_classifier(model=model, data=other, out=tmp_path / "m", cfg=cfg())
    assert not (tmp_path / "m").exists()
