import json

import pytest

from distill.data import load_dataset, read_conll, read_corpus, read_jsonl, read_msra, read_twofile, split_long, split_text
from distill.errors import DataError, DistillError


def test_msra_reader_crlf_and_bmes(resources):
    c = read_msra(resources / "msra_train.txt")
    assert len(c) == 40
    assert c.scheme == "BMES" and c.char_level
    assert all(len(t) == 1 for s in c.tokens for t in s)
    assert not any(t.endswith("\r") for s in c.tags for t in s)
    assert {t[:2] for s in c.tags for t in s} <= {"O", "B-", "I-"}  # converted to BIO
    assert c.entity_types() == ["LOC", "ORG", "PER"]


def test_conll_reader_skips_docstart_and_keeps_last_column(resources):
    c = read_conll(resources / "tiny.conll")
    assert c.tokens[0][:3] == ["EU", "rejects", "German"]
    assert c.tags[0][:3] == ["B-ORG", "O", "B-MISC"]
    assert len(c) == 5 and c.scheme == "BIO"


def test_conll_tabs_and_spaces(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("Paris\tB-LOC\nis  O\n\nJohn\tI-PER\n")
    c = read_conll(p)
    assert c.tokens == [["Paris", "is"], ["John"]]
    assert c.scheme == "BIO"


def test_iob1_input_detected_and_converted(tmp_path):
    p = tmp_path / "iob1.conll"
    p.write_text("John I-PER\nSmith I-PER\nMary B-PER\nsaw O\nParis I-LOC\n")
    c = read_conll(p)
    assert c.scheme == "IOB1"
    assert c.tags[0] == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]


def test_jsonl_reader(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"tokens": ["Anna", "lives", "in", "Rome"], "tags": ["S-PER", "O", "O", "S-LOC"]}) + "\n")
    c = read_jsonl(p)
    assert c.scheme == "BIOES" and c.tags == [["B-PER", "O", "O", "B-LOC"]]


def test_twofile_reader(tmp_path):
    t, g = tmp_path / "s.txt", tmp_path / "s.tags"
    t.write_text("Anna lives in Rome\nHi\n")
    g.write_text("B_PER O O B_LOC\nO\n")
    c = read_twofile(t, g)
    assert c.tokens == [["Anna", "lives", "in", "Rome"], ["Hi"]]
    assert c.separator == "_" and c.tags[0] == ["B-PER", "O", "O", "B-LOC"]


@pytest.mark.parametrize("content,line,needle", [
    (b"Paris B-LOC\nis\n", 2, "at least 2 columns"),
    (b"Paris B-LOC\nis X-FOO\n", 2, "fits no scheme"),
    # the first bad tag in file order, counting blank and -DOCSTART- lines; a later bad tag is not it
    (b"-DOCSTART- O\n\nParis B-LOC\n\nis O\nfine Z-BAR\nthen X-FOO\n", 6, "'Z-BAR' fits no scheme"),
    (b"", 1, "empty"),
    (b"  \n\n", 1, "empty"),
    (b"Paris B-LOC\n\xff\xfe O\n", 2, "UTF-8"),
])
def test_conll_bad_input_names_file_and_line(tmp_path, content, line, needle):
    p = tmp_path / "bad.conll"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_conll(p)
    assert e.value.line == line
    assert str(e.value).startswith(f"{p}:{line}:")
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_jsonl_bad_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: 2 tokens but 1 tags"):
        read_jsonl(p)
    p.write_text('{"tokens": ["a"], "tags": ["O"]}\n\n{"tokens": ["a", "b"], "tags": ["O", "B+X"]}\n')
    with pytest.raises(DataError, match=r"d.jsonl:3: tag 'B\+X' fits no scheme"):
        read_jsonl(p)
    p.write_text('{"tokens": ["a"], "tags": ["O"]}\nnot json\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: invalid JSON"):
        read_jsonl(p)


def test_twofile_mismatched_line_counts(tmp_path):
    t, g = tmp_path / "s.txt", tmp_path / "s.tags"
    t.write_text("a b\nc\nd\n")
    g.write_text("O O\nO\n")
    with pytest.raises(DataError, match="2 lines of tags but 3 lines of text"):
        read_twofile(t, g)
    g.write_text("O O\nO O\nO\n")
    with pytest.raises(DataError, match=r"s.tags:2: 2 tags, expected 1 \(one per space-separated token\) on line 2 of "):
        read_twofile(t, g)


def test_twofile_unspaced_text_is_read_per_character(tmp_path):
    """People's Daily style: sentences without spaces, one tag per character."""
    t, g = tmp_path / "pd.txt", tmp_path / "pd.tags"
    t.write_text("北京欢迎你\n我爱北京\n")
    g.write_text("B_LOC I_LOC O O O\nO O B_LOC I_LOC\n")
    c = read_twofile(t, g)
    assert c.tokens == [list("北京欢迎你"), list("我爱北京")]
    assert c.tags[0] == ["B-LOC", "I-LOC", "O", "O", "O"]
    assert c.char_level and c.separator == "_"


def test_twofile_is_character_level_only_when_every_line_is_read_per_character(tmp_path):
    t, g = tmp_path / "mixed.txt", tmp_path / "mixed.tags"
    t.write_text("北京欢迎你\nAnna lives in Rome\nHello\n")
    g.write_text("B-LOC I-LOC O O O\nB-PER O O B-LOC\nO\n")
    c = read_twofile(t, g)
    assert c.tokens == [list("北京欢迎你"), ["Anna", "lives", "in", "Rome"], ["Hello"]]
    assert not c.char_level
    t.write_text("北 京 欢 迎 你\n")  # spaced characters are tokens, as written
    g.write_text("B-LOC I-LOC O O O\n")
    c = read_twofile(t, g)
    assert c.tokens == [list("北京欢迎你")] and not c.char_level


@pytest.mark.parametrize("text, tags, expected", [
    ("北京欢迎你", "B_LOC I_LOC O O", "4 tags, expected 5 (one per character of unspaced text) or 1 (the line as one token)"),
    ("Anna lives in Rome", "B-PER O O", "3 tags, expected 4 (one per space-separated token)"),
])
def test_twofile_count_mismatch_says_which_count_disagreed(tmp_path, text, tags, expected):
    t, g = tmp_path / "s.txt", tmp_path / "s.tags"
    t.write_text("我\n" + text + "\n")
    g.write_text("O\n" + tags + "\n")
    with pytest.raises(DataError) as e:
        read_twofile(t, g)
    assert str(e.value) == f"{g}:2: {expected} on line 2 of {t}"


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_corpus(tmp_path / "nope.conll")
    with pytest.raises(DistillError, match="unknown format"):
        read_corpus(tmp_path / "nope.conll", fmt="xml")


def test_dev_split_is_deterministic_and_disjoint(resources, tiny_dataset_kwargs):
    a = load_dataset(**tiny_dataset_kwargs)
    b = load_dataset(**tiny_dataset_kwargs)
    assert a.fingerprint() == b.fingerprint()
    assert len(a.train) + len(a.dev) == 40
    assert not {tuple(s) for s in a.train.tokens} & {tuple(s) for s in a.dev.tokens}
    assert a.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_builtin_msra_is_the_default():
    ds = load_dataset(max_train=100, max_dev=10, max_test=10)
    assert ds.name == "msra" and ds.info["scheme"] == "BMES"
    assert (len(ds.train), len(ds.dev), len(ds.test)) == (100, 10, 10)
    assert ds.fingerprint() == load_dataset(max_train=100, max_dev=10, max_test=10).fingerprint()


def test_builtin_msra_with_the_users_dev_or_test_file(resources):
    """`distill eval MODEL --test FILE` (no --train) evaluates on FILE, not on the MSRA test set."""
    own = read_msra(resources / "msra_test.txt")
    ds = load_dataset(test=resources / "msra_test.txt", max_train=50)
    assert ds.name == "msra" and ds.test.tokens == own.tokens and len(ds.dev) == 2000
    whole = load_dataset(dev=resources / "msra_test.txt")
    assert whole.dev.tokens == own.tokens and len(whole.test) == 5000  # no dev carved: all of train kept
    assert len(whole.train) == len(load_dataset().train) + 2000


def test_split_text():
    assert split_text("我 爱北京", True) == ["我", "爱", "北", "京"]
    assert split_text("I love  Paris", False) == ["I", "love", "Paris"]


def test_split_long_prefers_punctuation_and_covers_everything():
    tokens = list("今天天气很好，我们去公园玩。然后回家")
    pieces = split_long(tokens, [1] * len(tokens), 10)
    assert pieces[0] == (0, 7)  # cut after the comma
    assert pieces[0][0] == 0 and pieces[-1][1] == len(tokens)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert all(sum(1 for _ in range(s, e)) <= 10 for s, e in pieces)


def test_split_long_without_punctuation_cuts_at_limit_and_handles_huge_words():
    tokens = ["w"] * 25
    assert split_long(tokens, [1] * 25, 10) == [(0, 10), (10, 20), (20, 25)]
    # a word longer than the limit still gets a piece of its own
    assert split_long(["a", "b", "c"], [1, 50, 1], 10) == [(0, 1), (1, 2), (2, 3)]


def test_load_dataset_reads_each_part_with_its_tag_file(resources):
    twofile = resources / "twofile"
    ds = load_dataset(train=twofile / "zh_train.txt", tags_file=twofile / "zh_train.tags",
                      dev=twofile / "zh_test.txt", dev_tags_file=twofile / "zh_test.tags",
                      test=twofile / "zh_test.txt", test_tags_file=twofile / "zh_test.tags", fmt="twofile")
    assert (len(ds.train), len(ds.dev), len(ds.test)) == (16, 8, 8)
    assert ds.train.char_level and ds.train.separator == "_" and ds.train.tokens[0][:2] == ["农", "历"]
    assert ds.info["train_tags_file"] == str(twofile / "zh_train.tags")
    # a tag file alone says the format: --format auto reads the same data
    auto = load_dataset(train=twofile / "zh_train.txt", tags_file=twofile / "zh_train.tags",
                        test=twofile / "zh_test.txt", test_tags_file=twofile / "zh_test.tags")
    assert sorted(auto.train.tokens + auto.dev.tokens) == sorted(ds.train.tokens) and auto.test.tokens == ds.test.tokens
    # beside the built-in MSRA data
    assert load_dataset(test=twofile / "zh_test.txt", test_tags_file=twofile / "zh_test.tags",
                        max_train=5).test.tokens == ds.test.tokens


@pytest.mark.parametrize("kwargs, message", [
    ({"train": "zh_train.txt", "fmt": "twofile"}, "--format twofile: --train {r}/zh_train.txt needs its tag file (--tags-file FILE)"),
    ({"train": "zh_train.txt", "tags_file": "zh_train.tags", "test": "zh_test.txt", "fmt": "twofile"},
     "--format twofile: --test {r}/zh_test.txt needs its tag file (--test-tags-file FILE)"),
    ({"train": "zh_train.txt", "tags_file": "zh_train.tags", "dev_tags_file": "zh_test.tags"},
     "--dev-tags-file {r}/zh_test.tags: give --dev too, the text file these tags belong to"),
    ({"train": "zh_train.txt", "tags_file": "zh_train.tags", "fmt": "conll"},
     "{r}/zh_train.tags: a tag file is for --format twofile, not conll"),
])
def test_load_dataset_tag_file_errors_name_the_option(resources, kwargs, message):
    r = resources / "twofile"
    kwargs = {k: (r / v if k != "fmt" else v) for k, v in kwargs.items()}
    with pytest.raises(DistillError) as e:
        load_dataset(**kwargs)
    assert str(e.value) == message.format(r=r)
