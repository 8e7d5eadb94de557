"""Bad input: the readers and ``distill predict`` fed random and mutated files either
parse or raise the project's own DistillError (one line) — never another exception.
Plus three edge cases of predict: a 10,000-character line, text the vocabulary does
not know, empty input."""

from __future__ import annotations

import io
import json
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from distill.data import Corpus, read_conll, read_corpus, read_jsonl, read_msra, read_twofile
from distill.errors import DistillError
from distill.predict import predict_file

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])
BIO = re.compile(r"O|[BI]-.+")
OUTPUT_TAG = re.compile(r"O|[BIMES]-.+")  # predictions come back in the model's scheme (BMES for MSRA)

# --- strategies: text that looks like a corpus, then damaged -----------------------------

ODD_SPACE = ["\u3000", "\xa0", "\u2028", "\u2029", "\x85", "\x1c", "\x1e", "\u200b", "\ufeff", "\x0b", "\x0c"]
TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-LOC", "M-ORG", "B-LOC", "I-ORG", "B_PER", "PER-B", "X-PER", "B-", "I-",
        "-", "O-PER", "b-per", "B-PER-X", "I-LOC", "E-ORG", "S-", "B--", "\x00"]
any_char = st.characters(exclude_categories=())  # every code point, lone surrogates included
odd_token = st.one_of(st.sampled_from(["-DOCSTART-", "\x00", "é", "👍", "[UNK]", "{", '"', "\u200b"]),
                      st.text(any_char, min_size=1, max_size=6))
plain_token = st.one_of(st.sampled_from(["中", "国", "王", "a", "EU", "1996", "\x00", "é", "👍", "{"]),
                        st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=4))
odd_space = st.sampled_from([" ", "\t", "  ", *ODD_SPACE])
plain_space = st.sampled_from([" ", "\t", " \t", "\u3000"])
odd_tag = st.one_of(st.sampled_from(TAGS), st.text(any_char, max_size=4))
plain_tag = st.sampled_from(["O", "O", "O", "B-PER", "I-PER", "E-PER", "S-LOC", "M-ORG", "B-LOC", "I-LOC"])


@st.composite
def line(draw, style: str, damaged: bool) -> str:
    """One line of a CoNLL-like or JSONL-like file; ``damaged`` lines may be anything."""
    token, space, tag = (odd_token, odd_space, odd_tag) if damaged else (plain_token, plain_space, plain_tag)
    kinds = {"conll": ["pair"] * 6 + ["cols", "empty", "empty", "space"], "jsonl": ["json"] * 8 + ["empty", "space"]}[style]
    if damaged:
        kinds = kinds + ["token", "long", "text", "pair" if style == "jsonl" else "json"]
    kind = draw(st.sampled_from(kinds))
    if kind == "pair":
        return draw(token) + draw(space) + draw(tag)
    if kind == "cols":  # CoNLL with middle columns
        return draw(space).join([draw(token), "NN", "B-NP", draw(tag)])
    if kind == "token":  # a missing column
        return draw(token)
    if kind == "empty":
        return ""
    if kind == "space":
        return "".join(draw(st.lists(space, min_size=1, max_size=4)))
    if kind == "long":
        return draw(token) * draw(st.integers(1000, 12000)) + " O"
    if kind == "json":
        toks = draw(st.lists(token, max_size=4))
        n_tags = len(toks) + (draw(st.sampled_from([0, 0, 0, 1])) if damaged else 0)
        obj = {"tokens": toks, "tags": draw(st.lists(tag, min_size=n_tags, max_size=n_tags))}
        if damaged:
            obj = draw(st.sampled_from([obj, obj, {"tokens": toks}, toks, {"tokens": "a", "tags": "O"}]))
        text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
        return text[: draw(st.integers(0, len(text)))] if damaged and draw(st.booleans()) else text
    return draw(st.text(any_char, max_size=40))


@st.composite
def corpus_bytes(draw, damaged: bool) -> bytes:
    """A CoNLL- or JSONL-like file with random line ends (BOM or not); a damaged one also has
    odd lines, a wrong encoding, or truncated, NUL-infested or flipped bytes."""
    style = draw(st.sampled_from(["conll", "jsonl"]))
    lines = draw(st.lists(line(style, damaged and draw(st.booleans())), min_size=1, max_size=20))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    text = "".join(l + (draw(st.sampled_from(["\n", "\r\n", "\r"])) if eol == "mixed" else eol) for l in lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"] + (["utf-16", "latin-1", "gb18030"] if damaged else [])))
    data = text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf-8") else "replace")
    mutation = draw(st.sampled_from(["none", "truncate", "nul", "flip"])) if damaged else "none"
    if data and mutation == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif mutation == "nul":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + b"\x00" + data[i:]
    elif data and mutation == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    return data


files = st.one_of(corpus_bytes(damaged=False), corpus_bytes(damaged=True), st.binary(max_size=600))


def _check_corpus(c: Corpus) -> None:
    assert isinstance(c, Corpus) and len(c.tokens) == len(c.tags) > 0
    for toks, tags in zip(c.tokens, c.tags):
        assert len(toks) == len(tags) > 0
        assert all(isinstance(t, str) and t for t in toks)
        assert all(BIO.fullmatch(t) for t in tags), tags


def _parses_or_distill_error(fn, *args, **kwargs):
    name = kwargs.get("fmt", getattr(fn, "__name__", "?"))
    try:
        result = fn(*args, **kwargs)
    except DistillError as e:
        assert str(e) and "\n" not in str(e) and "\r" not in str(e), repr(str(e))
        event(f"{name}: refused: {re.sub(r'^.*?: ', '', str(e))[:18]}")
        return None
    event(f"{name}: parsed")
    return result


# --- readers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(SETTINGS, max_examples=200)
@given(data=files, tags_data=files)
def test_readers_parse_or_raise_distill_error(scratch, data, tags_data):
    path, tags_path = scratch / "corpus.txt", scratch / "tags.txt"
    path.write_bytes(data)
    tags_path.write_bytes(tags_data)
    jsonl = scratch / "corpus.jsonl"
    jsonl.write_bytes(data)
    for fn, args, kwargs in [
        (read_conll, (path,), {}), (read_msra, (path,), {}), (read_jsonl, (path,), {}),
        (read_twofile, (path, tags_path), {}), (read_twofile, (path, path), {}),
        (read_corpus, (path,), {}), (read_corpus, (jsonl,), {}), (read_corpus, (path,), {"fmt": "conll"}),
        (read_corpus, (path,), {"fmt": "twofile", "tags_file": tags_path}),
    ]:
        corpus = _parses_or_distill_error(fn, *args, **kwargs)
        if corpus is not None:
            _check_corpus(corpus)


@pytest.mark.parametrize("data, message", [
    (b"[" * 100_000 + b"\n", "JSON nested too deeply"),  # was a RecursionError
    (b'{"tokens": ["\\ud800"], "tags": ["O"]}\n', "lone surrogate"),  # was accepted, then crashed the tokenizer
    ("a O\n".encode("utf-16"), "not valid UTF-8"),
    ("\ufeff \n\r\n\u3000\n".encode(), "file is empty"),  # BOM and whitespace only
])
def test_reader_cases_found_by_fuzzing(scratch, data, message):
    path = scratch / "case.jsonl"
    path.write_bytes(data)
    with pytest.raises(DistillError, match=rf"^{re.escape(str(path))}:1: .*{message}"):
        read_corpus(path)


def test_predict_refuses_text_that_is_not_unicode(tiny_teacher):
    bad = b"ab\xffc".decode("utf-8", errors="surrogateescape")  # how Python passes non-UTF-8 argv bytes
    with pytest.raises(DistillError, match=r"TEXT is not valid UTF-8 \(character 3\)"):
        _predict(tiny_teacher, text=bad)


@pytest.mark.parametrize("name", ["missing.txt", "folder"])
def test_readers_refuse_missing_files_and_folders(scratch, name):
    (scratch / "folder").mkdir(exist_ok=True)
    for fn in (read_conll, read_msra, read_jsonl, read_corpus):
        with pytest.raises(DistillError, match=re.escape(str(scratch / name))):
            fn(scratch / name)


# --- predict ---------------------------------------------------------------------------


def _predict(model, **kwargs) -> str:
    buf = io.StringIO()
    predict_file(model=model, stdout=buf, **kwargs)
    return buf.getvalue()


@SETTINGS
@given(text=st.one_of(st.text(any_char, max_size=80), st.sampled_from(ODD_SPACE).map(lambda s: s * 3),
                      st.builds(lambda c, n: c * n, st.sampled_from(["中", "a", "\x00", "👍"]), st.integers(1, 3000))),
       output_format=st.sampled_from(["conll", "json"]))
def test_predict_raw_text_tags_every_character_or_refuses(tiny_teacher, text, output_format):
    try:
        out = _predict(tiny_teacher, text=text, output_format=output_format)
    except DistillError as e:
        assert "\n" not in str(e)
        with pytest.raises(UnicodeEncodeError):  # the only text predict refuses: not valid Unicode
            text.encode("utf-8")
        return
    chars = [c for c in text if not c.isspace()]
    if output_format == "conll":
        lines = [l for l in out.split("\n") if l]
        assert [l.rsplit("\t", 1)[0] for l in lines] == chars
        assert all(OUTPUT_TAG.fullmatch(l.rsplit("\t", 1)[1]) for l in lines)
    elif chars:
        assert json.loads(out)["tokens"] == chars
    else:
        assert out == ""


@SETTINGS
@given(data=files, labelled=st.booleans(), to_file=st.booleans())
def test_predict_files_parse_or_raise_distill_error(tiny_teacher, scratch, data, labelled, to_file):
    path = scratch / "input.txt"
    path.write_bytes(data)
    out = scratch / "predicted.txt"
    out.unlink(missing_ok=True)
    try:
        n = predict_file(model=tiny_teacher, input=str(path), labelled=labelled, stdout=io.StringIO(),
                         out=out if to_file else None, output_format="json" if to_file else "conll")
    except DistillError as e:
        assert "\n" not in str(e)
        assert not out.exists()  # nothing half-written
        event("refused")
        return
    event(f"tagged {'labelled' if labelled else 'raw'}")
    assert n >= 0
    if to_file:
        assert len([l for l in out.read_text(encoding="utf-8").split("\n") if l]) == n


def test_predict_a_10000_character_line_tags_every_character(tiny_teacher):
    text = ("王玉梅在北京。" * 1500)[:10_000]
    lines = _predict(tiny_teacher, text=text).splitlines()
    assert len(lines) == 10_000
    assert "".join(l.split("\t")[0] for l in lines) == text


def test_predict_text_the_vocabulary_does_not_know(tiny_teacher):
    from distill.modeling import load_model

    model = load_model(tiny_teacher)
    text = "가나다라마바사아자차카타파하"
    unk = model.tokenizer.unk_token_id
    assert model.encode_words([list(text)]) == [[[unk]] * len(text)]  # every character is [UNK]
    lines = _predict(tiny_teacher, text=text).splitlines()
    assert [l.split("\t")[0] for l in lines] == list(text)
    assert all(OUTPUT_TAG.fullmatch(l.split("\t")[1]) for l in lines)


def test_predict_empty_input_prints_nothing(tiny_teacher, scratch):
    empty = scratch / "empty.txt"
    empty.write_bytes(b"")
    blank = scratch / "blank.txt"
    blank.write_text(" \n\n\u3000\t\n", encoding="utf-8")
    for kwargs in [dict(text=""), dict(text="   "), dict(input=str(empty)), dict(input=str(blank))]:
        for fmt in ("conll", "json"):
            assert _predict(tiny_teacher, output_format=fmt, **kwargs) == ""
