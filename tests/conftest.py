"""Shared fixtures: tiny corpora from tests/resources and a tiny BERT backbone built
from a small config (2 layers, hidden 32) with a WordPiece vocabulary of its own.
Nothing is downloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESOURCES = Path(__file__).parent / "resources"


class CliResult(NamedTuple):
    """What a user of one ``distill`` command sees: its exit status, stdout and stderr."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """The non-blank lines of stderr (an error is the last)."""
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run the real ``distill`` entry point in-process, as a user would: ``run(argv)`` (without
    the program name) -> :class:`CliResult` ``(code, out, err)``, the status 0 when ``main()``
    returns and the ``SystemExit`` status when it exits; checks no traceback was shown."""
    from distill.cli import main

    def run(argv: list[str]) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["distill", *argv])
        monkeypatch.delenv("DISTILL_DEBUG", raising=False)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = 0 if e.code is None else e.code
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err[-3000:]
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def resources() -> Path:
    return RESOURCES


@pytest.fixture(scope="session")
def tiny_dataset_kwargs(resources) -> dict:
    """``load_dataset`` kwargs for the tiny MSRA-format corpus (40 train, 20 test sentences)."""
    return {"train": resources / "msra_train.txt", "test": resources / "msra_test.txt", "fmt": "msra"}


def make_tiny_backbone(folder: Path, chars: str = "", hidden: int = 32, layers: int = 2) -> Path:
    """Write a randomly initialised tiny BERT and a fast WordPiece tokenizer to ``folder``.

    Its vocabulary holds the special tokens, ASCII letters and digits, a few English
    words, and ``chars`` (so tests can leave some characters out to exercise [UNK]
    and vocabulary extension).
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = ["the", "said", "european", "german", "##ing", "."]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789,;:!?'\"-()")
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters] + words))
    vocab += [c for c in dict.fromkeys(chars) if c not in vocab]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory, resources) -> Path:
    """A tiny BERT whose vocabulary knows about half of the tiny corpus's characters."""
    from distill.data import read_msra

    corpus = read_msra(resources / "msra_train.txt")
    chars = sorted({c for s in corpus.tokens for c in s})
    return make_tiny_backbone(tmp_path_factory.mktemp("backbone"), "".join(chars[::2]))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_backbone, tiny_dataset_kwargs) -> Path:
    """A tiny BERT-CRF teacher trained for a few steps on the tiny corpus (a model folder)."""
    from distill.train import TrainConfig
    from teachers.train import TeacherConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "model"
    train_teacher(out=out, dataset=tiny_dataset_kwargs, config=TeacherConfig(backbone=str(tiny_backbone)),
                  train_config=TrainConfig(epochs=2, batch_size=8, lr=1e-3, embedding_lr=1e-3, head_lr=1e-2,
                                           checkpoint_minutes=0), quiet=True)
    return out


SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def make_sp_backbone(folder: Path, sentences, hidden: int = 32) -> Path:
    """A tiny BERT with an XLM-R-style Unigram tokenizer: every character, ``▁c`` for
    every other character, the 30 commonest character bigrams and a lone ``▁``, so
    natural segmentation gives multi-character pieces and lone-``▁`` starts."""
    import unicodedata
    from collections import Counter

    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from teachers.bert_crf import METASPACE

    chars = sorted({unicodedata.normalize("NFKC", c) for s in sentences for w in s for c in w}
                   | set("abcdefghijklmnopqrstuvwxyz"))
    bigrams = Counter("".join(s)[i : i + 2] for s in sentences for i in range(len("".join(s)) - 1))
    pieces = [(t, 0.0) for t in SPECIALS] + [(METASPACE, -2.0)]
    pieces += [(c, -6.0) for c in chars] + [(METASPACE + c, -5.0) for c in chars[::2]]
    pieces += [(b, -4.0) for b, _ in bigrams.most_common(30)] + [(METASPACE + "the", -3.0), ("ing", -4.0)]
    pieces = list(dict((p, s) for p, s in pieces).items())
    tok = Tokenizer(models.Unigram(pieces, unk_id=3))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(pieces), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=1)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def corpus(tiny_dataset_kwargs):
    """The tiny MSRA-format corpus, loaded."""
    from distill.data import load_dataset

    return load_dataset(**tiny_dataset_kwargs)


@pytest.fixture
def half_right(monkeypatch, corpus):
    """``with half_right() as f1:`` every model "predicts" the tiny test set's gold tags with the
    entities of its second half left out (all O); ``f1`` is the entity-level F1 that scores,
    counted here: precision 1, recall k / n, so F1 = 2k / (n + k)."""
    from contextlib import contextmanager

    import distill.evaluate

    gold = corpus.test
    half = len(gold) // 2
    made = {tuple(s): list(t) if i < half else ["O"] * len(t) for i, (s, t) in enumerate(zip(gold.tokens, gold.tags))}
    assert len(made) == len(gold)
    n = sum(tag.startswith("B-") for tags in gold.tags for tag in tags)
    k = sum(tag.startswith("B-") for tags in gold.tags[:half] for tag in tags)
    assert 0 < k < n

    @contextmanager
    def predictions():
        with monkeypatch.context() as m:
            m.setattr(distill.evaluate, "predict_tags", lambda model, sentences, *a, **kw: [made[tuple(s)] for s in sentences])
            yield 2 * k / (n + k)

    return predictions


@pytest.fixture(scope="session")
def sp_backbone(tmp_path_factory, corpus) -> Path:
    """A tiny BERT with an XLM-R-style SentencePiece (Unigram) tokenizer over the tiny corpus."""
    return make_sp_backbone(tmp_path_factory.mktemp("sp") / "backbone", corpus.train.tokens)
