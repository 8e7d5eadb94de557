"""Quantized model folders: which layers were replaced, agreement with fp32 (the
measured max abs emission diff is asserted), reload without fp32 weights, and the
CLI's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.errors import DistillError
from distill.modeling import load_model


def make_tiny_bilstm(folder: Path, dataset_kwargs: dict, lstm_layers: int = 2) -> Path:
    """A random (untrained) BiLSTM-CRF student over the tiny corpus, with decisive
    emissions and transitions so decoding is not all "O"."""
    from distill.data import load_dataset
    from students.bilstm_crf import BiLSTMTagger, build_vocabulary

    ds = load_dataset(**dataset_kwargs)
    torch.manual_seed(1)
    model = BiLSTMTagger(build_vocabulary(ds.train.tokens), ds.labels, embedding_dim=16, hidden_size=16,
                         lstm_layers=lstm_layers, meta={
                             "role": "student", "char_level": ds.train.char_level, "scheme": ds.train.scheme,
                             "separator": ds.train.separator, "dataset": ds.name,
                             "params": {"dataset": {k: str(v) for k, v in dataset_kwargs.items()}}})
    with torch.no_grad():
        model.classifier.weight.mul_(20)
        model.crf.transitions.normal_(0, 1)
    return model.save(folder)


@pytest.fixture(scope="module")
def tiny_bilstm(tmp_path_factory, tiny_dataset_kwargs) -> Path:
    return make_tiny_bilstm(tmp_path_factory.mktemp("bilstm") / "model", tiny_dataset_kwargs)


def _count(model: nn.Module, cls) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def _recheck(source_folder: Path, compressed) -> dict:
    from quantize import check_sentences, compare

    source = load_model(source_folder)
    return compare(source, compressed, check_sentences(source.meta, None, 50))


# --- torch dynamic int8 -------------------------------------------------------------


def test_int8_replaces_every_linear_and_reloads_without_fp32_weights(tiny_teacher, tmp_path):
    import torch.ao.nn.quantized.dynamic as nnqd
    from safetensors.torch import load_file

    from quantize.api import quantize

    out = quantize(method="int8", model=tiny_teacher, out=tmp_path / "int8", quiet=True)
    info = json.loads((out / "distill.json").read_text())
    assert info["kind"] == "torch-int8"
    meta = info["meta"]
    assert meta["source_kind"] == "bert-crf" and meta["params"]["source"] == str(tiny_teacher)
    assert meta["params"]["method"] == "int8" and meta["char_level"] is True and meta["scheme"] == "BMES"

    source = load_model(tiny_teacher)
    model = load_model(out)
    n_linear = _count(source, nn.Linear)
    assert n_linear > 0 and meta["quantized_layers"] == n_linear
    assert _count(model.inner, nnqd.Linear) == n_linear
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert model.inner.encoder.embeddings.word_embeddings.weight.dtype == torch.float32
    assert not (out / "model.safetensors").exists()
    tensors = load_file(str(out / "model.int8.safetensors"))
    assert tensors["classifier.weight.int8"].dtype == torch.int8
    assert "classifier.weight" not in tensors

    check = _recheck(tiny_teacher, model)
    assert check["max_abs_diff"] < 0.1
    assert check["tag_agreement"] > 0.9
    # the reloaded model is the model that was checked when it was written
    assert check["max_abs_diff"] == pytest.approx(meta["check"]["max_abs_diff"], abs=1e-6)


def test_int8_bilstm_quantizes_the_lstm(tiny_bilstm, tmp_path):
    import torch.ao.nn.quantized.dynamic as nnqd

    from quantize.api import quantize

    model = load_model(quantize(method="int8", model=tiny_bilstm, out=tmp_path / "int8", quiet=True))
    assert _count(model.inner, nnqd.LSTM) == 1 and _count(model.inner, nnqd.Linear) == 1
    assert not any(type(m) in (nn.LSTM, nn.Linear) for m in model.modules())
    check = _recheck(tiny_bilstm, model)
    assert check["max_abs_diff"] < 0.5  # emissions scaled x20 in the fixture
    assert check["tag_agreement"] > 0.9

    plain = load_model(quantize(method="int8", model=tiny_bilstm, out=tmp_path / "int8-nolstm", lstm=False,
                                scheme="per-tensor", quiet=True))
    assert type(plain.inner.lstm) is nn.LSTM and _count(plain.inner, nnqd.Linear) == 1


def test_int8_model_evaluates_like_any_model(tiny_teacher, tiny_dataset_kwargs, tmp_path):
    from distill.predict import eval_model
    from quantize.api import quantize

    out = quantize(method="int8", model=tiny_teacher, out=tmp_path / "int8", quiet=True)
    metrics = eval_model(model=out, dataset=tiny_dataset_kwargs, out=tmp_path / "eval.json")
    fp32 = eval_model(model=tiny_teacher, dataset=tiny_dataset_kwargs, out=tmp_path / "eval32.json")
    assert metrics["sentences"] == fp32["sentences"] == 20
    assert abs(metrics["f1"] - fp32["f1"]) < 0.2


# --- bitsandbytes, fp16 ---------------------------------------------------------------


def test_bnb8_uses_linear8bitlt(tiny_teacher, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from quantize.api import quantize

    out = quantize(method="bnb8", model=tiny_teacher, out=tmp_path / "bnb8", device="cpu", quiet=True)
    model = load_model(out)
    n_linear = _count(load_model(tiny_teacher), nn.Linear)
    assert _count(model.inner, bnb.nn.Linear8bitLt) == n_linear
    assert model.inner.classifier.weight.dtype == torch.int8
    check = _recheck(tiny_teacher, model)
    assert check["max_abs_diff"] < 0.1 and check["tag_agreement"] > 0.9
    assert check["max_abs_diff"] == pytest.approx(json.loads((out / "distill.json").read_text())["meta"]["check"]["max_abs_diff"], abs=1e-6)


def test_fp16_on_cpu_when_asked(tiny_bilstm, tmp_path):
    from quantize.api import quantize

    model = load_model(quantize(method="fp16", model=tiny_bilstm, out=tmp_path / "fp16", device="cpu", quiet=True))
    assert model.kind == "fp16"
    assert model.inner.lstm.weight_ih_l0.dtype == torch.float16
    assert model.inner.crf.transitions.dtype == torch.float32
    check = _recheck(tiny_bilstm, model)
    assert check["max_abs_diff"] < 0.1 and check["tag_agreement"] > 0.95


# --- errors ---------------------------------------------------------------------------


def test_api_errors(tiny_teacher, tmp_path):
    from quantize.api import QUANTIZE_METHODS, quantize

    assert set(QUANTIZE_METHODS) == {"int8", "onnx", "onnx-int8", "bnb8", "fp16"}
    with pytest.raises(DistillError, match="unknown quantization method 'int4'; expected one of int8, onnx"):
        quantize(method="int4", model=tiny_teacher)
    with pytest.raises(DistillError, match="unknown option"):
        quantize(method="int8", model=tiny_teacher, sparsity=0.5)
    with pytest.raises(DistillError, match="is the source model folder"):
        quantize(method="int8", model=tiny_teacher, out=tiny_teacher)
    with pytest.raises(DistillError, match="unknown int8 scheme"):
        quantize(method="int8", model=tiny_teacher, out=tmp_path / "x", scheme="per-row")
    assert not (tmp_path / "x").exists()




@pytest.mark.parametrize("method, weights", [("int8", "model.int8.safetensors"), ("fp16", "model.safetensors")])
def test_a_missing_or_truncated_weights_file_is_one_line_naming_it(method, weights, tiny_bilstm, tmp_path):
    import re

    from quantize.api import quantize

    options = {"device": "cpu"} if method == "fp16" else {}
    folder = quantize(method=method, model=tiny_bilstm, out=tmp_path / method, check=0, quiet=True, **options)
    path = folder / weights
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DistillError, match=rf"^{re.escape(str(path))}: cannot be loaded \(.*\); the file is truncated or from another model$"):
        load_model(folder)
    path.unlink()
    with pytest.raises(DistillError, match=rf"^{re.escape(str(path))}: missing; the {method} model folder is incomplete$"):
        load_model(folder)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cli_fp16_without_cuda_is_one_line(tiny_teacher, tmp_path, run_cli):
    r = run_cli(["quantize", "fp16", str(tiny_teacher), "--out", str(tmp_path / "fp16")])
    assert r.code == 1 and len(r.err_lines) == 1
    assert r.err_lines[0].startswith("error: fp16 is for GPU inference and no CUDA GPU is available")
    assert not (tmp_path / "fp16").exists()


def test_cli_not_a_model_and_already_quantized(tiny_teacher, tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    r = run_cli(["quantize", "int8", str(tmp_path / "empty")])
    assert r.code == 1 and r.err_lines == [f"error: {tmp_path / 'empty'}: not a distill model folder (distill.json missing)"]

    from quantize.api import quantize

    int8 = quantize(method="int8", model=tiny_teacher, out=tmp_path / "int8", check=0, quiet=True)
    for method in ("int8", "onnx", "bnb8"):
        r = run_cli(["quantize", method, str(int8), "--out", str(tmp_path / "again")])
        assert r.code == 1 and len(r.err_lines) == 1
        assert r.err_lines[0].startswith(f"error: {int8}: is a 'torch-int8' model, already compressed")
    assert not (tmp_path / "again").exists()


def test_cli_int8_end_to_end(tiny_teacher, tmp_path, run_cli):
    out = tmp_path / "int8"
    code, printed, _ = run_cli(["quantize", "int8", str(tiny_teacher), "--out", str(out), "--check", "10"])
    assert code == 0 and f"saved to {out}" in printed and "tags agree" in printed
    assert load_model(out).kind == "torch-int8"
