"""Pruning: the global sparsity reached, heads really removed (smaller matrices that
survive a reload), Michel et al. importance checked against finite differences,
sparsity kept through a fine-tune, and the CLI's one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distill.modeling import load_model
from quantize.prune import heads_to_remove, prunable_weights, sparsity_of


@pytest.fixture(scope="module")
def tiny_bilstm(tmp_path_factory, tiny_dataset_kwargs):
    from test_quantize import make_tiny_bilstm

    return make_tiny_bilstm(tmp_path_factory.mktemp("prune-bilstm") / "bilstm", tiny_dataset_kwargs)


def _zeros(model: nn.Module) -> dict[str, int]:
    return {n: int((p == 0).sum()) for n, p in model.named_parameters()}


@pytest.mark.parametrize("target", [0.3, 0.75])
def test_magnitude_reaches_the_global_sparsity(tiny_teacher, tmp_path, target):
    from quantize.prune import prune

    out = prune(model=tiny_teacher, out=tmp_path / "pruned", sparsity=target, quiet=True)
    source, pruned = load_model(tiny_teacher), load_model(out)
    assert pruned.kind == "bert-crf"
    assert sparsity_of(pruned) == pytest.approx(target, abs=0.002)
    assert sparsity_of(source) < 0.01
    meta = json.loads((out / "distill.json").read_text())["meta"]
    assert meta["pruning"]["sparsity"] == pytest.approx(sparsity_of(pruned), abs=1e-6)
    params = dict(meta["params"])
    assert params.pop("dataset")["fmt"] == "msra"  # the data the source was trained on
    assert params == {"source": str(tiny_teacher), "method": "prune-magnitude", "sparsity": target,
                      "finetune_epochs": 0, "teacher": None}
    # only Linear/LSTM weights are pruned: embeddings, biases, LayerNorm and the CRF are untouched
    prunable = {id(getattr(m, n)) for m, n in prunable_weights(pruned)}
    before = dict(source.named_parameters())
    for name, p in pruned.named_parameters():
        if id(p) not in prunable:
            assert torch.equal(p, before[name]), name
    # the smallest weights went: every surviving |w| is >= every pruned |w| (globally)
    kept = torch.cat([getattr(m, n)[getattr(m, n) != 0].abs() for m, n in prunable_weights(pruned)])
    original = dict(source.named_parameters())
    names = {id(p): n for n, p in pruned.named_parameters()}
    dropped = torch.cat([original[names[id(getattr(m, n))]][getattr(m, n) == 0].abs() for m, n in prunable_weights(pruned)])
    assert kept.min() >= dropped.max()


def test_magnitude_prunes_lstm_weights_and_reloads(tiny_bilstm, tmp_path):
    from distill.features import make_pieces
    from quantize.prune import magnitude_prune, prune

    out = prune(model=tiny_bilstm, out=tmp_path / "pruned", sparsity=0.5, quiet=True)
    pruned = load_model(out)
    lstm_zero = [float((getattr(pruned.lstm, n) == 0).float().mean()) for n, _ in pruned.lstm.named_parameters()
                 if n.startswith("weight_")]
    assert len(lstm_zero) == 8 and min(lstm_zero) > 0.2  # two layers x two directions x (ih, hh)
    assert sparsity_of(pruned) == pytest.approx(0.5, abs=0.002)
    # the LSTM really computes with the pruned weights (its flat weight cache was updated)
    in_memory = load_model(tiny_bilstm)
    magnitude_prune(in_memory, 0.5)
    pieces = make_pieces(pruned, [list("中国人民银行"), list("北京")])
    batch = pruned.collate([p.feature for p in pieces])
    with torch.no_grad():
        assert torch.equal(pruned(batch).emissions, in_memory(batch).emissions)
        assert not torch.equal(pruned(batch).emissions, load_model(tiny_bilstm)(batch).emissions)


def test_heads_to_remove_keeps_one_head_per_layer():
    importance = [torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0.05, 0.06, 0.07]), torch.tensor([0.5, 0.6, 0.7])]
    assert heads_to_remove(importance, 1 / 3) == {1: [0, 1], 0: [0]}
    assert heads_to_remove(importance, 0.99) == {0: [0, 1], 1: [0, 1], 2: [0, 1]}
    assert heads_to_remove(importance, 0.0) == {}


def test_head_importance_is_the_gate_gradient(tiny_teacher, tiny_dataset_kwargs):
    """|dL/dxi_h| by the hooks equals a central finite difference of the loss when head
    h's output is scaled by (1 +- eps)."""
    from distill.data import load_dataset
    from distill.features import make_pieces
    from quantize.prune import head_importance

    model = load_model(tiny_teacher).double()
    ds = load_dataset(**tiny_dataset_kwargs)
    index = {l: i for i, l in enumerate(model.labels)}
    sentences, tags = ds.dev.tokens, [[index[t] for t in s] for s in ds.dev.tags]
    importance = head_importance(model, sentences, tags, batch_size=64)  # one batch: sum of |grad| = |grad|

    pieces = make_pieces(model, sentences, tags)
    batch = model.collate([p.feature for p in pieces])

    def loss_with(layer: int, head: int, scale: float) -> float:
        dense = model.encoder.encoder.layer[layer].attention.output.dense
        d = model.encoder.encoder.layer[layer].attention.self.attention_head_size

        def hook(module, args):
            x = args[0].clone()
            x[..., head * d:(head + 1) * d] *= scale
            return (x,)

        handle = dense.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                return float(model.loss(model(batch), batch["tags"]))
        finally:
            handle.remove()

    eps = 1e-5
    for layer, imp in enumerate(importance):
        raw = torch.tensor([abs(loss_with(layer, h, 1 + eps) - loss_with(layer, h, 1 - eps)) / (2 * eps)
                            for h in range(len(imp))], dtype=torch.float64)
        assert torch.allclose(imp.double(), raw / raw.norm(), atol=1e-5), (layer, imp, raw / raw.norm())


def test_heads_shrink_the_matrices_and_survive_a_reload(tiny_teacher, tmp_path):
    from distill.features import make_pieces
    from quantize.prune import prune

    source = load_model(tiny_teacher)
    H = source.encoder.config.num_attention_heads
    d = source.encoder.config.hidden_size // H
    out = prune(model=tiny_teacher, out=tmp_path / "heads", method="heads", sparsity=0.5, quiet=True)
    meta = json.loads((out / "distill.json").read_text())["meta"]["pruning"]
    layers = source.encoder.config.num_hidden_layers
    assert meta["heads_before"] == layers * H and meta["heads_removed"] == round(0.5 * layers * H)
    assert meta["parameters_after"] < meta["parameters_before"]
    config = json.loads((out / "config.json").read_text())
    assert sum(len(v) for v in config["pruned_heads"].values()) == meta["heads_removed"]

    pruned = load_model(out)  # rebuilt from config.json: BertTagger.build re-applies pruned_heads
    for i, layer in enumerate(pruned.encoder.encoder.layer):
        kept = H - len(config["pruned_heads"].get(str(i), []))
        assert kept >= 1
        assert tuple(layer.attention.self.query.weight.shape) == (kept * d, source.encoder.config.hidden_size)
        assert tuple(layer.attention.self.value.weight.shape) == (kept * d, source.encoder.config.hidden_size)
        assert tuple(layer.attention.output.dense.weight.shape) == (source.encoder.config.hidden_size, kept * d)
    assert sum(p.numel() for p in pruned.parameters()) == meta["parameters_after"]
    pieces = make_pieces(pruned, [list("中国人民银行"), list("北京")])
    batch = pruned.collate([p.feature for p in pieces])
    with torch.no_grad():
        emissions = pruned(batch).emissions
    assert torch.isfinite(emissions).all()

    # pruning again numbers heads as the layer has them now, and records original numbers
    again = prune(model=out, out=tmp_path / "heads2", method="heads", sparsity=0.5, quiet=True)
    config2 = json.loads((again / "config.json").read_text())
    for layer, heads in config["pruned_heads"].items():
        assert set(heads) <= set(config2["pruned_heads"][layer])
    assert all(H - len(v) >= 1 for v in config2["pruned_heads"].values())
    load_model(again)


def test_finetune_keeps_the_sparsity(tiny_teacher, tmp_path):
    from quantize.prune import prune

    plain = load_model(prune(model=tiny_teacher, out=tmp_path / "p", sparsity=0.6, quiet=True))
    out = prune(model=tiny_teacher, out=tmp_path / "ft", sparsity=0.6, finetune_epochs=1, teacher=tiny_teacher,
                quiet=True)
    tuned = load_model(out)
    meta = json.loads((out / "distill.json").read_text())["meta"]
    assert meta["pruning"]["finetune"]["loss"].startswith("KD from")
    assert sparsity_of(tuned) == pytest.approx(sparsity_of(plain), abs=1e-12)
    assert meta["pruning"]["sparsity_after_finetune"] == meta["pruning"]["sparsity"] == pytest.approx(0.6, abs=0.002)
    # the same zeros, and the other weights did move
    for (m1, n1), (m2, n2) in zip(prunable_weights(plain), prunable_weights(tuned)):
        assert torch.equal(getattr(m1, n1) == 0, getattr(m2, n2) == 0)
    assert not torch.equal(plain.classifier.weight, tuned.classifier.weight)


# --- errors --------------------------------------------------------------------




@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.0"], "error: --sparsity must be in [0, 1), got 1.0"),
    (["--sparsity", "-0.1"], "error: --sparsity must be in [0, 1), got -0.1"),
    (["--method", "random"], "error: unknown pruning method 'random'; expected one of magnitude, heads, vocab"),
    (["--teacher", "{model}"], "error: --teacher is used by the fine-tune; give --finetune-epochs N (>= 1) too"),
])
def test_cli_bad_options_are_one_line(tiny_teacher, tmp_path, run_cli, args, message):
    args = [a.replace("{model}", str(tiny_teacher)) for a in args]
    r = run_cli(["prune", str(tiny_teacher), "--out", str(tmp_path / "out"), *args])
    assert r.code == 1 and r.err_lines == [message]
    assert not (tmp_path / "out").exists()


def test_cli_heads_needs_bert_and_a_model_folder(tiny_bilstm, tmp_path, run_cli):
    r = run_cli(["prune", str(tiny_bilstm), "--method", "heads", "--out", str(tmp_path / "o")])
    assert r.code == 1 and len(r.err_lines) == 1 and "needs a BERT model" in r.err_lines[0]
    r = run_cli(["prune", str(tmp_path / "nothing")])
    assert r.code == 1 and r.err_lines == [f"error: {tmp_path / 'nothing'}: no such model folder"]
