"""Vocabulary pruning (teachers/vocab.py; quantize/vocab.py's prune stage) on a tiny Unigram
tokenizer and BERT built here (tests/conftest.py's make_sp_backbone) and on the tiny WordPiece
backbone: the same pieces and encoder output on the pruning text, no <unk> for an unseen
character of a kept script, kept ids that name the original pieces, and pruned teachers that
train, save, load, export and predict as their source does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.errors import DistillError
from teachers.vocab import prune_vocabulary, sentence_texts


def _load(backbone: Path):
    from transformers import AutoModel

    from teachers.bert_crf import load_tokenizer

    return load_tokenizer(str(backbone)), AutoModel.from_pretrained(backbone, add_pooling_layer=False).eval()


def _pieces(tokenizer, texts, special: bool = False) -> list[list[str]]:
    enc = tokenizer(texts, add_special_tokens=special)
    return [tokenizer.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]


@torch.no_grad()
def _hidden(tokenizer, encoder, texts) -> torch.Tensor:
    """Encoder states (B, S, H) of ``texts`` with <s> ... </s> and padding; padding zeroed."""
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    out = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    return out * enc["attention_mask"].unsqueeze(-1)


def test_pruned_tokenizer_and_encoder_match_the_original_on_the_pruning_text(sp_backbone, corpus):
    tokenizer, encoder = _load(sp_backbone)
    _, pruned_encoder = _load(sp_backbone)
    texts = sentence_texts(corpus.train.tokens[:12], unspaced=True)
    result = prune_vocabulary(tokenizer, pruned_encoder, texts)
    new = result.tokenizer
    assert result.original == len(tokenizer) and len(result.kept) == len(new) < len(tokenizer)
    assert pruned_encoder.get_input_embeddings().weight.shape == (len(new), encoder.config.hidden_size)
    assert pruned_encoder.config.vocab_size == len(new)
    assert pruned_encoder.config.pad_token_id == new.pad_token_id
    # (a) the same piece strings, with and without <s> ... </s> (the post-processor's ids remapped)
    assert _pieces(new, texts) == _pieces(tokenizer, texts)
    assert _pieces(new, texts, special=True) == _pieces(tokenizer, texts, special=True)
    assert new(texts[0])["input_ids"][0] == new.cls_token_id and new(texts[0])["input_ids"][-1] == new.sep_token_id
    # the kept ids name the original pieces: new id i is original id kept[i]
    assert tokenizer.convert_ids_to_tokens(result.kept) == new.convert_ids_to_tokens(list(range(len(new))))
    assert pruned_encoder.config.vocab_pruning == {"original": len(tokenizer), "kept": result.kept}
    # (b) the same encoder output
    diff = (_hidden(tokenizer, encoder, texts) - _hidden(new, pruned_encoder, texts)).abs().max().item()
    assert diff < 1e-6


def test_special_ids_are_remapped_when_pieces_before_them_go():
    """Specials placed after pieces that are pruned: the post-processor, the unk id, the
    padding row and the config's special ids all move to the new numbering."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    pieces = [("<unk>", 0.0), ("\u2581x", -1.0), ("x", -2.0), ("<s>", 0.0), ("</s>", 0.0), ("<pad>", 0.0),
              ("\u2581", -2.0), ("a", -3.0), ("b", -3.0), ("\u2581a", -2.0)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=0))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                           special_tokens=[("<s>", 3), ("</s>", 4)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                        sep_token="</s>", pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(pieces), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16, pad_token_id=5), add_pooling_layer=False).eval()
    reference = _hidden(tokenizer, encoder, ["a b", "ba"])
    result = prune_vocabulary(tokenizer, encoder, ["a b", "ba"], keep_scripts=False)
    new = result.tokenizer
    assert result.kept == [0, 3, 4, 5, 6, 7, 8, 9]  # "▁x" and "x" go: the specials move down by two
    assert (new.unk_token_id, new.cls_token_id, new.sep_token_id, new.pad_token_id) == (0, 1, 2, 3)
    assert new("a b")["input_ids"] == [1, 7, 4, 6, 2]  # <s> ▁a ▁ b </s>
    assert new("xa", add_special_tokens=False)["input_ids"] == [4, 0, 5]  # ▁ <unk> a: "x" is gone
    assert encoder.config.pad_token_id == 3 and encoder.get_input_embeddings().padding_idx == 3
    assert torch.equal(_hidden(new, encoder, ["a b", "ba"]), reference)


def test_an_unseen_character_of_a_kept_script_is_no_unk(sp_backbone, corpus):
    tokenizer, encoder = _load(sp_backbone)
    texts = sentence_texts(corpus.train.tokens[:5], unspaced=True)
    seen = set("".join(texts))
    vocab = tokenizer.get_vocab()
    unseen = [c for c in sorted({c for s in corpus.train.tokens[5:] for w in s for c in w} - seen)
              if "\u4e00" <= c <= "\u9fff" and c in vocab][:6]
    assert len(unseen) == 6
    text = "".join(unseen)
    new = prune_vocabulary(tokenizer, encoder, texts).tokenizer
    ids = new(text, add_special_tokens=False)["input_ids"]
    assert new.unk_token_id not in ids and "".join(new.convert_ids_to_tokens(ids)).lstrip("\u2581") == text
    assert "a" not in new.get_vocab() and "a" in vocab  # Latin is not a script of these texts: dropped
    # without the scripts rule the same text is unknown: the test above can fail
    _, encoder = _load(sp_backbone)
    bare = prune_vocabulary(tokenizer, encoder, texts, keep_scripts=False).tokenizer
    assert bare.unk_token_id in bare(text, add_special_tokens=False)["input_ids"]
    assert len(bare) < len(new)


def test_pruning_twice_keeps_the_ids_of_the_first_vocabulary(sp_backbone, corpus):
    tokenizer, encoder = _load(sp_backbone)
    texts = sentence_texts(corpus.train.tokens[:20], unspaced=True)
    first = prune_vocabulary(tokenizer, encoder, texts, keep_scripts=False)
    second = prune_vocabulary(first.tokenizer, encoder, texts[:5], keep_scripts=False)
    assert second.original == len(tokenizer) and len(second.kept) < len(first.kept)
    new_ids = list(range(len(second.kept)))
    assert tokenizer.convert_ids_to_tokens(second.kept) == second.tokenizer.convert_ids_to_tokens(new_ids)
    assert _pieces(second.tokenizer, texts[:5]) == _pieces(tokenizer, texts[:5])


def test_wordpiece_is_pruned_and_bpe_is_refused(tiny_backbone, corpus):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer, encoder = _load(tiny_backbone)
    _, pruned_encoder = _load(tiny_backbone)
    texts = sentence_texts(corpus.train.tokens[:10], unspaced=False) + ["the german said", "xyz going"]
    result = prune_vocabulary(tokenizer, pruned_encoder, texts)
    assert len(result.kept) < len(tokenizer)
    assert _pieces(result.tokenizer, texts, special=True) == _pieces(tokenizer, texts, special=True)
    diff = (_hidden(tokenizer, encoder, texts) - _hidden(result.tokenizer, pruned_encoder, texts)).abs().max().item()
    assert diff < 1e-6
    assert result.tokenizer("qv", add_special_tokens=False)["input_ids"] != [result.tokenizer.unk_token_id]

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2, "<unk>": 3},
                                                                        [("a", "b")], unk_token="<unk>")),
                                  unk_token="<unk>")
    with pytest.raises(DistillError, match="supports SentencePiece Unigram and WordPiece tokenizers; this one is BPE"):
        prune_vocabulary(bpe, pruned_encoder, ["ab"])


def _train(out: Path, backbone: Path, dataset: dict, prune_vocab: bool) -> Path:
    from distill.train import TrainConfig
    from teachers.train import TeacherConfig, train_teacher

    train_teacher(out=out, dataset=dataset, config=TeacherConfig(backbone=str(backbone), prune_vocab=prune_vocab),
                  train_config=TrainConfig(epochs=1, batch_size=8, lr=1e-3, head_lr=1e-2, checkpoint_minutes=0),
                  quiet=True)
    return out


def test_teacher_trained_with_a_pruned_vocabulary_saves_loads_exports_and_predicts(sp_backbone, tiny_dataset_kwargs,
                                                                                   corpus, tmp_path):
    from distill.evaluate import predict_tags
    from distill.modeling import load_model
    from quantize.api import quantize

    out = _train(tmp_path / "teacher", sp_backbone, tiny_dataset_kwargs, prune_vocab=True)
    info = json.loads((out / "distill.json").read_text(encoding="utf-8"))
    pruned = info["meta"]["vocabulary"]["pruned"]
    assert info["meta"]["params"]["prune_vocab"] is True
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert pruned["kept"] == config["vocab_size"] == len(config["vocab_pruning"]["kept"]) < pruned["original"]
    model = load_model(out)
    assert len(model.tokenizer) == pruned["kept"] and model.alignment == "natural"
    sentences = corpus.test.tokens
    tags = predict_tags(model, sentences)
    model.save(tmp_path / "again")
    assert predict_tags(load_model(tmp_path / "again"), sentences) == tags
    onnx = quantize(method="onnx", model=out, out=tmp_path / "onnx", quiet=True)  # its own check: tags identical
    assert predict_tags(load_model(onnx), sentences) == tags


@torch.no_grad()
def _emissions(model, sentences) -> torch.Tensor:
    """Each model featurizes for itself (its own ids): emissions of all real words, (N, K)."""
    from distill.features import iterate_batches, make_pieces

    out = [model(batch) for _, batch in iterate_batches(model, make_pieces(model, sentences, cache=False), 32)]
    return torch.cat([o.emissions[o.mask] for o in out])


def test_prune_vocab_folder_predicts_as_its_source(sp_backbone, tiny_dataset_kwargs, corpus, tmp_path):
    from distill.evaluate import predict_tags
    from distill.modeling import load_model
    from quantize.vocab import prune_vocab_folder

    source = _train(tmp_path / "teacher", sp_backbone, tiny_dataset_kwargs, prune_vocab=False)
    text = tmp_path / "test.txt"
    text.write_text("\n".join("".join(s) for s in corpus.test.tokens) + "\n", encoding="utf-8")
    out = prune_vocab_folder(model=source, text=text, quiet=True)
    assert out == source.with_name("teacher-pruned-vocab")
    meta = json.loads((out / "distill.json").read_text(encoding="utf-8"))["meta"]
    info = meta["pruning"]
    assert info["resegmented"] == 0 and info["kept"] < info["original"]
    assert info["parameters_before"] - info["parameters_after"] == (info["original"] - info["kept"]) * 32
    assert meta["params"]["method"] == "prune-vocab" and meta["vocabulary"]["pruned"]["kept"] == info["kept"]
    src, pruned = load_model(source), load_model(out)
    assert pruned.kind == "bert-crf"
    sentences = corpus.test.tokens
    assert predict_tags(pruned, sentences) == predict_tags(src, sentences)
    assert (_emissions(src, sentences) - _emissions(pruned, sentences)).abs().max().item() < 1e-5


def test_distill_prune_method_vocab_on_a_wordpiece_teacher(tiny_teacher, corpus, tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app
    from distill.evaluate import predict_tags
    from distill.modeling import load_model
    from quantize.prune import prune

    out = tmp_path / "vocab"
    result = CliRunner().invoke(app, ["prune", str(tiny_teacher), "--method", "vocab", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pruned vocabulary (" in result.output
    info = json.loads((out / "distill.json").read_text(encoding="utf-8"))["meta"]["pruning"]
    assert info["method"] == "vocab" and info["kept"] < info["original"] and info["resegmented"] == 0
    sentences = corpus.train.tokens  # the model's own training data: every piece kept
    assert predict_tags(load_model(out), sentences) == predict_tags(load_model(tiny_teacher), sentences)
    with pytest.raises(DistillError, match="takes no --finetune-epochs or --teacher"):
        prune(model=tiny_teacher, out=tmp_path / "x", method="vocab", finetune_epochs=1, quiet=True)
    with pytest.raises(DistillError, match="--text is for --method vocab"):
        prune(model=tiny_teacher, out=tmp_path / "x", method="magnitude", text=tmp_path / "t.txt", quiet=True)
