"""Compressing text classifiers through the taggers' commands: int8, fp16, bnb8, ONNX and
ONNX int8 folders of a tiny bert-cls and a tiny bilstm-cls load through ``load_model``,
predict with ``predict_proba`` and agree with the fp32 source (the measured label
agreement and probability difference are asserted); the ONNX file runs in a bare
onnxruntime session; magnitude and head pruning of a bert-cls."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.classify import predict_proba
from distill.errors import DistillError
from distill.modeling import load_model
from quantize.api import quantize

LABELS = ["neg", "neu", "pos"]
LETTERS = {"neg": "abcdefgh", "neu": "ijklmnop", "pos": "qrstuvwx"}


def texts_of(n: int, seed: int) -> list[tuple[str, str]]:
    """(text, label): 1 to 9 words of 1 to 5 letters, drawn mostly from the label's letters."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        pool = LETTERS[label] * 3 + "yz0123"
        words = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 9))]
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> dict:
    """A ``load_text_dataset`` dict of a tiny 3-class TSV corpus (30 train, 48 dev texts)."""
    folder = tmp_path_factory.mktemp("cls-data")
    for name, n, seed in (("train", 30, 1), ("dev", 48, 2)):
        (folder / f"{name}.tsv").write_text("".join(f"{t}\t{l}\n" for t, l in texts_of(n, seed)), encoding="utf-8")
    return {"train": str(folder / "train.tsv"), "dev": str(folder / "dev.tsv"), "task": "classify"}


@pytest.fixture(scope="module")
def dev_texts(text_data) -> list[str]:
    from distill.textdata import load_text_dataset

    return load_text_dataset(text_data).dev.texts


def _fit(model, text_data: dict, steps: int = 25):
    """A few full-batch Adam steps of cross-entropy on the 30 training texts (well under a
    second), so the tiny model gives varied labels and agreement below means something."""
    from distill.textdata import load_text_dataset

    train = load_text_dataset(text_data).train
    batch = model.collate(model.encode(train.texts))
    labels = torch.tensor([LABELS.index(l) for l in train.labels])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(model(batch), labels).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def bert_cls(tmp_path_factory, tiny_backbone, text_data) -> Path:
    from teachers.bert_classifier import BertClassifier

    torch.manual_seed(0)
    model = BertClassifier.from_backbone(str(tiny_backbone), LABELS, max_length=24,
                                         meta={"params": {"task": "classify", "dataset": text_data}})
    return _fit(model, text_data).save(tmp_path_factory.mktemp("bert-cls") / "model")


@pytest.fixture(scope="module")
def bilstm_cls(tmp_path_factory, text_data) -> Path:
    from distill.textdata import load_text_dataset
    from students.bilstm_classifier import BiLSTMClassifier

    torch.manual_seed(0)
    model = BiLSTMClassifier.from_texts(load_text_dataset(text_data).train.texts, LABELS, embedding_dim=16,
                                        hidden_size=16, lstm_layers=2, char_level=True,
                                        meta={"params": {"task": "classify", "dataset": text_data}})
    return _fit(model, text_data).save(tmp_path_factory.mktemp("bilstm-cls") / "model")


@pytest.fixture(params=["bert", "bilstm"])
def source(request, bert_cls, bilstm_cls) -> Path:
    return {"bert": bert_cls, "bilstm": bilstm_cls}[request.param]


def _agreement(source: Path, other, texts) -> tuple[float, float]:
    """(share of identical labels, max abs probability diff) of ``predict_proba``."""
    p = predict_proba(load_model(source), texts)
    q = predict_proba(other, texts)
    assert q.shape == p.shape == (len(texts), len(LABELS))
    assert np.allclose(q.sum(1), 1, atol=1e-3)
    return float((p.argmax(1) == q.argmax(1)).mean()), float(np.abs(p - q).max())


def test_sources_give_varied_labels(source, dev_texts):
    """Agreement below means something: the tiny sources do not give one label to everything."""
    labels = predict_proba(load_model(source), dev_texts).argmax(1)
    assert len(set(labels.tolist())) >= 2


# --- torch int8, fp16, bnb8 ------------------------------------------------------------


def test_int8_folder_loads_predicts_and_agrees(source, dev_texts, tmp_path):
    import torch.ao.nn.quantized.dynamic as nnqd

    out = quantize(method="int8", model=source, out=tmp_path / "int8", quiet=True)
    assert not (out / "model.safetensors").exists()  # int8 weights only
    info = json.loads((out / "distill.json").read_text())
    assert info["kind"] == "torch-int8" and info["meta"]["task"] == "classify"
    check = info["meta"]["check"]
    assert check["texts"] == len(dev_texts)
    assert check["label_agreement"] >= 0.95 and check["max_prob_diff"] < 0.05

    model = load_model(out)
    assert any(isinstance(m, nnqd.Linear) for m in model.modules())
    if "bilstm" in str(source):
        assert any(isinstance(m, nnqd.LSTM) for m in model.modules())
    # activations are quantized per batch, so other batches (predict_proba's) differ a little
    agree, diff = _agreement(source, model, dev_texts)
    assert agree >= 0.95 and diff < 0.05


def test_fp16_on_cpu(source, dev_texts, tmp_path):
    out = quantize(method="fp16", model=source, out=tmp_path / "fp16", device="cpu", quiet=True)
    model = load_model(out)
    assert model.kind == "fp16" and next(model.parameters()).dtype == torch.float16
    check = json.loads((out / "distill.json").read_text())["meta"]["check"]
    assert check["label_agreement"] >= 0.95 and check["max_prob_diff"] < 0.01
    agree, diff = _agreement(source, model, dev_texts)
    assert agree >= 0.95 and diff < 0.01


def test_bnb8_on_cpu(bert_cls, dev_texts, tmp_path):
    pytest.importorskip("bitsandbytes")
    out = quantize(method="bnb8", model=bert_cls, out=tmp_path / "bnb8", device="cpu", quiet=True)
    model = load_model(out)
    assert model.kind == "bnb8"
    check = json.loads((out / "distill.json").read_text())["meta"]["check"]
    assert check["label_agreement"] >= 0.9 and check["max_prob_diff"] < 0.1
    agree, _ = _agreement(bert_cls, model, dev_texts)
    assert agree >= 0.9


def test_a_compressed_classifier_is_not_compressed_again(bert_cls, tmp_path):
    out = quantize(method="int8", model=bert_cls, out=tmp_path / "int8", quiet=True, check=5)
    with pytest.raises(DistillError, match="already compressed"):
        quantize(method="int8", model=out, out=tmp_path / "again", quiet=True)


# --- ONNX ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_folders(bert_cls, bilstm_cls, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("cls-onnx")
    return {name: quantize(method="onnx", model=src, out=folder / name, quiet=True)
            for name, src in (("bert", bert_cls), ("bilstm", bilstm_cls))}


def _bare_inputs(folder: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask made with the folder's tokenizer alone (no distill code):
    a bert-cls's HF tokenizer ([CLS] head + tail [SEP] within the config's max_length), a
    char-level bilstm-cls's vocabulary (vocab.json, 1 = [UNK])."""
    vocab = folder / "vocab.json"
    if not vocab.exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        n = json.loads((folder / "distill.json").read_text())["config"]["max_length"]
        head, tail = n // 2, n - 2 - n // 2
        rows = [ids if len(ids) <= n - 2 else ids[:head] + ids[-tail:]
                for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        rows = [[tok.cls_token_id, *ids, tok.sep_token_id] for ids in rows]
    else:
        index = {w: i for i, w in enumerate(json.loads(vocab.read_text(encoding="utf-8")))}
        rows = [[index.get(c, 1) for c in t if not c.isspace()] or [1] for t in texts]
    S = max(len(r) for r in rows)
    ids = np.zeros((len(rows), S), dtype=np.int64)
    mask = np.zeros((len(rows), S), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("name", ["bert", "bilstm"])
def test_bare_session_classifies_like_pytorch(name, onnx_folders, bert_cls, bilstm_cls, dev_texts):
    """A plain InferenceSession on padded batches of mixed lengths (and one text alone)
    gives PyTorch's probabilities and labels; the class names are in the file."""
    ort = pytest.importorskip("onnxruntime")
    folder, src = onnx_folders[name], {"bert": bert_cls, "bilstm": bilstm_cls}[name]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "label"]
    labels = json.loads(session.get_modelmeta().custom_metadata_map["labels"])
    assert labels == LABELS

    reference = predict_proba(load_model(src), dev_texts)
    for chunk in (dev_texts[:16], dev_texts[16:], dev_texts[5:6]):
        feed = _bare_inputs(folder, chunk)
        assert feed["attention_mask"].min() == 0 or len(chunk) == 1  # really padded
        probabilities, label = session.run(None, feed)
        start = dev_texts.index(chunk[0])
        expected = reference[start : start + len(chunk)]
        assert float(np.abs(probabilities - expected).max()) < 1e-5
        assert label.tolist() == expected.argmax(1).tolist()
        assert [labels[i] for i in label] == [LABELS[i] for i in expected.argmax(1)]


@pytest.mark.parametrize("name", ["bert", "bilstm"])
def test_onnx_folder_predicts_like_the_source(name, onnx_folders, bert_cls, bilstm_cls, dev_texts):
    folder, src = onnx_folders[name], {"bert": bert_cls, "bilstm": bilstm_cls}[name]
    meta = json.loads((folder / "distill.json").read_text())["meta"]
    assert meta["check"]["label_agreement"] == 1.0 and meta["check"]["max_prob_diff"] <= meta["check"]["tolerance"]
    assert meta["outputs"] == ["probabilities", "label"]
    model = load_model(folder)
    assert model.kind == "onnx" and model.labels == LABELS
    agree, diff = _agreement(src, model, dev_texts)
    assert agree == 1.0 and diff < 1e-5


def test_onnx_check_fails_loudly_on_a_mismatch(onnx_folders, bert_cls, dev_texts):
    from quantize.classify import check_classifier_export
    from quantize.onnx_session import make_session

    source = load_model(bert_cls)
    with torch.no_grad():
        source.classifier.bias[2] += 3.0  # PyTorch now differs from the exported graph
    with pytest.raises(DistillError, match="ONNX check failed: probabilities differ from PyTorch by"):
        check_classifier_export(source, make_session(onnx_folders["bert"] / "model.onnx", "cpu"), dev_texts, exact=True)


def test_onnx_int8(source, dev_texts, tmp_path):
    import onnx

    out = quantize(method="onnx-int8", model=source, out=tmp_path / "onnx-int8", quiet=True)
    assert not (out / "model.fp32.onnx").exists()
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in ops if "bilstm" in str(source) else "MatMulInteger" in ops
    meta = json.loads((out / "distill.json").read_text())["meta"]
    assert meta["check_fp32"]["label_agreement"] == 1.0
    assert meta["check"]["label_agreement"] >= 0.9 and meta["check"]["max_prob_diff"] < 0.1
    agree, diff = _agreement(source, load_model(out), dev_texts)
    assert agree >= 0.9 and diff < 0.1


# --- pruning ---------------------------------------------------------------------------


def test_magnitude_pruning_of_a_bert_classifier(bert_cls, dev_texts, tmp_path):
    from quantize.prune import prune, sparsity_of

    out = prune(model=bert_cls, out=tmp_path / "mag", method="magnitude", sparsity=0.4, quiet=True)
    model = load_model(out)
    assert model.kind == "bert-cls" and model.meta["task"] == "classify"
    assert sparsity_of(model) == pytest.approx(0.4, abs=0.002)
    assert sparsity_of(load_model(bert_cls)) < 0.01
    assert predict_proba(model, dev_texts).shape == (len(dev_texts), 3)
    # and it compresses further, checked against the pruned model
    q = quantize(method="int8", model=out, out=tmp_path / "mag-int8", quiet=True)
    assert json.loads((q / "distill.json").read_text())["meta"]["check"]["label_agreement"] >= 0.9


def test_head_pruning_of_a_bert_classifier(bert_cls, dev_texts, tmp_path):
    from quantize.prune import prune

    source = load_model(bert_cls)
    H = source.encoder.config.num_attention_heads
    layers = source.encoder.config.num_hidden_layers
    out = prune(model=bert_cls, out=tmp_path / "heads", method="heads", sparsity=0.5, quiet=True)
    info = json.loads((out / "distill.json").read_text())["meta"]["pruning"]
    assert info["heads_before"] == H * layers and info["heads_removed"] == round(0.5 * H * layers)
    assert info["importance_sentences"] == len(dev_texts)
    for imp in info["importance"]:  # per-layer L2-normalised gate gradients of the cross-entropy
        assert np.linalg.norm(imp) == pytest.approx(1.0, abs=1e-4)
    pruned = load_model(out)
    assert pruned.kind == "bert-cls"
    assert sum(p.numel() for p in pruned.parameters()) == info["parameters_after"] < info["parameters_before"]
    for i, layer in enumerate(pruned.encoder.encoder.layer):
        kept = H - len(info["pruned_heads"].get(str(i), []))
        assert layer.attention.self.query.weight.shape[0] == kept * (source.encoder.config.hidden_size // H)
    p = predict_proba(pruned, dev_texts)
    assert np.isfinite(p).all() and not np.allclose(p, predict_proba(source, dev_texts))


def test_head_importance_is_the_gate_gradient_of_the_cross_entropy(bert_cls, dev_texts, text_data):
    """Scaling head h's output by (1 + eps) changes the summed loss by eps * dL/dxi_h."""
    from distill.textdata import load_text_dataset
    from quantize.classify import classifier_head_importance

    model = load_model(bert_cls)
    labels = load_text_dataset(text_data).dev.labels
    texts, labels = dev_texts[:12], labels[:12]
    importance = classifier_head_importance(model, texts, labels, batch_size=4)

    def total_loss(layer: int, head: int, scale: float) -> float:
        from distill.features import bucket_batches

        index = {l: i for i, l in enumerate(model.labels)}
        features = [dict(f, label=index[l]) for f, l in zip(model.encode(texts), labels)]
        attn = model.encoder.encoder.layer[layer].attention
        d = attn.self.attention_head_size
        gate = torch.ones(attn.self.num_attention_heads * d, dtype=torch.float64)
        gate[head * d : (head + 1) * d] = scale
        hook = attn.output.dense.register_forward_pre_hook(lambda m, a: (a[0] * gate.to(a[0].dtype),))
        try:
            with torch.no_grad():
                return [float(model.loss(model(b), b["labels"])) for b in
                        (model.collate([features[i] for i in idx]) for idx in bucket_batches(
                            [len(f["input_ids"]) for f in features], 4))]
        finally:
            hook.remove()

    eps = 1e-3
    raw = torch.tensor([[sum(abs(u - v) for u, v in zip(total_loss(l, h, 1 + eps), total_loss(l, h, 1 - eps))) / (2 * eps)
                         for h in range(model.encoder.config.num_attention_heads)]
                        for l in range(model.encoder.config.num_hidden_layers)])
    for l, imp in enumerate(importance):
        assert torch.allclose(imp.double(), raw[l].double() / raw[l].norm().double(), atol=2e-3), (l, imp, raw[l])


def test_pruning_finetune_with_a_teacher_keeps_the_sparsity(bert_cls, tmp_path):
    from quantize.prune import prunable_weights, prune, sparsity_of

    plain = load_model(prune(model=bert_cls, out=tmp_path / "p", sparsity=0.5, quiet=True))
    out = prune(model=bert_cls, out=tmp_path / "ft", sparsity=0.5, finetune_epochs=1, teacher=bert_cls, lr=1e-3,
                quiet=True)
    tuned = load_model(out)
    meta = json.loads((out / "distill.json").read_text())["meta"]
    assert tuned.kind == "bert-cls" and meta["task"] == "classify"
    assert meta["pruning"]["finetune"]["loss"].startswith("KD from")
    assert meta["pruning"]["sparsity_after_finetune"] == pytest.approx(meta["pruning"]["sparsity"], abs=1e-9)
    for (m1, n1), (m2, n2) in zip(prunable_weights(plain), prunable_weights(tuned)):
        assert torch.equal(getattr(m1, n1) == 0, getattr(m2, n2) == 0)
    assert not torch.equal(plain.classifier.weight, tuned.classifier.weight)
    assert sparsity_of(tuned) >= 0.5 - 0.002
