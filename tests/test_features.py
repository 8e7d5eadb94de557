"""Pieces, merging, the featurization cache and length-bucketed batches."""

from __future__ import annotations

import pickle
import random

import pytest

from distill import features
from distill.features import (bucket_batches, cache_folder, featurizer_key, make_pieces, merge, padding_waste,
                              piece_length)


class CountingFeaturizer:
    """A word-level featurizer whose words take ``len(word)`` ids each (so long words
    force splits), counting how often it featurizes."""

    kind = "counting"

    def __init__(self, max_length: int = 6, vocab=("[PAD]", "[UNK]", "a", "b")):
        self.max_length = max_length
        self.vocab = list(vocab)
        self.calls = 0

    def encode_words(self, sentences):
        self.calls += 1
        return [[[ord(c) for c in w] or [1] for w in s] for s in sentences]

    def build_feature(self, word_ids):
        ids = [i for w in word_ids for i in w]
        return {"input_ids": ids, "n": len(word_ids)}


def corpus(n: int = 60, seed: int = 0) -> tuple[list[list[str]], list[list[int]]]:
    rng = random.Random(seed)
    words = ["a", "bb", "ccc", "。", "dddd", "eeeeeeee"]
    sentences = [[rng.choice(words) for _ in range(rng.randint(0, 12))] for _ in range(n)]
    tags = [[rng.randint(0, 4) for _ in s] for s in sentences]
    return sentences, tags


def as_tuples(pieces):
    return [(p.sentence, p.start, p.end, p.feature) for p in pieces]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pieces"


def test_pieces_cover_every_token_once_and_merge_back():
    sentences, tags = corpus()
    model = CountingFeaturizer(max_length=6)
    pieces = make_pieces(model, sentences, tags, cache=False)
    assert any(p.n_words < len(sentences[p.sentence]) for p in pieces)  # some sentences were split
    covered = {i: [] for i in range(len(sentences))}
    for p in pieces:
        covered[p.sentence].append((p.start, p.end))
        assert p.feature["tags"] == tags[p.sentence][p.start : p.end]
        assert len(p.feature["input_ids"]) <= model.max_length or p.n_words == 1
        assert p.feature["n"] == p.n_words
    for i, spans in covered.items():
        flat = [t for a, b in spans for t in range(a, b)]
        assert flat == list(range(len(sentences[i]))), (sentences[i], spans)
    # predict each token's own index: merging gives back exactly one tag per token, in order
    merged = merge(pieces, [list(range(p.start, p.end)) for p in pieces], [len(s) for s in sentences])
    assert merged == [list(range(len(s))) for s in sentences]


def test_word_longer_than_the_limit_is_truncated_not_dropped():
    model = CountingFeaturizer(max_length=3)
    pieces = make_pieces(model, [["abcdefg", "a"]], cache=False)
    assert [(p.start, p.end) for p in pieces] == [(0, 1), (1, 2)]
    assert pieces[0].feature["input_ids"] == [ord(c) for c in "abc"]


def test_cache_hit_gives_identical_pieces(cache_dir):
    sentences, tags = corpus()
    model = CountingFeaturizer()
    first = make_pieces(model, sentences, tags, cache=True)
    assert model.calls == 1 and len(list(cache_dir.glob("*.pkl"))) == 1
    again = make_pieces(model, sentences, tags, cache=True)
    assert model.calls == 1  # served from the cache
    assert as_tuples(again) == as_tuples(first) == as_tuples(make_pieces(model, sentences, tags, cache=False))
    # the cache hands out fresh objects: changing one result does not change the next
    again[0].feature["teacher_emissions"] = 1
    assert "teacher_emissions" not in make_pieces(model, sentences, tags, cache=True)[0].feature


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong-count"])
def test_corrupt_cache_is_ignored_and_rebuilt(cache_dir, damage):
    sentences, tags = corpus()
    model = CountingFeaturizer()
    good = as_tuples(make_pieces(model, sentences, tags, cache=True))
    path, = cache_dir.glob("*.pkl")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        obj = pickle.loads(data)
        obj["sentences"] += 1
        path.write_bytes(pickle.dumps(obj))
    assert as_tuples(make_pieces(model, sentences, tags, cache=True)) == good
    assert model.calls == 2  # rebuilt ...
    assert as_tuples(make_pieces(model, sentences, tags, cache=True)) == good
    assert model.calls == 2  # ... and the rewritten file serves the next call


def test_cache_key_follows_data_tags_and_featurizer(cache_dir):
    sentences, tags = corpus()
    model = CountingFeaturizer()
    make_pieces(model, sentences, tags, cache=True)
    other_tags = [[(t + 1) % 5 for t in s] for s in tags]
    make_pieces(model, sentences, other_tags, cache=True)
    make_pieces(model, sentences, None, cache=True)
    make_pieces(model, sentences[:-1], tags[:-1], cache=True)
    make_pieces(CountingFeaturizer(max_length=7), sentences, tags, cache=True)
    make_pieces(CountingFeaturizer(vocab=("[PAD]", "[UNK]", "z")), sentences, tags, cache=True)
    assert len(list(cache_dir.glob("*.pkl"))) == 6
    assert featurizer_key(CountingFeaturizer()) == featurizer_key(CountingFeaturizer())


def test_cache_off_small_inputs_and_unidentifiable_models(tmp_path, monkeypatch):
    sentences, tags = corpus()
    monkeypatch.setenv("DISTILL_CACHE", "off")
    assert cache_folder() is None
    model = CountingFeaturizer()
    make_pieces(model, sentences, tags, cache=True)
    make_pieces(model, sentences, tags, cache=True)
    assert model.calls == 2
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    make_pieces(model, sentences, tags)  # fewer than CACHE_MIN_SENTENCES: not cached by default
    assert not (tmp_path / "pieces").exists()
    anonymous = CountingFeaturizer()
    del anonymous.vocab  # no tokenizer, no vocabulary: its featurizer cannot be told apart
    assert featurizer_key(anonymous) is None
    make_pieces(anonymous, sentences, tags, cache=True)
    assert not (tmp_path / "pieces").exists()


def test_default_caching_kicks_in_for_large_inputs(cache_dir, monkeypatch):
    monkeypatch.setattr(features, "CACHE_MIN_SENTENCES", 10)
    sentences, tags = corpus(30)
    make_pieces(CountingFeaturizer(), sentences, tags)
    assert len(list(cache_dir.glob("*.pkl"))) == 1
    make_pieces(CountingFeaturizer(), sentences)  # unlabelled text (prediction): not by default
    assert len(list(cache_dir.glob("*.pkl"))) == 1


@pytest.mark.parametrize("n,batch_size", [(0, 4), (1, 4), (97, 8), (100, 32), (5, 1)])
@pytest.mark.parametrize("seed", [None, 3])
def test_bucket_batches_cover_every_index_once(n, batch_size, seed):
    rng = random.Random(n)
    lengths = [rng.randint(1, 50) for _ in range(n)]
    batches = bucket_batches(lengths, batch_size, seed=seed, chunk_batches=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    assert all(0 < len(b) <= batch_size for b in batches)
    if seed is None:
        assert [lengths[i] for i in flat] == sorted(lengths)
    else:
        assert batches == bucket_batches(lengths, batch_size, seed=seed, chunk_batches=3)  # reproducible


def test_bucketing_cuts_padding_waste():
    rng = random.Random(0)
    lengths = [rng.randint(1, 120) for _ in range(3000)]
    order = list(range(3000))
    rng.shuffle(order)
    unbucketed = padding_waste(lengths, [order[i : i + 32] for i in range(0, 3000, 32)])
    assert unbucketed > 0.3
    assert padding_waste(lengths, bucket_batches(lengths, 32, seed=1)) < 0.1
    assert padding_waste(lengths, bucket_batches(lengths, 32)) < 0.03
    assert padding_waste([1, 2, 3, 4], [[0, 3], [1, 2]]) == pytest.approx(1 - 10 / 14)


def test_bert_encode_words_matches_in_sentence_tokenization(tiny_backbone, tiny_dataset_kwargs):
    """The per-distinct-word table gives exactly the ids whole-sentence tokenization gives,
    including added (extension) tokens, [UNK] and characters the tokenizer drops."""
    from distill.data import load_dataset
    from teachers.bert_crf import build_teacher

    ds = load_dataset(**tiny_dataset_kwargs)
    model = build_teacher(ds.labels, ds.train.tokens, backbone=str(tiny_backbone))
    assert model.meta["vocabulary"]["added"] > 0
    sentences = ds.train.tokens + ds.test.tokens + [["germans", "said", "\u200b", "zzz", "e.g."]]
    tok, unk = model.tokenizer, model.tokenizer.unk_token_id
    enc = tok(sentences, is_split_into_words=True, add_special_tokens=False)
    expected = []
    for i, s in enumerate(sentences):
        per = [[] for _ in s]
        for tid, w in zip(enc["input_ids"][i], enc.word_ids(i)):
            per[w].append(tid)
        expected.append([p or [unk] for p in per])
    assert model.encode_words(sentences) == expected
    pieces = make_pieces(model, sentences, cache=False)
    assert all(piece_length(p) == len(p.feature["input_ids"]) for p in pieces)
    assert featurizer_key(model) is not None
