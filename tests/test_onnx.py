"""ONNX export with the CRF inside: a bare ``onnxruntime.InferenceSession`` (no distill
code) decodes random padded batches exactly as PyTorch does; the in-graph Viterbi
equals ``CRF.decode``; the folder works through ``load_model``; the export check fails
loudly on a mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.crf import CRF
from distill.errors import DistillError
from distill.modeling import load_model

ort = pytest.importorskip("onnxruntime")


def _decisive_teacher(tiny_teacher: Path, folder: Path) -> Path:
    """The tiny teacher with scaled-up emissions and random transitions, so Viterbi
    paths vary (the barely trained teacher tags nearly everything "O")."""
    model = load_model(tiny_teacher)
    torch.manual_seed(3)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1)
        model.classifier.bias.normal_(0, 1)
        model.crf.transitions.normal_(0, 1)
    return model.save(folder)


@pytest.fixture(scope="module")
def bert_source(tiny_teacher, tmp_path_factory) -> Path:
    return _decisive_teacher(tiny_teacher, tmp_path_factory.mktemp("onnx-src") / "teacher")


@pytest.fixture(scope="module")
def bert_onnx(bert_source, tmp_path_factory) -> Path:
    from quantize.api import quantize

    return quantize(method="onnx", model=bert_source, out=tmp_path_factory.mktemp("onnx") / "teacher-onnx", quiet=True)


@pytest.fixture(scope="module")
def bilstm_source(tmp_path_factory, tiny_dataset_kwargs) -> Path:
    from test_quantize import make_tiny_bilstm

    return make_tiny_bilstm(tmp_path_factory.mktemp("onnx-bilstm") / "bilstm", tiny_dataset_kwargs)


def _random_lengths(rng, batch: int, longest: int) -> list[int]:
    lengths = list(rng.integers(1, longest + 1, size=batch))
    lengths[0], lengths[-1] = longest, 1  # the longest sets the padding; one-word sentences too
    return [int(n) for n in lengths]


def test_viterbi_scan_equals_crf_decode():
    from distill.schemes import allowed_transitions
    from quantize.onnx_graph import viterbi

    torch.manual_seed(0)
    crf = CRF(5)
    with torch.no_grad():
        crf.transitions.normal_(0, 2)
    for B, T in [(1, 1), (3, 1), (4, 2), (6, 9), (2, 17)]:
        emissions = torch.randn(B, T, 5) * 2
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        mask = torch.arange(T)[None] < lengths[:, None]
        assert torch.equal(viterbi(crf, emissions, mask), crf.decode(emissions, mask))
        allowed = allowed_transitions(["O", "B-A", "I-A", "B-B", "I-B"])
        assert torch.equal(viterbi(crf, emissions, mask, allowed), crf.decode(emissions, mask, allowed=allowed))


def test_bare_session_decodes_random_padded_bert_batches_like_pytorch(bert_source, bert_onnx):
    source = load_model(bert_source)
    session = ort.InferenceSession(str(bert_onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "word_index", "word_mask"]
    assert [o.name for o in session.get_outputs()] == ["emissions", "tags"]
    rng = np.random.default_rng(0)
    vocab = source.encoder.config.vocab_size
    worst, distinct = 0.0, set()
    for B, longest in [(5, 12), (3, 30), (1, 1), (8, 7)]:
        lengths = _random_lengths(rng, B, longest)
        # words of one or two sub-tokens, [CLS] first and [SEP] last, as BertTagger.collate lays them out
        features = []
        for n in lengths:
            words = [list(rng.integers(5, vocab, size=int(rng.integers(1, 3)))) for _ in range(n)]
            features.append(source.build_feature([[int(i) for i in w] for w in words]))
        batch = source.collate(features)
        feed = {k: batch[k].numpy() for k in ("input_ids", "attention_mask", "word_index", "word_mask")}
        emissions, tags = session.run(None, feed)
        with torch.no_grad():
            out = source(batch)
        mask = out.mask
        worst = max(worst, float((torch.from_numpy(emissions) - out.emissions).abs()[mask].max()))
        expected = source.decode(out)
        assert np.array_equal(tags, expected.numpy()), (lengths, tags, expected)
        assert (tags[~mask.numpy()] == -1).all()
        distinct.update(tags[mask.numpy()].tolist())
    assert worst < 1e-4
    assert len(distinct) >= 3  # decoding is not trivially constant


def test_onnx_folder_predicts_like_the_pytorch_model(bert_source, bert_onnx, tiny_dataset_kwargs):
    from distill.data import load_dataset
    from distill.evaluate import predict_tags

    info = json.loads((bert_onnx / "distill.json").read_text())
    assert info["kind"] == "onnx" and info["meta"]["source_kind"] == "bert-crf"
    check = info["meta"]["check"]
    assert check["tag_agreement"] == 1.0 and check["max_abs_diff"] <= check["tolerance"] == 1e-3
    assert {"model.onnx", "tokenizer.json", "config.json"} <= {p.name for p in bert_onnx.iterdir()}
    assert not (bert_onnx / "model.safetensors").exists()

    model = load_model(bert_onnx)
    assert model.kind == "onnx" and model.meta["char_level"] is True
    sentences = load_dataset(**tiny_dataset_kwargs).test.tokens
    assert predict_tags(model, sentences, batch_size=7) == predict_tags(load_model(bert_source), sentences, batch_size=7)


def test_export_check_fails_loudly_on_a_mismatch(bert_source, bert_onnx, tiny_dataset_kwargs):
    from distill.data import load_dataset
    from quantize.onnx_export import check_export
    from quantize.onnx_session import make_session

    source = load_model(bert_source)
    with torch.no_grad():
        source.classifier.bias[2] += 0.5  # PyTorch now differs from the exported graph
    sentences = load_dataset(**tiny_dataset_kwargs).dev.tokens
    with pytest.raises(DistillError, match=r"ONNX check failed: emissions differ from PyTorch by 5\.0+e-01"):
        check_export(source, make_session(bert_onnx / "model.onnx", "cpu"), sentences, exact=True)


def test_bilstm_export_handles_padding_and_int8(bilstm_source, tmp_path):
    """Two-layer BiLSTM: each layer is one ONNX LSTM with sequence_lens, so the backward
    direction starts at each sentence's last word as packing does."""
    import onnx

    from quantize.api import quantize

    source = load_model(bilstm_source)
    out = quantize(method="onnx", model=bilstm_source, out=tmp_path / "onnx", quiet=True)
    graph = onnx.load(str(out / "model.onnx")).graph
    assert sum(n.op_type == "LSTM" for n in graph.node) == 2
    assert any(n.op_type in ("Scan", "Loop") for n in graph.node)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for B, longest in [(6, 15), (2, 1), (4, 40)]:
        lengths = _random_lengths(rng, B, longest)
        batch = source.collate([source.build_feature([[int(rng.integers(0, len(source.vocab)))] for _ in range(n)])
                                for n in lengths])
        emissions, tags = session.run(None, {"input_ids": batch["input_ids"].numpy(), "word_mask": batch["word_mask"].numpy()})
        with torch.no_grad():
            ref = source(batch)
        mask = ref.mask
        assert float((torch.from_numpy(emissions) - ref.emissions).abs()[mask].max()) < 1e-4
        assert np.array_equal(tags, source.decode(ref).numpy())

    q = quantize(method="onnx-int8", model=bilstm_source, out=tmp_path / "onnx-int8", quiet=True)
    ops = {n.op_type for n in onnx.load(str(q / "model.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    meta = json.loads((q / "distill.json").read_text())["meta"]
    assert meta["check_fp32"]["tag_agreement"] == 1.0
    assert meta["check"]["max_abs_diff"] < 0.5 and meta["check"]["tag_agreement"] > 0.9
    assert (q / "model.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    assert not (q / "model.fp32.onnx").exists()
    assert [len(t) for t in load_model(q).decode_batch(batch)] == lengths


@pytest.fixture(scope="module")
def bilstm_onnx_int8(bilstm_source, tmp_path_factory) -> Path:
    from quantize.api import quantize

    return quantize(method="onnx-int8", model=bilstm_source, out=tmp_path_factory.mktemp("onnx-int8") / "bilstm",
                    quiet=True)


def _load_onnx(folder: Path, host_decoding: bool, monkeypatch):
    """The folder's OnnxTagger, its graph decoded in NumPy (BERT graphs too, which
    load_model runs whole) or whole."""
    from distill.modeling import read_meta
    from quantize import onnx_session

    monkeypatch.setattr(onnx_session, "HOST_DECODING_KINDS", ("bilstm-crf", "bert-crf"))
    return onnx_session.OnnxTagger.load(folder, read_meta(folder), "cpu", host_decoding=host_decoding)


@pytest.mark.parametrize("which", ["bilstm-int8", "bert"])
def test_host_decoding_gives_the_graph_own_tags(which, bilstm_onnx_int8, bert_onnx, monkeypatch):
    """The graph cut to its emissions and decoded in NumPy (GraphDecoder) gives the whole
    graph's emissions and tags bit for bit, on random padded batches and single sentences."""
    folder = bilstm_onnx_int8 if which == "bilstm-int8" else bert_onnx
    fast, whole = _load_onnx(folder, True, monkeypatch), _load_onnx(folder, False, monkeypatch)
    assert fast.decoder is not None and whole.decoder is None
    assert [o.name for o in fast.session.get_outputs()] == ["emissions"]  # the Scan loops are cut away
    featurizer = fast.featurizer
    vocab = len(featurizer.vocab) if which == "bilstm-int8" else featurizer.encoder.config.vocab_size
    rng = np.random.default_rng(2)
    distinct = set()
    for B, longest in [(6, 15), (1, 1), (1, 23), (4, 40), (9, 3)]:
        lengths = _random_lengths(rng, B, longest) if B > 1 else [longest]
        words = [[[int(rng.integers(2, vocab))] for _ in range(n)] for n in lengths]
        batch = featurizer.collate([featurizer.build_feature(w) for w in words])
        (e1, t1), (e2, t2) = fast.run(batch), whole.run(batch)
        assert np.array_equal(e1, e2) and np.array_equal(t1, t2), (B, lengths)
        assert fast.decode_batch(batch) == whole.decode_batch(batch)
        distinct.update(t1[t1 >= 0].tolist())
    assert len(distinct) >= 2  # decoding is not trivially constant


def test_onnx_one_sentence_at_a_time_tags_as_a_batch_does(bilstm_onnx_int8, tiny_dataset_kwargs):
    """Through load_model (host decoding for a BiLSTM graph): the batch-1 path gives the
    tags of the bucketed batches, which are the whole graph's own."""
    from distill.data import load_dataset
    from distill.evaluate import predict_ids
    from distill.modeling import read_meta
    from quantize.onnx_session import OnnxTagger

    model = load_model(bilstm_onnx_int8)
    assert model.decoder is not None
    sentences = load_dataset(**tiny_dataset_kwargs).test.tokens
    batched = predict_ids(model, sentences, batch_size=8)
    assert [predict_ids(model, [s], batch_size=1)[0] for s in sentences] == batched
    whole = OnnxTagger.load(bilstm_onnx_int8, read_meta(bilstm_onnx_int8), "cpu", host_decoding=False)
    assert predict_ids(whole, sentences, batch_size=8) == batched


def test_graph_decoder_declines_a_graph_without_its_viterbi(bilstm_onnx_int8):
    import onnx

    from quantize.onnx_decode import GraphDecoder, emissions_graph

    model = onnx.load(str(bilstm_onnx_int8 / "model.onnx"))
    assert GraphDecoder.find(model) is not None
    assert GraphDecoder.find(onnx.load_from_string(emissions_graph(model))) is None
