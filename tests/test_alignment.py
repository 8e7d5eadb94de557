"""Sub-token alignment under a SentencePiece vocabulary (teachers/bert_crf.py): the
natural alignment for characters, char pieces, and word-level data, on a tiny Unigram
tokenizer and BERT built here (the shape of multilingual-e5's, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from teachers.bert_crf import METASPACE, BertTagger, CharPieces, choose_alignment, shape_id

def _tagger(backbone: Path, labels, alignment: str) -> BertTagger:
    from transformers import AutoModel

    from teachers.bert_crf import load_tokenizer

    return BertTagger(AutoModel.from_pretrained(backbone, add_pooling_layer=False), load_tokenizer(str(backbone)),
                      labels, alignment=alignment)


def test_auto_alignment_is_natural_for_characters_under_sentencepiece(sp_backbone, tiny_backbone):
    from teachers.bert_crf import load_tokenizer

    sp, wordpiece = load_tokenizer(str(sp_backbone)), load_tokenizer(str(tiny_backbone))
    assert choose_alignment("auto", sp, char_level=True) == "natural"
    assert choose_alignment("auto", sp, char_level=False) == "first"
    assert choose_alignment("auto", wordpiece, char_level=True) == "first"


def test_natural_alignment_reads_every_character_at_the_piece_that_holds_it(sp_backbone, corpus):
    import unicodedata

    model = _tagger(sp_backbone, corpus.labels, "natural")
    tok = model.tokenizer
    sentences = corpus.train.tokens
    multi = 0
    for words, entries in zip(sentences, model.encode_words(sentences)):
        assert len(entries) == len(words) and all(isinstance(e, CharPieces) for e in entries)
        feature = model.build_feature(entries)
        ids, index = feature["input_ids"], feature["word_index"]
        # the sentence's natural pieces, in order, between <s> and </s>
        assert ids[1:-1] == tok("".join(words), add_special_tokens=False)["input_ids"]
        pieces = tok.convert_ids_to_tokens(ids)
        for k, (word, e) in enumerate(zip(words, entries)):
            piece = pieces[index[k]].lstrip(METASPACE)
            assert pieces[index[k]] != METASPACE  # never read at a lone "▁"
            assert piece[e.offset] == unicodedata.normalize("NFKC", word) and len(piece) == e.size  # it holds this character
            assert feature["piece_shape"][k] == shape_id(e.offset, e.size)
        multi += sum(e.size > 1 for e in entries)
    assert multi > 0  # bigram pieces occur: the test exercises characters inside pieces
    n_pieces = sum(len(tok("".join(s), add_special_tokens=False)["input_ids"]) for s in sentences)
    assert n_pieces < sum(map(len, sentences))  # fewer pieces than characters


def test_natural_alignment_survives_sentence_splitting(sp_backbone, corpus):
    """A sentence longer than the model's limit is cut between characters, even inside a
    piece: the cut piece begins again in the second part, and every character is tagged."""
    from distill.features import make_pieces, merge

    model = _tagger(sp_backbone, corpus.labels, "natural")
    model.max_length = 9
    long = [w for s in corpus.train.tokens[:6] for w in s]
    pieces = make_pieces(model, [long], cache=False)
    assert len(pieces) > 3
    for p in pieces:
        f = p.feature
        assert len(f["word_index"]) == p.n_words and max(f["word_index"]) < len(f["input_ids"]) - 1
        assert min(f["word_index"]) >= 1
    merged = merge(pieces, [list(range(p.start, p.end)) for p in pieces], [len(long)])
    assert merged == [list(range(len(long)))]


def test_char_pieces_give_one_piece_per_character(sp_backbone, corpus):
    model = _tagger(sp_backbone, corpus.labels, "char-pieces")
    lone = model.lone_metaspace
    for words, entries in zip(corpus.train.tokens, model.encode_words(corpus.train.tokens)):
        assert [len(e) for e in entries] == [1] * len(words)
        assert lone not in [e[0] for e in entries]
    # full-width punctuation is NFKC-normalised to the piece the vocabulary has
    assert model.encode_words([["，"]])[0][0] == [model.tokenizer.convert_tokens_to_ids(",")]


def test_word_level_sentencepiece_never_reads_a_word_at_a_lone_metaspace(sp_backbone, corpus):
    """Words tokenized alone get a leading lone "▁" when the vocabulary lacks "▁word": the
    word is read at its next sub-token."""
    model = _tagger(sp_backbone, corpus.labels, "first")
    sentences = [["the", "北京", "going", "x"], [c + d for c, d in zip(corpus.train.tokens[0], corpus.train.tokens[1])]]
    lone_starts = 0
    for entries in model.encode_words(sentences):
        feature = model.build_feature(entries)
        for i in feature["word_index"]:
            assert feature["input_ids"][i] != model.lone_metaspace
        lone_starts += sum(e[0] == model.lone_metaspace for e in entries)
    assert lone_starts > 0


@pytest.mark.parametrize("alignment", ["natural", "char-pieces"])
def test_teacher_with_sentencepiece_trains_saves_loads_predicts_and_exports(alignment, sp_backbone, tiny_dataset_kwargs, tmp_path):
    from distill.data import load_dataset
    from distill.evaluate import predict_tags
    from distill.modeling import load_model
    from distill.train import TrainConfig
    from quantize.api import quantize
    from teachers.train import TeacherConfig, train_teacher

    out = tmp_path / "teacher"
    train_teacher(out=out, dataset=tiny_dataset_kwargs,
                  config=TeacherConfig(backbone=str(sp_backbone), alignment=alignment),
                  train_config=TrainConfig(epochs=1, batch_size=8, lr=1e-3, head_lr=1e-2, checkpoint_minutes=0),
                  quiet=True)
    model = load_model(out)
    assert model.alignment == alignment and (model.piece_shape is not None) == (alignment == "natural")
    sentences = load_dataset(**tiny_dataset_kwargs).test.tokens
    tags = predict_tags(model, sentences)
    assert [len(t) for t in tags] == [len(s) for s in sentences]
    onnx = quantize(method="onnx", model=out, out=tmp_path / "onnx", quiet=True)  # its own check: tags identical
    assert predict_tags(load_model(onnx), sentences) == tags
