import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distill.cli import app
from distill.data import load_dataset, read_conll
from distill.emissions import Emissions, emit
from distill.errors import DistillError
from distill.evaluate import predict_tags
from distill.features import make_pieces
from distill.modeling import load_model
from teachers.bert_crf import build_teacher, unk_rate

runner = CliRunner()


def test_vocabulary_extension_adds_missing_training_tokens(tiny_backbone, tiny_dataset_kwargs):
    ds = load_dataset(**tiny_dataset_kwargs)
    plain = build_teacher(ds.labels, ds.train.tokens, backbone=str(tiny_backbone), extend_vocab=False)
    rate, _ = unk_rate(plain.tokenizer, ds.train.tokens)
    assert rate > 0.2  # the tiny backbone knows about half of the characters
    ext = build_teacher(ds.labels, ds.train.tokens, backbone=str(tiny_backbone))
    info = ext.meta["vocabulary"]
    assert info["added"] > 0 and info["unk_rate_after"] < rate
    assert ext.encoder.get_input_embeddings().weight.shape[0] == len(ext.tokenizer)


def test_first_subtoken_alignment_and_unknown_words(tiny_backbone):
    labels = ["O", "B-PER", "I-PER"]
    model = build_teacher(labels, [["the"]], backbone=str(tiny_backbone), extend_vocab=False)
    words = model.encode_words([["germans", "said", "\u200b", "zzz"]])[0]
    assert len(words) == 4
    assert all(len(w) >= 1 for w in words)
    assert len(words[0]) > 1  # "germans" -> german ##s
    feature = model.build_feature(words)
    ids = feature["input_ids"]
    assert ids[0] == model.tokenizer.cls_token_id and ids[-1] == model.tokenizer.sep_token_id
    # each word index points at that word's first sub-token
    for w, i in zip(words, feature["word_index"]):
        assert ids[i] == w[0]


def test_emissions_are_word_level_and_masked(tiny_teacher):
    model = load_model(tiny_teacher)
    pieces = make_pieces(model, [list("北京欢迎你"), list("好")])
    batch = model.collate([p.feature for p in pieces])
    out = model(batch)
    assert out.emissions.shape == (2, 5, len(model.labels))
    assert out.mask.tolist() == [[True] * 5, [True] + [False] * 4]
    tags = model.decode(out)
    assert (tags[1, 1:] == -1).all()


def test_save_load_round_trip_gives_identical_predictions(tiny_teacher, tiny_dataset_kwargs, tmp_path):
    model = load_model(tiny_teacher)
    ds = load_dataset(**tiny_dataset_kwargs)
    before = predict_tags(model, ds.test.tokens)
    model.save(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    assert predict_tags(again, ds.test.tokens) == before
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_long_sentences_are_split_and_merged(tiny_teacher):
    model = load_model(tiny_teacher)
    sentence = list("今天天气很好，我们去公园玩。" * 40)  # 560 characters, model limit 126
    assert len(sentence) > model.max_length
    tags = predict_tags(model, [sentence, list("你好")])
    assert [len(t) for t in tags] == [len(sentence), 2]
    pieces = make_pieces(model, [sentence])
    assert len(pieces) > 1 and all(p.n_words <= model.max_length for p in pieces)


@pytest.mark.parametrize("head", ["softmax", "bilstm-crf"])
def test_other_heads_train_and_reload(tiny_backbone, tiny_dataset_kwargs, tmp_path, head):
    from distill.train import TrainConfig
    from teachers.train import TeacherConfig, train_teacher

    out = tmp_path / head
    train_teacher(out=out, dataset=tiny_dataset_kwargs, config=TeacherConfig(backbone=str(tiny_backbone), head=head),
                  train_config=TrainConfig(epochs=1, batch_size=8, max_steps=2, checkpoint_minutes=0), quiet=True)
    model = load_model(out)
    assert model.head == head and (model.crf is None) == (head == "softmax")
    assert len(predict_tags(model, [list("北京")])[0]) == 2


def test_cli_train_eval_predict_on_msra_format(tiny_backbone, tiny_dataset_kwargs, tmp_path, half_right):
    out = tmp_path / "t"
    data = ["--train", str(tiny_dataset_kwargs["train"]), "--test", str(tiny_dataset_kwargs["test"]), "--format", "msra"]
    r = runner.invoke(app, ["teacher", "train", "--out", str(out), "--backbone", str(tiny_backbone), "--epochs", "1",
                            "--batch-size", "8", *data])
    assert r.exit_code == 0, r.output
    assert (out / "model.safetensors").exists() and (out / "train_log.jsonl").exists()
    info = json.loads((out / "distill.json").read_text())
    assert info["kind"] == "bert-crf" and info["meta"]["scheme"] == "BMES" and info["meta"]["char_level"]
    with half_right() as f1:  # scored on hand-made predictions of a known F1
        r = runner.invoke(app, ["teacher", "eval", str(out), *data])
    assert r.exit_code == 0, r.output
    assert "micro" in r.output and "PER" in r.output
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["f1"] == pytest.approx(f1) and metrics["precision"] == 1.0 and metrics["sentences"] == 20
    r = runner.invoke(app, ["predict", str(out), "张三在北京"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == list("张三在北京")
    # predictions come back in the input's scheme (BMES)
    assert {l.split("\t")[1][0] for l in lines} <= set("OBMES")


def test_cli_on_a_conll_file_writes_bio_and_json(tiny_backbone, resources, tmp_path):
    out = tmp_path / "en"
    conll = str(resources / "tiny.conll")
    r = runner.invoke(app, ["teacher", "train", "--out", str(out), "--backbone", str(tiny_backbone), "--epochs", "1",
                            "--batch-size", "2", "--train", conll, "--dev", conll, "--test", conll])
    assert r.exit_code == 0, r.output
    assert not json.loads((out / "distill.json").read_text())["meta"]["char_level"]
    r = runner.invoke(app, ["predict", str(out), "Peter lives in Brussels", "--output-format", "json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert obj["tokens"] == ["Peter", "lives", "in", "Brussels"] and len(obj["tags"]) == 4
    pred = tmp_path / "pred.conll"
    r = runner.invoke(app, ["predict", str(out), "--input", conll, "--labelled", "--out", str(pred)])
    assert r.exit_code == 0, r.output
    assert read_conll(pred).tokens == read_conll(conll).tokens


def test_emit_writes_checked_emissions(tiny_teacher, tiny_dataset_kwargs, tmp_path):
    folder = emit(model=tiny_teacher, dataset=tiny_dataset_kwargs, out=tmp_path / "em", quiet=True)
    em = Emissions(folder)
    ds = load_dataset(**tiny_dataset_kwargs)
    em.check(ds.train, ds.labels)
    assert len(em) == len(ds.train)
    assert em[0].dtype == np.float16 and em[0].shape == (len(ds.train.tokens[0]), len(ds.labels))
    model = load_model(tiny_teacher)
    pieces = make_pieces(model, ds.train.tokens[:1])
    direct = model(model.collate([pieces[0].feature])).emissions[0].detach().numpy()
    assert np.abs(direct - em[0].astype(np.float32)).max() < 1e-2
    assert em.meta["transitions"]["transitions"] == model.crf.transitions.tolist()
    other = load_dataset(**dict(tiny_dataset_kwargs, max_train=5))
    with pytest.raises(DistillError, match="emissions were made for"):
        em.check(other.train, ds.labels)
    with pytest.raises(DistillError, match="emissions are for labels"):
        em.check(ds.train, ds.labels[:-2])


def test_user_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("Paris B-LOC\nis X-FOO\n")
    r = subprocess.run([sys.executable, "-m", "distill", "teacher", "train", "--train", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: {bad}:2: tag 'X-FOO' fits no scheme: expected 'O' or a prefix B/I/E/S/M, then '-' or '_', then a type (e.g. 'B-LOC')"
    assert not (tmp_path / "o").exists()
    r = subprocess.run([sys.executable, "-m", "distill", "predict", str(tmp_path), "hello"], capture_output=True, text=True)
    assert r.returncode == 1 and "not a distill model folder" in r.stderr and "Traceback" not in r.stderr


def test_weights_that_are_views_of_one_buffer_are_saved_and_load_back(tmp_path):
    """On a GPU, cuDNN flattens an LSTM's weights into one buffer; safetensors' own
    save_model refuses such views (seen on an H100 saving a bilstm-crf head)."""
    from safetensors.torch import load_file, save_model

    from distill.modeling import save_weights

    flat = torch.randn(12)
    module = torch.nn.Module()
    module.a = torch.nn.Parameter(flat[:6].view(2, 3))
    module.b = torch.nn.Parameter(flat[6:].view(3, 2))
    with pytest.raises(RuntimeError):
        save_model(module, str(tmp_path / "refused.safetensors"))
    save_weights(module, tmp_path / "model.safetensors")
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert torch.equal(loaded["a"], flat[:6].view(2, 3)) and torch.equal(loaded["b"], flat[6:].view(3, 2))
