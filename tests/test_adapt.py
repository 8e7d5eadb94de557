"""Language-adaptive MLM pretraining (teachers/adapt.py, teachers/mlm_data.py): the masking rule, what trains
in which phase, deterministic resume after Ctrl-C, and that the output is a backbone
``build_teacher`` accepts. Tiny BERT, tiny corpora, a few steps each."""

from __future__ import annotations

import json
import os
import random
import signal

import pytest
import torch
from safetensors.torch import load_file

from distill.errors import DataError, DistillError
from teachers import adapt
from teachers.adapt import adapt_backbone
from teachers.mlm_data import IGNORE, looks_char_level, mask_words, read_text

MASK, VOCAB, UNK = 4, 500, 1
SPECIAL = {0, 1, 2, 3, 4}


def _words(rng: random.Random, n_words: int, max_pieces: int = 1) -> list[list[int]]:
    return [[rng.randrange(5, VOCAB) for _ in range(rng.randint(1, max_pieces))] for _ in range(n_words)]


# --- masking ----------------------------------------------------------------


def test_mask_words_proportions_follow_the_80_10_10_rule():
    data_rng, rng = random.Random(0), random.Random(13)
    selected = total = masked = randomised = kept = 0
    for _ in range(2000):
        words = _words(data_rng, 30)
        ids, labels = mask_words(words, rng, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL)
        flat = [t for w in words for t in w]
        assert len(ids) == len(labels) == len(flat)
        for orig, new, lab in zip(flat, ids, labels):
            total += 1
            if lab == IGNORE:
                assert new == orig  # unchosen positions are never altered
                continue
            assert lab == orig
            selected += 1
            masked += new == MASK
            randomised += new not in (MASK, orig)
            kept += new == orig
    assert total == 60000
    assert abs(selected / total - 0.15) < 0.005
    assert abs(masked / selected - 0.8) < 0.02
    assert abs(randomised / selected - 0.1) < 0.015
    assert abs(kept / selected - 0.1) < 0.015


def test_mask_words_masks_whole_words_and_skips_special_words():
    data_rng, rng = random.Random(1), random.Random(5)
    selected = total = 0
    for _ in range(500):
        words = _words(data_rng, 20, max_pieces=3) + [[UNK]]
        ids, labels = mask_words(words, rng, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL)
        pos = 0
        for w in words:
            lab, new = labels[pos : pos + len(w)], ids[pos : pos + len(w)]
            pos += len(w)
            assert lab == [IGNORE] * len(w) or lab == w  # all sub-tokens of a word, or none
            if lab == w:
                # one decision per word: all [MASK], all kept, or all random (none of them special)
                assert new == [MASK] * len(w) or new == w or all(t != MASK and t not in SPECIAL for t in new)
            if w == [UNK]:
                assert lab == [IGNORE]
            total += len(w) * (w != [UNK])
            selected += sum(l != IGNORE for l in lab)
    assert abs(selected / total - 0.15) < 0.01  # the token budget holds with multi-piece words too


def test_mask_words_is_deterministic_and_never_empty():
    words = [[7], [8, 9], [10]]
    a = mask_words(words, random.Random(3), mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL)
    b = mask_words(words, random.Random(3), mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL)
    assert a == b
    for seed in range(50):  # short sequences still get at least one prediction
        _, labels = mask_words(words, random.Random(seed), mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL)
        assert any(l != IGNORE for l in labels)


# --- text ---------------------------------------------------------------------


def test_read_text_splits_cjk_per_character_and_other_text_on_spaces(tmp_path):
    zh = tmp_path / "zh.txt"
    zh.write_text("我们在北京。\n\n中国 人民 ok\n", encoding="utf-8")
    corpus = read_text(zh)
    assert corpus.char_level and corpus.tokens == [list("我们在北京。"), list("中国人民ok")]
    en = tmp_path / "en.txt"
    en.write_text("the german said\nhello 中\n", encoding="utf-8")
    corpus = read_text(en)
    assert not corpus.char_level and corpus.tokens == [["the", "german", "said"], ["hello", "中"]]
    assert looks_char_level(["中文 text 中文字"]) and not looks_char_level(["english 中"])


def test_read_text_rejects_empty_and_undecodable_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt:1"):
        read_text(empty)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("第一行\n".encode() + b"\xff\xfe bad\n")
    with pytest.raises(DataError, match=r"bad.txt:2: not valid UTF-8"):
        read_text(bad)


# --- training -----------------------------------------------------------------


@pytest.fixture(scope="module")
def zh_text(tmp_path_factory, resources):
    """Plain text: the tiny MSRA train sentences, one per line."""
    from distill.data import read_msra

    path = tmp_path_factory.mktemp("text") / "zh.txt"
    path.write_text("\n".join("".join(s) for s in read_msra(resources / "msra_train.txt").tokens) + "\n", encoding="utf-8")
    return path


def _run(out, backbone, text, **kw):
    args = dict(out=out, backbone=str(backbone), text=text, steps=4, batch_size=8, quiet=True)
    args.update(kw)
    return adapt_backbone(**args)


def _source_state(backbone) -> dict:
    return load_file(str(backbone / "model.safetensors"))


def test_new_embeddings_learn_and_embeddings_only_phase_freezes_the_encoder(tmp_path, tiny_backbone, zh_text):
    torch.manual_seed(13)  # the same start adapt_backbone makes: load, extend (random new rows)
    model, tok, _ = adapt.load_mlm(str(tiny_backbone))
    adapt.extend_vocabulary(tok, model, read_text(zh_text).tokens)
    start = model.get_input_embeddings().weight.detach().clone()
    old_size = len(_source_state(tiny_backbone)["embeddings.word_embeddings.weight"])
    assert start.shape[0] > old_size

    summary = _run(tmp_path / "frozen", tiny_backbone, zh_text, embeddings_only_steps=4)
    after = load_file(str(tmp_path / "frozen" / "model.safetensors"))
    source = _source_state(tiny_backbone)
    emb = after["embeddings.word_embeddings.weight"]
    assert (emb[old_size:] - start[old_size:]).abs().max() > 1e-3  # new rows moved
    assert summary["vocabulary"]["added"] == start.shape[0] - old_size
    frozen = [k for k in source if "word_embeddings" not in k and "pooler" not in k]
    assert frozen and all(torch.equal(after[k], source[k]) for k in frozen)  # layers, positions, LayerNorm

    _run(tmp_path / "all", tiny_backbone, zh_text, embeddings_only_steps=2)
    after = load_file(str(tmp_path / "all" / "model.safetensors"))
    changed = [k for k in frozen if not torch.equal(after[k], source[k])]
    assert any(k.startswith("encoder.layer.") for k in changed)


def test_output_folder_is_a_backbone_for_build_teacher(tmp_path, tiny_backbone, zh_text):
    from teachers.bert_crf import build_teacher

    out = tmp_path / "adapted"
    summary = _run(out, tiny_backbone, zh_text, steps=2, mask_prob=0.3)
    for name in ("config.json", "model.safetensors", "tokenizer.json", adapt.HEAD_FILE, adapt.ADAPT_FILE, adapt.LOG):
        assert (out / name).exists(), name
    info = json.loads((out / adapt.ADAPT_FILE).read_text(encoding="utf-8"))
    assert info["source_backbone"] == str(tiny_backbone) and info["steps"] == 2
    assert info["text"]["char_level"] and info["mlm_head"]["source"] == "newly initialised"
    assert info["config"]["mask_prob"] == 0.3 and summary["loss"]["first"] > 0

    sentences = read_text(zh_text).tokens
    teacher = build_teacher(["O", "B-PER", "I-PER"], sentences, backbone=str(out))
    assert teacher.meta["vocabulary"]["added"] == 0  # the vocabulary is already extended
    assert len(teacher.tokenizer) == info["vocabulary"]["vocab_size"]
    saved = load_file(str(out / "model.safetensors"))["embeddings.word_embeddings.weight"]
    assert torch.equal(teacher.encoder.get_input_embeddings().weight.detach(), saved)

    # a second round starts from the trained MLM head, not a new one
    again = _run(tmp_path / "again", out, zh_text, steps=1)
    assert again["mlm_head"]["source"].endswith(adapt.HEAD_FILE) and again["vocabulary"]["added"] == 0


def test_resume_after_ctrl_c_continues_exactly(tmp_path, tiny_backbone, zh_text, monkeypatch):
    straight = tmp_path / "straight"
    _run(straight, tiny_backbone, zh_text, steps=6, embeddings_only_steps=2)
    expected = [json.loads(l) for l in (straight / adapt.LOG).read_text().splitlines()]
    assert [r["step"] for r in expected] == [1, 2, 3, 4, 5, 6]

    calls = {"n": 0}
    real_loss = adapt.mlm_loss

    def interrupting_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C during step 3: the step finishes, then the run stops
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(model, batch)

    out = tmp_path / "resumed"
    monkeypatch.setattr(adapt, "mlm_loss", interrupting_loss)
    with pytest.raises(DistillError, match=r"interrupted \(SIGINT\) at epoch 1, step 3;"):
        _run(out, tiny_backbone, zh_text, steps=6, embeddings_only_steps=2)
    monkeypatch.setattr(adapt, "mlm_loss", real_loss)
    assert not out.exists() and (tmp_path / "resumed.work" / adapt.CHECKPOINT).exists()
    with pytest.raises(DistillError, match="other options: batch_size=8"):
        _run(out, tiny_backbone, zh_text, steps=6, embeddings_only_steps=2, batch_size=4, resume=True)

    _run(out, tiny_backbone, zh_text, steps=6, embeddings_only_steps=2, resume=True)
    got = [json.loads(l) for l in (out / adapt.LOG).read_text().splitlines()]
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in expected], rel=1e-5)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_bad_options_are_user_errors(tmp_path, tiny_backbone, zh_text):
    with pytest.raises(DistillError, match="steps or epochs, not both"):
        _run(tmp_path / "x", tiny_backbone, zh_text, steps=2, epochs=1.0)
    with pytest.raises(DistillError, match="mask_prob must be in"):
        _run(tmp_path / "x", tiny_backbone, zh_text, mask_prob=1.5)
    with pytest.raises(DistillError, match="no checkpoint to resume"):
        _run(tmp_path / "x", tiny_backbone, zh_text, resume=True)
    (tmp_path / "x.work").mkdir()
    (tmp_path / "x.work" / adapt.CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DistillError, match="corrupt checkpoint"):
        _run(tmp_path / "x", tiny_backbone, zh_text, resume=True)
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_of_the_loop_before_the_engine_is_refused_in_one_line(tmp_path, tiny_backbone, zh_text):
    work = tmp_path / "old.work"
    work.mkdir()
    torch.save({"format": adapt.OLD_FORMAT, "model": {}, "optimizer": {}, "scheduler": {},
                "state": {"step": 3, "run": {}}, "rng": {"python": [], "torch": torch.get_rng_state()}},
               work / adapt.CHECKPOINT)
    with pytest.raises(DistillError, match=r"^\S+old\.work/checkpoint\.pt: written by an older distill teacher adapt, "
                                           r"[^\n]*; run without --resume to start over$"):
        _run(tmp_path / "old", tiny_backbone, zh_text, resume=True)


# --- CLI ----------------------------------------------------------------------


def test_cli_adapts_on_the_tiny_msra_corpus(tmp_path, tiny_backbone, resources, run_cli):
    out = tmp_path / "cli"
    code, stdout, err = run_cli(["teacher", "adapt", "--out", str(out), "--backbone", str(tiny_backbone),
                                 "--train", str(resources / "msra_train.txt"), "--format", "msra", "--steps", "3",
                                 "--batch-size", "8", "--embeddings-only-steps", "1"])
    assert code == 0, stdout + err
    assert "3 steps: MLM loss" in stdout
    info = json.loads((out / adapt.ADAPT_FILE).read_text(encoding="utf-8"))
    assert info["text"]["source"].startswith("dataset train split") and info["text"]["char_level"]
    assert info["text"]["sentences"] == 36  # 40 minus the dev split carved from train
    assert info["config"]["embeddings_only_steps"] == 1


def test_cli_adapts_on_a_plain_text_file_and_reports_bad_files(tmp_path, tiny_backbone, run_cli):
    text = tmp_path / "en.txt"
    text.write_text("the german said\nthe european said the german\n" * 5, encoding="utf-8")
    out = tmp_path / "cli-text"
    code, stdout, err = run_cli(["teacher", "adapt", "--out", str(out), "--backbone", str(tiny_backbone),
                                 "--text", str(text), "--epochs", "1", "--batch-size", "4"])
    assert code == 0, stdout + err
    info = json.loads((out / adapt.ADAPT_FILE).read_text(encoding="utf-8"))
    assert info["text"]["source"] == "text file" and not info["text"]["char_level"]
    assert info["steps"] == 3 and info["vocabulary"]["added"] == 0  # 10 lines / 4, all words known

    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    code, _, err = run_cli(["teacher", "adapt", "--out", str(tmp_path / "bad"),
                            "--backbone", str(tiny_backbone), "--text", str(empty)])
    assert code == 1
    assert err.strip().splitlines() == [f"error: {empty}:1: file is empty; expected at least one sentence"]
    assert not (tmp_path / "bad").exists()
