"""The two students: BiLSTM-CRF (own vocabulary, packing, folders, teacher-initialised
embeddings) and the small BERT cut from the teacher's own layers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.data import load_dataset
from distill.errors import DistillError
from distill.evaluate import predict_tags
from distill.features import make_pieces
from distill.lstm import unpadded
from distill.modeling import load_model
from distill.train import make_optimizer
from students.bert_small import build_bert_small, check_layers, default_layers
from students.bilstm_crf import PAD, UNK, BiLSTMTagger, build_vocabulary
from distill.kd import KDConfig
from students.train import BertSmallConfig, BiLSTMCRFConfig, default_train_config, train_student

LABELS = ["O", "B-PER", "I-PER"]


def test_vocabulary_has_pad_unk_then_frequent_words():
    vocab = build_vocabulary([["a", "b", "a"], ["c", "a", "b"]], min_count=2)
    assert vocab == [PAD, UNK, "a", "b"]
    assert build_vocabulary([["a", "b", "a"]], min_count=1) == [PAD, UNK, "a", "b"]
    with pytest.raises(DistillError, match="min_count"):
        build_vocabulary([["a"]], min_count=0)


def test_bilstm_features_map_unknown_words_to_unk():
    model = BiLSTMTagger([PAD, UNK, "北", "京"], LABELS)
    assert model.encode_words([["北", "京", "沪"]]) == [[[2], [3], [1]]]
    batch = model.collate([{"input_ids": [2, 3, 1], "tags": [1, 2, 0]}, {"input_ids": [3]}])
    assert batch["input_ids"].tolist() == [[2, 3, 1], [3, 0, 0]]
    assert batch["word_mask"].tolist() == [[True] * 3, [True, False, False]]
    assert batch["tags"].tolist() == [[1, 2, 0], [0, 0, 0]]


def test_bilstm_emissions_do_not_depend_on_padding():
    torch.manual_seed(0)
    model = BiLSTMTagger([PAD, UNK] + list("abcdefg"), LABELS, embedding_dim=8, hidden_size=6, lstm_layers=2).eval()
    short, long = [list("abc")], [list("gfedcba")]
    alone = model(model.collate([p.feature for p in make_pieces(model, short)])).emissions[0]
    pieces = make_pieces(model, short + long)
    together = model(model.collate([p.feature for p in pieces]))
    assert together.mask.tolist()[0] == [True] * 3 + [False] * 4
    # the backward LSTM starts at each sentence's own last word, not at the padding
    assert torch.allclose(alone, together.emissions[0, :3], atol=1e-6)


def test_bilstm_training_forward_reads_padding_as_the_packed_eval_forward_does():
    torch.manual_seed(0)
    model = BiLSTMTagger([PAD, UNK] + list("abcdefg"), LABELS, embedding_dim=8, hidden_size=6, lstm_layers=2,
                         dropout=0.0)
    batch = model.collate([p.feature for p in make_pieces(model, [list("abc"), list("gfedcba")])])
    trained = model.train()(batch)  # distill.lstm.padded_bilstm
    evaluated = model.eval()(batch)  # packed
    torch.testing.assert_close(trained.emissions[0, :3], evaluated.emissions[0, :3])
    torch.testing.assert_close(trained.emissions[1], evaluated.emissions[1])



def _decisive_bilstm(lstm_layers: int) -> BiLSTMTagger:
    """A random BiLSTM-CRF whose emissions and transitions vary enough that its paths do."""
    torch.manual_seed(lstm_layers)
    model = BiLSTMTagger([PAD, UNK] + list("abcdefghij"), LABELS, embedding_dim=8, hidden_size=6,
                         lstm_layers=lstm_layers).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(10)
        model.crf.transitions.normal_(0, 1)
    return model


@pytest.mark.parametrize("lstm_layers", [1, 2])
def test_bilstm_one_sentence_at_a_time_tags_as_a_batch_does(lstm_layers):
    """The batch-1 path (no padding, the LSTM kernel called directly, one-sentence
    Viterbi, no bucketing) gives the tags of the padded, packed, bucketed batch path."""
    from distill.evaluate import predict_ids

    model = _decisive_bilstm(lstm_layers)
    rng = np.random.default_rng(lstm_layers)
    sentences = [list(rng.choice(list("abcdefghijxyz"), size=int(n))) for n in rng.integers(1, 30, size=40)]
    batched = predict_ids(model, sentences, batch_size=16)
    assert [predict_ids(model, [s], batch_size=1)[0] for s in sentences] == batched
    assert len({t for row in batched for t in row}) == len(LABELS)  # every tag occurs: the paths vary
    with torch.no_grad():  # outside inference mode too, as training's dev scoring calls it
        assert model.decode_batch(model.collate([make_pieces(model, sentences[:1])[0].feature])) == batched[:1]


@pytest.mark.parametrize("lstm_layers", [1, 2])
def test_bilstm_lstm_kernel_called_directly_is_the_module(lstm_layers):
    model = _decisive_bilstm(lstm_layers)
    words = torch.randn(3, 9, 8)
    with torch.inference_mode():
        assert torch.equal(unpadded(model.lstm, words), model.lstm(words)[0])
    model.train()  # training goes through the module (dropout between layers, autograd)
    torch.manual_seed(0)
    first = unpadded(model.lstm, words)
    torch.manual_seed(0)
    assert torch.equal(first, model.lstm(words)[0])


def test_bilstm_collate_of_one_sentence():
    model = BiLSTMTagger([PAD, UNK, "北", "京"], LABELS)
    alone = model.collate([{"input_ids": [2, 3, 1]}])
    assert {k: (v.dtype, v.tolist()) for k, v in alone.items()} == {
        "input_ids": (torch.int64, [[2, 3, 1]]), "word_mask": (torch.bool, [[True] * 3]),
        "tags": (torch.int64, [[0, 0, 0]])}
    assert model.collate([{"input_ids": [2, 3], "tags": [1, 2]}])["tags"].tolist() == [[1, 2]]

def test_bilstm_pieces_are_at_most_max_length_words():
    model = BiLSTMTagger([PAD, UNK, "a"], LABELS, max_length=4)
    pieces = make_pieces(model, [["a"] * 10])
    assert [p.n_words for p in pieces] == [4, 4, 2]


def test_bilstm_bad_sizes_are_refused():
    with pytest.raises(DistillError, match="even"):
        BiLSTMTagger([PAD, UNK], LABELS, hidden_size=7)
    with pytest.raises(DistillError, match="dropout"):
        BiLSTMTagger([PAD, UNK], LABELS, dropout=1.0)


def test_bilstm_parameter_groups_and_learning_rates():
    model = BiLSTMTagger([PAD, UNK, "a"], LABELS, lstm_layers=2)
    groups = {name: model.param_group_of(name) for name, _ in model.named_parameters()}
    assert groups["embedding.weight"] == "embeddings"
    assert groups["classifier.weight"] == "head" and groups["crf.transitions"] == "crf"
    assert all(g == "encoder" for n, g in groups.items() if n.startswith("lstm."))
    assert set(groups.values()) == {"embeddings", "encoder", "head", "crf"}
    opt = make_optimizer(model, default_train_config("bilstm-crf"))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"embeddings": 2e-3, "encoder": 2e-3, "head": 2e-3, "crf": 1e-2}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_bilstm_init_embeddings_from_teacher(tiny_teacher):
    teacher = load_model(tiny_teacher)
    table = teacher.encoder.get_input_embeddings().weight
    ds_words = ["the", "said", "german", "zzzz-not-a-token"]  # three whole tokens of the tiny vocabulary
    vocab = [PAD, UNK] + ds_words
    # same size: rows are copied
    copy = BiLSTMTagger(vocab, teacher.labels, embedding_dim=table.shape[1])
    info = copy.init_embeddings_from(teacher.tokenizer, table)
    ids = teacher.tokenizer.convert_tokens_to_ids(ds_words[:3])
    known = [i for i, t in enumerate(ids) if t != teacher.tokenizer.unk_token_id]
    assert info["matched"] == len(known) == 3
    for i in known:
        assert torch.equal(copy.embedding.weight[i + 2], table[ids[i]])
    assert copy.embedding.weight[0].abs().sum() == 0  # [PAD] stays zero
    # smaller: a PCA projection; 3 points span a plane, so 2 components keep their distances
    small = BiLSTMTagger(vocab, teacher.labels, embedding_dim=2)
    assert small.init_embeddings_from(teacher.tokenizer, table)["projection"] == "pca"
    for i in known:
        for j in known:
            want = torch.dist(table[ids[i]], table[ids[j]]).item()
            assert torch.dist(small.embedding.weight[i + 2], small.embedding.weight[j + 2]).item() == pytest.approx(want, abs=1e-4)
    with pytest.raises(DistillError, match="larger than the teacher"):
        BiLSTMTagger(vocab, teacher.labels, embedding_dim=table.shape[1] + 1).init_embeddings_from(teacher.tokenizer, table)


def test_bilstm_student_saves_its_own_vocabulary_and_needs_no_teacher(tmp_path, tiny_dataset_kwargs, tiny_teacher):
    cfg = default_train_config("bilstm-crf", epochs=1, batch_size=8, max_steps=3, checkpoint_minutes=0)
    out = tmp_path / "student"
    train_student(out=out, teacher=tiny_teacher, kd=KDConfig(alpha=0.5), dataset=tiny_dataset_kwargs, train_config=cfg,
                  emissions=tmp_path / "em", student=BiLSTMCRFConfig(init_embeddings=True, embedding_dim=16), quiet=True)
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "distill.json", "vocab.json"} <= files
    assert not any("tokenizer" in f or f == "vocab.txt" for f in files)
    info = json.loads((out / "distill.json").read_text())
    meta = info["meta"]
    assert info["kind"] == "bilstm-crf" and meta["role"] == "student" and meta["teacher"] == str(tiny_teacher)
    assert meta["char_level"] is True and meta["dataset_fingerprint"] == load_dataset(**tiny_dataset_kwargs).fingerprint()
    assert meta["embedding_init"]["matched"] > 0
    assert meta["params"]["dataset"]["train"] == str(tiny_dataset_kwargs["train"])
    assert meta["params"]["alpha"] == 0.5 and meta["params"]["embedding_dim"] == 16
    json.dumps(meta["params"])

    model = load_model(out)
    ds = load_dataset(**tiny_dataset_kwargs)
    again = load_model(out)
    assert predict_tags(model, ds.test.tokens) == predict_tags(again, ds.test.tokens)
    pieces = make_pieces(model, ds.test.tokens[:4])
    batch = model.collate([p.feature for p in pieces])
    assert np.array_equal(model(batch).emissions.detach().numpy(), again(batch).emissions.detach().numpy())


# --- bert-small ------------------------------------------------------------------


def test_default_layers_are_the_first_for_taggers_and_evenly_spaced_for_classifiers():
    assert default_layers(12, 3) == [0, 1, 2]
    assert default_layers(6, 3, "spread") == [0, 2, 4]
    assert default_layers(12, 4, "spread") == [0, 3, 6, 9]
    assert default_layers(2, 2, "spread") == [0, 1]
    with pytest.raises(ValueError, match="placement must be one of first, spread"):
        default_layers(12, 3, "top")
    assert check_layers(6, 2, [1, 5]) == [1, 5]
    for layers, num, message in (([0, 6], 2, "out of range"), ([2, 1], 2, "increasing"), ([0], 2, "names 1 layers")):
        with pytest.raises(DistillError, match=message):
            check_layers(6, num, layers)
    with pytest.raises(DistillError, match="1..6"):
        check_layers(6, 7, None)


@pytest.fixture(scope="module")
def six_layer_teacher(tmp_path_factory, tiny_dataset_kwargs):
    """An untrained 6-layer tiny BERT-CRF (distinct random weights per layer)."""
    from conftest import make_tiny_backbone
    from teachers.bert_crf import build_teacher

    ds = load_dataset(**tiny_dataset_kwargs)
    chars = "".join(sorted({c for s in ds.train.tokens for c in s}))
    backbone = make_tiny_backbone(tmp_path_factory.mktemp("six"), chars, layers=6)
    return build_teacher(ds.labels, ds.train.tokens, backbone=str(backbone))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bert_small_copies_the_chosen_teacher_layers(six_layer_teacher):
    teacher = six_layer_teacher
    student = build_bert_small(teacher, num_layers=3)
    assert student.encoder.config.num_hidden_layers == 3 and teacher.encoder.config.num_hidden_layers == 6
    assert student.meta["layers"] == [0, 1, 2]  # the first layers by default
    for i in range(3):
        assert _same(student.encoder.encoder.layer[i], teacher.encoder.encoder.layer[i])
    assert _same(student.encoder.embeddings, teacher.encoder.embeddings)
    assert _same(student.classifier, teacher.classifier) and _same(student.crf, teacher.crf)
    assert student.encoder.config.hidden_size == teacher.encoder.config.hidden_size
    chosen = build_bert_small(teacher, num_layers=2, layers=[1, 5])
    assert _same(chosen.encoder.encoder.layer[1], teacher.encoder.encoder.layer[5])
    assert not _same(chosen.encoder.encoder.layer[1], teacher.encoder.encoder.layer[1])


def test_bert_small_with_all_layers_is_the_teacher(tiny_teacher):
    teacher = load_model(tiny_teacher)
    student = build_bert_small(teacher, num_layers=2).eval()
    assert student.meta["layers"] == [0, 1]
    pieces = make_pieces(teacher, [list("北京欢迎你"), list("好的")])
    batch = teacher.collate([p.feature for p in pieces])
    assert torch.allclose(student(batch).emissions, teacher(batch).emissions, atol=1e-5)


def test_hidden_matching_is_zero_for_a_copy_and_positive_for_a_cut(tiny_teacher, six_layer_teacher):
    from distill.kd import DistillationLoss, KDConfig, hidden_layer_pairs

    cfg = KDConfig(alpha=1.0, hidden_weight=1.0)
    for teacher, n, zero in ((load_model(tiny_teacher), 2, True), (six_layer_teacher.eval(), 3, False)):
        student = build_bert_small(teacher, num_layers=n).eval()
        pieces = make_pieces(teacher, [list("北京欢迎你"), list("好的")], [[0] * 5, [0] * 2])
        batch = teacher.collate([p.feature for p in pieces])
        out = student(batch, output_hidden_states=True)
        loss_fn = DistillationLoss(cfg, teacher=teacher, layer_pairs=hidden_layer_pairs(student.meta["layers"], teacher.encoder.config.num_hidden_layers))
        _, parts = loss_fn(student, out, batch)
        assert (parts["hidden"] < 1e-9) == zero


def test_bert_small_trains_saves_and_loads_as_bert_crf(tmp_path, tiny_dataset_kwargs, tiny_teacher):
    cfg = default_train_config("bert-small", epochs=1, batch_size=8, max_steps=2, checkpoint_minutes=0)
    out = tmp_path / "small"
    train_student(out=out, teacher=tiny_teacher, student=BertSmallConfig(num_layers=1, layers=[1]),
                  kd=KDConfig(alpha=0.5, kd="both", hidden_weight=0.5), emissions=tmp_path / "em",
                  dataset=tiny_dataset_kwargs, train_config=cfg, quiet=True)
    info = json.loads((out / "distill.json").read_text())
    assert info["kind"] == "bert-crf" and info["config"]["num_layers"] == 1
    assert info["meta"]["role"] == "student" and info["meta"]["layers"] == [1]
    model = load_model(out)
    assert type(model).__name__ == "BertTagger" and model.encoder.config.num_hidden_layers == 1
    ds = load_dataset(**tiny_dataset_kwargs)
    tags = predict_tags(model, ds.test.tokens)
    assert [len(t) for t in tags] == [len(s) for s in ds.test.tokens]
