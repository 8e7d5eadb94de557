"""One scoring path: what ``distill eval`` reports is what conlleval gives on the tags
``distill predict --labelled`` writes, for every kind of model the report holds, with
constrained decoding (the default) and with free decoding.

The oracle is conlleval.pl's chunking rules, written out here (``start_of_chunk`` /
``end_of_chunk``), run on the written file, independent of seqeval and of distill.schemes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.modeling import load_model


def end_of_chunk(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    return ((prev in "ES") or (prev == "B" and tag in "BSO") or (prev == "I" and tag in "BSO")
            or (prev != "O" and prev_type != typ))


def start_of_chunk(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    return ((tag in "BS") or (prev in "ESO" and tag in "IE") or (tag != "O" and prev_type != typ))


def conlleval_f1(gold: list[list[str]], pred: list[list[str]]) -> float:
    """Micro F1 over chunks, as conlleval.pl counts them (lenient: a stray I-X starts a chunk)."""
    def split(tag: str) -> tuple[str, str]:
        return ("O", "") if tag == "O" else (tag[0], tag[2:])

    correct = found_gold = found_pred = 0
    for g_sent, p_sent in zip(gold, pred):
        in_correct = False
        pg = pp = ("O", "")
        for g, p in [*zip(g_sent, p_sent), ("O", "O")]:
            (gt, gty), (pt, pty) = split(g), split(p)
            g_end, p_end = end_of_chunk(pg[0], gt, pg[1], gty), end_of_chunk(pp[0], pt, pp[1], pty)
            g_start, p_start = start_of_chunk(pg[0], gt, pg[1], gty), start_of_chunk(pp[0], pt, pp[1], pty)
            if in_correct:
                if g_end and p_end and pg[1] == pp[1]:
                    in_correct = False
                    correct += 1
                elif g_end != p_end or gty != pty:
                    in_correct = False
            if g_start and p_start and gty == pty:
                in_correct = True
            found_gold += g_start and g != "O"
            found_pred += p_start and p != "O"
            pg, pp = (gt, gty), (pt, pty)
    precision = correct / found_pred if found_pred else 0.0
    recall = correct / found_gold if found_gold else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def test_conlleval_oracle_counts_a_stray_inside_tag_as_a_chunk():
    gold = [["B-LOC", "I-LOC", "O", "O", "B-PER"]]
    assert conlleval_f1(gold, gold) == 1.0
    # I-PER after O is a predicted chunk (wrong), B-PER I-LOC is two chunks (both wrong)
    pred = [["B-LOC", "I-LOC", "O", "I-PER", "B-PER"]]
    assert conlleval_f1(gold, pred) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def read_conll(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    tokens, tags, sent_tokens, sent_tags = [], [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            tok, tag = line.split()
            sent_tokens.append(tok)
            sent_tags.append(tag)
        elif sent_tokens:
            tokens.append(sent_tokens)
            tags.append(sent_tags)
            sent_tokens, sent_tags = [], []
    return tokens, tags


@pytest.fixture(scope="module")
def bio_test_file(tmp_path_factory, tiny_dataset_kwargs) -> Path:
    """The tiny MSRA test set converted to CoNLL BIO (as the defect report did with MSRA)."""
    from distill.data import load_dataset

    ds = load_dataset(**tiny_dataset_kwargs)
    path = tmp_path_factory.mktemp("scoring") / "test.bio.conll"
    path.write_text("\n\n".join("\n".join(f"{t} {g}" for t, g in zip(s, tags))
                                for s, tags in zip(ds.test.tokens, ds.test.tags)) + "\n", encoding="utf-8")
    return path


def _scrambled(folder: Path, out: Path, noise: float) -> Path:
    """A model with noisier emissions and transitions that favour O -> I-X, so free Viterbi
    paths hold many invalid IOB2 moves, as barely trained transformers' do."""
    model = load_model(folder)
    torch.manual_seed(5)
    with torch.no_grad():
        model.classifier.weight.add_(torch.randn_like(model.classifier.weight) * noise)
        model.crf.transitions.normal_(0, 1)
        inside = [i for i, label in enumerate(model.labels) if label.startswith("I-")]
        model.crf.transitions[0, inside] += 1.0
        model.crf.start_transitions[inside] += 1.0
    return model.save(out)


@pytest.fixture(scope="module")
def model_kinds(tiny_teacher, tiny_dataset_kwargs, tmp_path_factory) -> dict[str, Path]:
    from distill.train import TrainConfig
    from quantize.api import quantize
    from distill.kd import KDConfig
    from students.train import BiLSTMCRFConfig, train_student

    root = tmp_path_factory.mktemp("kinds")
    teacher = _scrambled(tiny_teacher, root / "teacher", noise=1.0)
    # trained on the test sentences too, so it gets some entities right
    data = dict(tiny_dataset_kwargs, train=tiny_dataset_kwargs["test"])
    train_student(out=root / "bilstm-src", teacher=None, kd=KDConfig(alpha=1.0), dataset=data, quiet=True,
                  student=BiLSTMCRFConfig(embedding_dim=16, hidden_size=32, dropout=0.0, min_count=1),
                  train_config=TrainConfig(epochs=30, batch_size=4, lr=2e-2, embedding_lr=2e-2, head_lr=2e-2,
                                           patience=100, checkpoint_minutes=0))
    bilstm = _scrambled(root / "bilstm-src", root / "bilstm", noise=0.5)
    return {
        "bert-crf": teacher,
        "bilstm-crf": bilstm,
        "torch-int8": quantize(method="int8", model=teacher, out=root / "teacher-int8", quiet=True),
        "onnx": quantize(method="onnx", model=bilstm, out=root / "bilstm-onnx", quiet=True),
    }


@pytest.mark.parametrize("decoding", ["constrained", "free"])
@pytest.mark.parametrize("kind", ["bert-crf", "bilstm-crf", "torch-int8", "onnx"])
def test_eval_f1_equals_conlleval_on_what_predict_writes(kind, decoding, model_kinds, bio_test_file, run_cli, tmp_path):
    import json

    def ok(argv: list[str]) -> None:
        code, _, err = run_cli(argv)
        assert code == 0, err[-2000:]

    model = model_kinds[kind]
    if kind == "onnx" and decoding == "free":
        r = run_cli(["eval", str(model), "--test", str(bio_test_file), "--decoding", "free"])
        assert r.code == 1 and "re-export" in r.err_lines[-1]
        return
    written = tmp_path / "pred.conll"
    ok(["predict", str(model), "--labelled", "-i", str(bio_test_file), "--out", str(written), "--decoding", decoding])
    metrics_file = tmp_path / "eval.json"
    ok(["eval", str(model), "--test", str(bio_test_file), "--out", str(metrics_file), "--decoding", decoding])
    gold_tokens, gold = read_conll(bio_test_file)
    pred_tokens, pred = read_conll(written)
    assert pred_tokens == gold_tokens
    f1 = json.loads(metrics_file.read_text())["f1"]
    assert f1 == pytest.approx(conlleval_f1(gold, pred), abs=1e-12)
    assert sum(t != "O" for s in pred for t in s) > 0 and f1 < 1
    if kind in ("bilstm-crf", "onnx"):  # the BiLSTM-CRF was trained on these sentences: some entities are right
        assert f1 > 0.1


def test_free_decoding_writes_invalid_starts_that_constrained_decoding_never_does(model_kinds, tiny_dataset_kwargs):
    """Why the default matters: the scrambled teacher's free paths start entities with I-,
    its constrained paths never do."""
    from distill.data import load_dataset
    from distill.evaluate import predict_tags

    sentences = load_dataset(**tiny_dataset_kwargs).test.tokens

    def invalid(tags: list[list[str]]) -> int:
        return sum(t.startswith("I-") and (i == 0 or s[i - 1][2:] != t[2:] or s[i - 1] == "O")
                   for s in tags for i, t in enumerate(s))

    assert invalid(predict_tags(load_model(model_kinds["bert-crf"], "free"), sentences)) > 0
    assert invalid(predict_tags(load_model(model_kinds["bert-crf"]), sentences)) == 0
