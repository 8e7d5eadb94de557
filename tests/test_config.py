"""The typed configs (distill/config.py): the dataset's JSON form is exactly the dict model
folders and pipeline records hold, bad values are one-line errors saying expected vs got,
and a real bug's ValueError still reaches the user as a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli.common import data_config
from distill.config import ConfigError, DataConfig
from distill.errors import DistillError

# dataset dicts as today's folders and records hold them
RECORDED = [
    {"name": "msra", "train": None, "dev": None, "test": None, "fmt": "auto", "max_train": 2000, "max_dev": 200,
     "max_test": None},  # a pipeline's training data
    {"name": "msra", "train": "a.txt", "dev": None, "test": "b.txt", "fmt": "twofile", "max_train": None,
     "max_dev": None, "max_test": None, "tags_file": "a.tags", "test_tags_file": "b.tags"},  # distill student
    {"name": None, "train": "t.tsv", "dev": None, "test": None, "fmt": "auto", "max_train": None, "max_dev": None,
     "max_test": None, "task": "classify"},  # a user's classification files
    {"name": "msra"},  # the report's default
    {"train": "x.txt", "test": "y.txt", "fmt": "msra"},  # a caller's own dict
    {"name": "msra", "max_train": 10, "dev_size": 4},
]


@pytest.mark.parametrize("recorded", RECORDED)
def test_json_round_trip_keeps_the_recorded_dict(recorded):
    data = DataConfig.from_json(recorded)
    assert data.to_json() == recorded and list(data.to_json()) == list(recorded)
    assert DataConfig.of(data) is data and DataConfig.of(recorded) == data


def test_cli_options_give_the_dicts_recorded_before():
    """What ``dataset_kwargs`` / ``text_dataset_kwargs`` built: the eight shared keys, tag files
    only when given, and ``task`` only for the user's own classification files."""
    base = dict(train=None, dev=None, test=None, fmt="auto", max_train=None, max_dev=None, max_test=None)
    assert data_config("msra", None, None, None, "auto").to_json() == {"name": "msra", **base}
    tagged = data_config("msra", Path("a.txt"), None, None, "auto", 5, tags_file=Path("a.tags")).to_json()
    assert tagged == {"name": "msra", **dict(base, train="a.txt", max_train=5), "tags_file": "a.tags"}
    assert data_config("msra", None, None, None, "auto", task="classify").to_json() == {"name": "sentiment", **base}
    own = data_config("msra", Path("t.tsv"), None, None, "auto", task="classify").to_json()
    assert own == {"name": None, **dict(base, train="t.tsv"), "task": "classify"}
    assert list(own) == ["name", "train", "dev", "test", "fmt", "max_train", "max_dev", "max_test", "task"]


def test_replace_and_given():
    data = DataConfig.from_json({"name": "msra"})
    assert data.replace(max_test=3).to_json() == {"name": "msra", "max_test": 3}
    assert DataConfig(max_train=5).given().to_json() == {"name": "msra", "fmt": "auto", "max_train": 5}
    assert DataConfig.from_json({"train": "x.txt"}).builtin is None
    assert DataConfig.from_json({}).builtin == "msra" and DataConfig(name="sentiment").builtin == "sentiment"
    assert DataConfig(name="sentiment").is_text and DataConfig(name=None, train="t.tsv", task="classify").is_text
    assert not DataConfig().is_text


@pytest.mark.parametrize("fields, message", [
    (dict(fmt="xml"), "--format must be one of auto, conll, msra, jsonl, twofile, tsv, csv, txt, got 'xml'"),
    (dict(max_train=0), "--max-train must be an integer >= 1 or None, got 0"),
    (dict(max_test=2.5), "--max-test must be an integer >= 1 or None, got 2.5"),
    (dict(task="tag"), "a dataset's task must be 'classify' or none (tagging), got 'tag'"),
    (dict(dev_size=0), "dev_size must be a number > 0"),
])
def test_bad_values_say_expected_and_got(fields, message):
    with pytest.raises(ConfigError) as e:
        DataConfig(**fields)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, DistillError)


def test_unknown_recorded_keys_are_refused():
    with pytest.raises(ConfigError, match="a dataset's options must be some of name, .*got 'size'"):
        DataConfig.from_json({"name": "msra", "size": 3})
    with pytest.raises(ConfigError, match="a dict of dataset options, got .list."):
        DataConfig.from_json(["msra"])


def test_a_config_error_is_one_line_on_the_command_line(run_cli, tmp_path):
    r = run_cli(["teacher", "train", "--out", str(tmp_path / "t"), "--max-train", "0"])
    assert r.code == 1 and r.err_lines == ["error: --max-train must be an integer >= 1 or None, got 0"]
    assert not (tmp_path / "t").exists()


def test_a_bug_s_value_error_is_not_swallowed_by_main(monkeypatch):
    """main() prints a DistillError as one line; any other ValueError is a bug and keeps its traceback."""
    import sys

    import distill.cli as cli

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "app", bug)
    monkeypatch.setattr(sys, "argv", ["distill", "student"])
    with pytest.raises(ValueError, match="a bug"):
        cli.main()
