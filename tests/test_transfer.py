"""Distillation over unlabelled transfer text: the mixed loss against brute force over tag
paths, the Viterbi hard-label term, overlap dropping, memory-mapped transfer emissions,
epoch mixing, resume mid-epoch, both students, and the command line."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.config import TransferConfig
from distill.crf import CRF
from distill.errors import DistillError
from distill.kd import DistillationLoss, KDConfig, teacher_crf
from distill.modeling import TaggerOutput

LABELS = ["O", "B-PER", "I-PER"]
# Sentence 0 (3 words) is labelled, sentence 1 (2 words) is transfer text; (1, 2) is padding.
STUDENT = [[[1.0, 0.0, -1.0], [0.5, 0.2, 0.1], [-0.3, 0.8, 0.0]],
           [[0.0, 2.0, 1.0], [1.5, -0.5, 0.3], [9.0, -9.0, 9.0]]]
TEACHER = [[[2.0, -1.0, 0.0], [0.0, 1.0, 0.5], [0.3, 0.3, -2.0]],
           [[1.0, 1.0, 0.0], [-1.0, 0.0, 3.0], [-7.0, 7.0, 3.0]]]
LENGTHS = [3, 2]
TAGS = [[1, 2, 0], [2, 2, 0]]  # sentence 1's "tags" are whatever collate left there: never read


class _Tiny(torch.nn.Module):
    """Just enough of a tagger for the loss: labels, a CRF and ``loss`` (as ``Tagger.loss``)."""

    labels = LABELS

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.crf = CRF(3)

    def loss(self, out, tags):
        return self.crf(out.emissions, tags, out.mask, reduction="sum") / out.mask.sum()


def _mask():
    return torch.tensor([[True, True, True], [True, True, False]])


def _score(crf: CRF, emissions, path) -> float:
    s = crf.start_transitions[path[0]].item() + crf.end_transitions[path[-1]].item()
    s += sum(emissions[t][y] for t, y in enumerate(path))
    return s + sum(crf.transitions[a, b].item() for a, b in zip(path, path[1:]))


def _nll(crf: CRF, emissions, path) -> float:
    """-log p(path) by brute force over all 3^n paths."""
    n = len(path)
    log_z = math.log(sum(math.exp(_score(crf, emissions[:n], p)) for p in itertools.product(range(3), repeat=n)))
    return log_z - _score(crf, emissions[:n], path)


def _kl_sum(T: float) -> float:
    """Sum over the 5 real positions of KL(softmax(teacher / T) || softmax(student / T))."""
    total = 0.0
    for b, n in enumerate(LENGTHS):
        for t in range(n):
            p = torch.softmax(torch.tensor(TEACHER[b][t]) / T, -1).tolist()
            q = torch.softmax(torch.tensor(STUDENT[b][t]) / T, -1).tolist()
            total += sum(a * math.log(a / c) for a, c in zip(p, q))
    return total


def _batch(gold):
    batch = {"tags": torch.tensor(TAGS), "teacher_emissions": torch.tensor(TEACHER)}
    if gold is not None:
        batch["gold"] = torch.tensor(gold)
    return batch


@pytest.mark.parametrize("alpha, T", [(0.3, 2.0), (0.5, 4.0)])
def test_transfer_sentences_add_kd_but_no_crf_term(alpha, T):
    model = _Tiny()
    out = TaggerOutput(torch.tensor(STUDENT, requires_grad=True), _mask())
    loss, parts = DistillationLoss(KDConfig(alpha=alpha, temperature=T))(model, out, _batch([True, False]))

    nll = _nll(model.crf, STUDENT[0], TAGS[0]) / 3  # the labelled sentence's 3 words only
    kd = T * T * _kl_sum(T) / 5  # every real word of both sentences
    assert parts["nll"] == pytest.approx(nll, rel=1e-5) and parts["kd"] == pytest.approx(kd, rel=1e-5)
    assert loss.item() == pytest.approx(alpha * nll + (1 - alpha) * kd, rel=1e-5)
    # ... and it could have been otherwise: counting the transfer sentence's tags changes the value
    both = (_nll(model.crf, STUDENT[0], TAGS[0]) + _nll(model.crf, STUDENT[1], TAGS[1][:2])) / 5
    assert alpha * both + (1 - alpha) * kd != pytest.approx(loss.item(), rel=1e-3)
    loss.backward()  # the transfer sentence gets gradient from KD alone
    assert out.emissions.grad[1, :2].abs().sum() > 0 and out.emissions.grad[1, 2].abs().sum() == 0


def test_all_labelled_is_bit_identical_to_a_batch_without_flags():
    model = _Tiny()
    out = TaggerOutput(torch.tensor(STUDENT), _mask())
    loss_fn = DistillationLoss(KDConfig(alpha=0.4, temperature=3.0))
    plain, _ = loss_fn(model, out, _batch(None))
    flagged, _ = loss_fn(model, out, _batch([True, True]))
    assert plain.item() == flagged.item()
    # a batch of transfer sentences only: KD alone, no CRF term, and still differentiable
    out = TaggerOutput(torch.tensor(STUDENT, requires_grad=True), _mask())
    only, parts = loss_fn(model, out, _batch([False, False]))
    assert parts["nll"] == 0.0 and only.item() == pytest.approx(0.6 * parts["kd"], rel=1e-6)
    only.backward()
    assert out.emissions.grad is not None


def _best_path(crf: CRF, emissions, valid_only: bool = True) -> list[int]:
    """Brute force: the highest-scoring path (valid only: never starting with I-PER nor going O -> I-PER)."""
    paths = [p for p in itertools.product(range(3), repeat=len(emissions))
             if not valid_only or (p[0] != 2 and all(not (b == 2 and a == 0) for a, b in zip(p, p[1:])))]
    return list(max(paths, key=lambda p: _score(crf, emissions, p)))


def test_viterbi_kd_is_the_nll_of_the_teachers_valid_path():
    model = _Tiny()
    torch.manual_seed(1)
    t_crf = CRF(3)
    with torch.no_grad():
        t_crf.transitions[0, 2] = 5.0  # O -> I-PER would win unconstrained
    stored = {"start": t_crf.start_transitions.tolist(), "end": t_crf.end_transitions.tolist(),
              "transitions": t_crf.transitions.tolist()}
    paths = [_best_path(t_crf, TEACHER[b][:n]) for b, n in enumerate(LENGTHS)]
    assert _best_path(t_crf, TEACHER[1][:2], valid_only=False) == [0, 2] != paths[1]  # the constraint matters
    alpha = 0.25
    out = TaggerOutput(torch.tensor(STUDENT), _mask())
    loss, parts = DistillationLoss(KDConfig(alpha=alpha, kd="viterbi"), teacher_crf=teacher_crf(stored, 3))(
        model, out, _batch([True, False]))
    nll_gold = _nll(model.crf, STUDENT[0], TAGS[0]) / 3
    nll_path = (_nll(model.crf, STUDENT[0], paths[0]) + _nll(model.crf, STUDENT[1], paths[1])) / 5
    assert parts["kd"] == pytest.approx(nll_path, rel=1e-5)
    assert loss.item() == pytest.approx(alpha * nll_gold + (1 - alpha) * nll_path, rel=1e-5)


# --- epoch mixing ------------------------------------------------------------------


def test_epoch_mixer_uses_every_sentence_once_before_any_twice():
    from distill.transfer import EpochMixer, per_epoch

    counts = np.array([1, 2, 1, 1, 3, 1, 1])  # sentence 1 and 4 were split into pieces
    mixer = EpochMixer(5, counts, per_epoch(0.6, 5, 7), seed=3)  # 3 transfer sentences per epoch
    chosen = np.concatenate([mixer.sentences(e) for e in range(7)])  # 21 = three passes
    for p in range(3):
        assert sorted(chosen[7 * p : 7 * p + 7].tolist()) == list(range(7))
    items = mixer.items(1)
    assert items[:5] == list(range(5)) and len(items) == mixer.size(1)
    first = 5 + np.concatenate([[0], np.cumsum(counts)[:-1]])
    want = [int(first[s]) + k for s in mixer.sentences(1) for k in range(counts[s])]
    assert items[5:] == want
    assert EpochMixer(5, counts, 7, seed=3).items(2) == EpochMixer(5, counts, 7, seed=3).items(2)
    assert per_epoch(None, 5, 7) == 7
    with pytest.raises(DistillError, match="transfer-ratio"):
        per_epoch(0.0, 5, 7)


# --- with the tiny corpus and teacher ------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_teacher) -> Path:
    """A private copy: transfer emissions are written into the teacher's folder."""
    dst = tmp_path_factory.mktemp("transfer") / "teacher"
    shutil.copytree(tiny_teacher, dst)
    for old in dst.glob("emissions-*"):  # other tests may have emitted into the shared teacher for other data
        shutil.rmtree(old)
    return dst


@pytest.fixture(scope="module")
def labelled(tiny_dataset_kwargs) -> dict:
    """20 of the 36 tiny training sentences are labelled; the other 16 are the transfer text."""
    return dict(tiny_dataset_kwargs, max_train=20)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, labelled) -> Path:
    from distill.data import unlabelled_train

    rest = unlabelled_train(labelled)
    path = tmp_path_factory.mktemp("text") / "raw.txt"
    path.write_text("\n".join("".join(s) for s in rest.tokens) + "\n\n", encoding="utf-8")
    return path


def test_unlabelled_train_is_the_complement_of_max_train(labelled, tiny_dataset_kwargs, monkeypatch):
    from distill import data
    from distill.transfer import read_source

    ds, pool = data.load_dataset(**labelled), data.load_dataset(**tiny_dataset_kwargs)
    rest = data.unlabelled_train(labelled)
    assert rest.tags is None and len(ds.train) == 20 and len(rest) == len(pool.train) - 20 == 16
    key = "\x1f".join
    assert sorted(map(key, ds.train.tokens + rest.tokens)) == sorted(map(key, pool.train.tokens))
    assert not set(map(key, rest.tokens)) & set(map(key, ds.dev.tokens))
    assert len(data.unlabelled_train(tiny_dataset_kwargs)) == 0  # no --max-train: nothing left out

    # msra:unlabelled is the same function on the built-in data (here: the tiny files standing in for it)
    with pytest.raises(DistillError, match="msra:unlabelled"):
        read_source("msra:unlabelled", dataset=labelled, char_level=True)
    monkeypatch.setattr(data, "msra_paths", lambda: (tiny_dataset_kwargs["train"], tiny_dataset_kwargs["test"]))
    builtin = {"name": "msra", "max_train": 10, "dev_size": 4}
    got = read_source("msra:unlabelled", dataset=builtin, char_level=True)
    assert got.tokens == data.unlabelled_train(builtin).tokens and len(got) == 36 - 10
    with pytest.raises(DistillError, match="expected one of msra:unlabelled"):
        read_source("msra:labelled", dataset=builtin, char_level=True)


def test_overlap_with_dev_test_and_labelled_sentences_is_dropped(tmp_path, teacher, labelled, text_file):
    from distill.data import load_dataset
    from distill.transfer import load_transfer

    ds = load_dataset(**labelled)
    lines = text_file.read_text(encoding="utf-8").split()
    long_test = next("".join(t) for t in ds.test.tokens if len(t) >= 10)
    # a line holding a whole test sentence inside it (news text quoting one) is dropped as overlap
    mixed = [lines[0], "".join(ds.dev.tokens[1]), lines[1], "".join(ds.test.tokens[3]), "".join(ds.train.tokens[0]),
             lines[2], "前言：" + long_test + "。"]
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(mixed), encoding="utf-8")
    ts = load_transfer([path], teacher=teacher, dataset=labelled, labelled=ds.train, labels=ds.labels,
                       char_level=True, quiet=True)
    assert len(ts) == 3 and ts.dropped_overlap == 3 and ts.dropped_labelled == 1
    assert ["".join(t) for t in ts.corpus.tokens] == [lines[0], lines[1], lines[2]]
    # the emissions hold every line of the file, in order; the set reads the kept rows
    em = ts.sources[0].emissions
    assert len(em) == 7 and em.meta["unlabelled"] is True and ts.sources[0].keep.tolist() == [0, 2, 5]
    assert np.array_equal(ts.emissions(2), em[5])
    meta = ts.meta(0.5)
    assert meta["dropped_overlap"] == 3 and meta["sentences"] == 3 and meta["ratio"] == 0.5


def test_held_out_spans_match_whole_token_runs_of_long_sentences_only():
    from distill.transfer import HeldOutSpans, sentence_key

    spans = HeldOutSpans([list("一二三四五六七八九十"), list("短句子"), "the cat sat on the mat by the door today".split()],
                         min_tokens=10)
    assert spans(sentence_key(list("他说一二三四五六七八九十。")))
    assert spans(sentence_key(list("一二三四五六七八九十")))
    assert not spans(sentence_key(list("一二三四五六七八九")))  # a prefix of it is not it
    assert not spans(sentence_key(list("他说短句子。")))  # under min_tokens: chance matches, kept
    words = "yes the cat sat on the mat by the door today".split()
    assert spans(sentence_key(words))
    # tokens must match whole: "thecat" is not "the" "cat"
    assert not spans(sentence_key("yes the cat sat on the mat by the door todays".split()))


def test_transfer_emissions_are_memory_mapped_and_read_per_batch(tmp_path, teacher, labelled, text_file, monkeypatch):
    from distill import emissions, transfer
    from distill.data import load_dataset, read_text
    from distill.emissions import Emissions, compute, emit_text, text_folder
    from distill.modeling import load_model
    from students.train import BiLSTMCRFConfig, default_train_config, train_student

    # written a chunk at a time, the same numbers as computed at once
    monkeypatch.setattr(emissions, "TEXT_CHUNK", 5)
    corpus = read_text(text_file, char_level=True)
    folder = emit_text(model=teacher, corpus=corpus, out=tmp_path / "em", quiet=True)
    em = Emissions(folder)
    at_once = compute(load_model(teacher), corpus.tokens)
    assert len(em) == 16 and all(np.allclose(em[i], at_once[i], atol=1e-2) for i in range(16))
    assert isinstance(em[3], np.memmap) and em.meta["char_level"] is True
    assert text_folder(teacher, corpus, em.labels).name == f"emissions-{em.meta['fingerprint']}"
    ds = load_dataset(**labelled)
    with pytest.raises(DistillError, match="fingerprint"):
        em.check(ds.train, ds.labels)  # emissions for other text are refused

    # training: every piece's teacher emissions are a memmap slice read when its batch is made
    seen = []
    real = transfer.TeacherEmissions.collate

    def spy(self, model):
        inner = real(self, model)

        def collate(pieces):
            seen.extend((p.sentence, isinstance(self[p.sentence], np.memmap), "teacher_emissions" in p.feature)
                        for p in pieces)
            batch = inner(pieces)
            first = pieces[0]
            want = torch.as_tensor(np.array(self[first.sentence][first.start : first.end]), dtype=torch.float32)
            assert torch.equal(batch["teacher_emissions"][0, : first.n_words], want)
            return batch
        return collate
    monkeypatch.setattr(transfer.TeacherEmissions, "collate", spy)
    cfg = default_train_config("bilstm-crf", epochs=1, batch_size=8, checkpoint_minutes=0)
    train_student(out=tmp_path / "s", teacher=teacher, student=BiLSTMCRFConfig(), dataset=labelled,
                  transfer=TransferConfig((text_file,)), train_config=cfg, quiet=True)
    assert {s for s, _, _ in seen} == set(range(20 + 16))  # one epoch: all labelled and all transfer sentences
    assert all(mapped and not attached for _, mapped, attached in seen)


def test_student_records_what_it_saw(tmp_path, teacher, labelled, text_file):
    from students.train import BiLSTMCRFConfig, default_train_config, train_student

    cfg = default_train_config("bilstm-crf", epochs=2, batch_size=8, checkpoint_minutes=0)
    train_student(out=tmp_path / "s", teacher=teacher, student=BiLSTMCRFConfig(), dataset=labelled,
                  transfer=TransferConfig((str(text_file),), 0.5), train_config=cfg, quiet=True)
    meta = json.loads((tmp_path / "s" / "distill.json").read_text())["meta"]
    assert meta["training"]["train_sentences"] == 20 and meta["training"]["transfer_sentences"] == 16
    assert meta["training"]["transfer_sentences_per_epoch"] == 10
    assert meta["transfer"]["sources"] == [str(text_file)] and meta["transfer"]["sentences"] == 16
    assert meta["transfer"]["dropped_overlap"] == 0 and meta["transfer"]["ratio"] == 0.5
    # 20 labelled + 10 transfer pieces, batch 8: 4 steps an epoch
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 8]


def test_resume_mid_epoch_with_a_transfer_set_is_bit_identical(tmp_path, teacher, labelled, text_file, monkeypatch):
    import distill.train as dt
    from distill.train import CHECKPOINT, load_checkpoint
    from students.train import BiLSTMCRFConfig, default_train_config, train_student

    cfg = default_train_config("bilstm-crf", epochs=3, batch_size=8, checkpoint_minutes=0, patience=10)

    def run(out, resume=False):
        return train_student(out=out, teacher=teacher, student=BiLSTMCRFConfig(), dataset=labelled,
                             transfer=TransferConfig((text_file,), 0.5), kd=KDConfig(kd="both"), train_config=cfg,
                             resume=resume, quiet=True)
    run(tmp_path / "ref")

    real = dt.train

    def interrupted(*args, loss_fn, **kwargs):
        calls = [0]

        def loss(model, out, batch):
            calls[0] += 1
            if calls[0] == 6:  # epoch 2, step 2 (4 steps an epoch): as Ctrl-C would
                signal.raise_signal(signal.SIGINT)
            return loss_fn(model, out, batch)
        return real(*args, loss_fn=loss, **kwargs)
    monkeypatch.setattr(dt, "train", interrupted)
    with pytest.raises(DistillError, match="interrupted"):
        run(tmp_path / "cut")
    state = load_checkpoint(tmp_path / "cut.work" / CHECKPOINT)["state"]
    assert state["epoch"] == 1 and state["step_in_epoch"] == 2 and not state.get("done")
    monkeypatch.setattr(dt, "train", real)
    summary = run(tmp_path / "cut", resume=True)
    assert summary["global_step"] == 12

    a, b = (load_checkpoint(tmp_path / f"{n}.work" / CHECKPOINT) for n in ("ref", "cut"))
    assert a["model"].keys() == b["model"].keys()
    assert [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])] == []
    assert (tmp_path / "ref" / "model.safetensors").read_bytes() == (tmp_path / "cut" / "model.safetensors").read_bytes()

    # another transfer set is another run: resuming it is refused
    with pytest.raises(DistillError, match="other training data"):
        train_student(out=tmp_path / "cut", teacher=teacher, student=BiLSTMCRFConfig(), dataset=labelled,
                      transfer=TransferConfig((text_file,), 0.25), train_config=cfg, resume=True, quiet=True)


def test_viterbi_kd_and_bert_small_train_with_a_transfer_set(tmp_path, teacher, labelled, text_file):
    from students.train import STUDENTS, default_train_config, train_student

    for arch, kd in (("bilstm-crf", "viterbi"), ("bert-small", "emission")):
        cfg = default_train_config(arch, epochs=1, batch_size=8, max_steps=3, checkpoint_minutes=0)
        train_student(out=tmp_path / arch, teacher=teacher, student=STUDENTS[arch](num_layers=1), dataset=labelled,
                      kd=KDConfig(kd=kd), transfer=TransferConfig((text_file,)), train_config=cfg, quiet=True)
        info = json.loads((tmp_path / arch / "distill.json").read_text())
        assert info["meta"]["distillation"]["kd"] == kd and info["meta"]["training"]["transfer_sentences"] == 16
        record = json.loads((tmp_path / arch / "train_log.jsonl").read_text().splitlines()[0])
        assert math.isfinite(record["loss"]) and record["kd"] > 0


def test_transfer_needs_distillation(tmp_path, teacher, labelled, text_file):
    from students.train import BiLSTMCRFConfig, train_student

    with pytest.raises(DistillError, match="alpha < 1"):
        train_student(out=tmp_path / "s", teacher=teacher, student=BiLSTMCRFConfig(), kd=KDConfig(alpha=1.0),
                      dataset=labelled, transfer=TransferConfig((text_file,)), quiet=True)
    with pytest.raises(DistillError, match="needs a transfer set"):
        train_student(out=tmp_path / "s", teacher=teacher, student=BiLSTMCRFConfig(), dataset=labelled,
                      transfer=TransferConfig(ratio=1.0), quiet=True)
    assert not (tmp_path / "s").exists()


# --- the command line ----------------------------------------------------------------


def test_cli_emit_text_then_student_transfer(tmp_path, run_cli, teacher, labelled, text_file):
    from distill.data import load_dataset, read_text
    from distill.emissions import Emissions, text_folder

    r = run_cli(["teacher", "emit", str(teacher), "--text", str(text_file)])
    assert r.code == 0, r.err[-2000:]
    folder = text_folder(teacher, read_text(text_file, char_level=True), load_dataset(**labelled).labels)
    em = Emissions(folder)
    assert len(em) == 16 and em.meta["unlabelled"] is True and em.meta["source"] == str(text_file)
    made = (folder / "emissions.npy").stat().st_mtime_ns

    out = tmp_path / "student"
    argv = ["student", "--teacher", str(teacher), "--train", str(labelled["train"]), "--test", str(labelled["test"]),
            "--format", "msra", "--max-train", "20", "--transfer", str(text_file), "--transfer-ratio", "0.5",
            "--kd", "viterbi", "--epochs", "1", "--batch-size", "8", "--max-steps", "2", "--out", str(out)]
    r = run_cli(argv)
    assert r.code == 0, r.err[-2000:]
    assert (folder / "emissions.npy").stat().st_mtime_ns == made  # the emitted folder was found and used
    meta = json.loads((out / "distill.json").read_text())["meta"]
    assert meta["transfer"]["emissions"] == [str(folder)] and meta["training"]["transfer_sentences"] == 16

    r = run_cli(["teacher", "emit", str(teacher), "--text", str(text_file), "--corpus", str(labelled["test"])])
    assert r.code == 1 and "not both" in r.err_lines[-1]
    r = run_cli(argv[:-2] + ["--out", str(tmp_path / "s2"), "--transfer", "msra:unlabelled"])
    assert r.code == 1 and "msra:unlabelled" in r.err_lines[-1]


def test_cli_emit_corpus_is_found_by_transfer_corpus(tmp_path, run_cli, teacher, labelled):
    from distill.data import load_dataset, read_corpus, without_tags
    from distill.emissions import Emissions, text_folder

    r = run_cli(["teacher", "emit", str(teacher), "--corpus", str(labelled["test"])])
    assert r.code == 0, r.err[-2000:]
    folder = text_folder(teacher, without_tags(read_corpus(labelled["test"])), load_dataset(**labelled).labels)
    assert Emissions(folder).meta["sentences"] == 20
    # as a transfer set of the student, every one of its sentences is a test sentence: all dropped
    r = run_cli(["student", "--teacher", str(teacher), "--train", str(labelled["train"]), "--test",
                 str(labelled["test"]), "--format", "msra", "--max-train", "20", "--transfer-corpus",
                 str(labelled["test"]), "--max-steps", "1", "--out", str(tmp_path / "s")])
    assert r.code == 1 and "20 found in dev/test" in r.err_lines[-1]


def test_capped_builtin_transfer_set_is_a_seeded_subset(tiny_dataset_kwargs, monkeypatch, resources):
    """``msra:unlabelled:N``: N of the built-in transfer sentences, the same N on every call."""
    import distill.data as data
    from distill.transfer import describe, read_source

    monkeypatch.setattr(data, "msra_paths", lambda: (resources / "msra_train.txt", resources / "msra_test.txt"))
    ds = {"name": "msra", "max_train": 10, "dev_size": 4}
    whole = read_source("msra:unlabelled", dataset=ds, char_level=True)
    assert describe("msra:unlabelled:5") == ("builtin", "msra:unlabelled:5")
    five = read_source("msra:unlabelled:5", dataset=ds, char_level=True)
    assert len(five) == 5 and five.tokens == read_source("msra:unlabelled:5", dataset=ds, char_level=True).tokens
    assert {tuple(t) for t in five.tokens} <= {tuple(t) for t in whole.tokens}
    assert len(whole) > 5
