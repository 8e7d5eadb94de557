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


# --- student configs -----------------------------------------------------------------


def test_student_configs_hold_their_architecture_defaults():
    from students.classify import CLASSIFY_BUILDERS
    from students.train import STUDENTS

    assert STUDENTS["bilstm-crf"].train_config().lr == 2e-3 and STUDENTS["bert-small"].train_config().epochs == 5
    assert STUDENTS["bilstm-crf"].train_config(epochs=2, lr=None).epochs == 2
    assert CLASSIFY_BUILDERS["bert-small"].train_config().epochs == 3
    assert CLASSIFY_BUILDERS["bilstm"].train_config().clip == 5
    assert STUDENTS["bilstm-crf"]().hidden_size == 256 and CLASSIFY_BUILDERS["bilstm"]().hidden_size == 512
    assert STUDENTS["bert-small"]().num_layers == 3 and STUDENTS["bert-small"](layers=[0, 2]).num_layers == 2
    assert STUDENTS["bilstm-crf"].TEMPERATURE == 4.0 and CLASSIFY_BUILDERS["bilstm"].TEMPERATURE == 1.0


def test_student_params_are_recorded_as_before():
    """A tagger records every shape option as given; a classifier records those of other
    architectures as None and the BiLSTM's dropout as used."""
    from students.classify import BertSmallClassifierConfig, BiLSTMClassifierConfig
    from students.train import BertSmallConfig, BiLSTMCRFConfig

    shape = dict(embedding_dim=128, hidden_size=256, lstm_layers=1, dropout=None)
    assert BiLSTMCRFConfig().params() == {"num_layers": 3, "layers": None, **shape, "init_embeddings": False,
                                          "min_count": 2, "max_length": 512}
    assert list(BertSmallConfig(layers=[1]).params())[:2] == ["num_layers", "layers"]
    assert BertSmallConfig(layers=[1]).params()["num_layers"] == 1
    assert BiLSTMClassifierConfig().params() == {"num_layers": None, "layers": None, **dict(shape, hidden_size=512,
                                                 dropout=0.1), "min_count": 2, "max_length": 512}
    assert BertSmallClassifierConfig(dropout=0.2).params() == {
        "num_layers": 3, "layers": None, "embedding_dim": None, "hidden_size": None, "lstm_layers": None,
        "dropout": 0.2, "min_count": None, "max_length": None}


def test_bad_student_options_say_expected_and_got():
    from distill.config import TextTransferConfig, TransferConfig
    from students.classify import classifier_student_class
    from students.train import BiLSTMCRFConfig, student_class

    for make, message in [
        (lambda: BiLSTMCRFConfig(dropout=1.5), "--dropout must be in [0, 1), got 1.5"),
        (lambda: TransferConfig(ratio=2.0),
         "--transfer-ratio needs a transfer set (--transfer FILE or msra:unlabelled)"),
        (lambda: TransferConfig(("a.txt",), 0), "--transfer-ratio must be > 0 (transfer sentences per labelled "
                                                "sentence), got 0"),
        (lambda: TextTransferConfig(("a.txt",), -1.0), "(transfer texts per labelled text), got -1.0"),
        (lambda: student_class("transformer"), "unknown student architecture 'transformer'; expected one of "
                                               "bilstm-crf, bert-small"),
        (lambda: classifier_student_class("bilstm-crf"), "--arch bilstm-crf is a tagging student"),
    ]:
        with pytest.raises(ConfigError) as e:
            make()
        assert message in str(e.value)


# --- teacher configs -----------------------------------------------------------------


def test_teacher_identity_is_recorded_as_before():
    from distill.train import TrainConfig
    from teachers.train import ClassifierTeacherConfig, TeacherConfig

    cfg = TrainConfig()
    tagger = TeacherConfig().identity({"name": "msra"}, cfg)
    assert list(tagger) == ["backbone", "head", "extend_vocab", "random_init", "num_layers", "freeze_layers", "dropout",
                            "alignment", "prune_vocab", "max_length", "dataset", "train_config"]
    assert tagger["max_length"] == 128 and tagger["dataset"] == {"name": "msra"} and "decoding" not in tagger
    classifier = ClassifierTeacherConfig(max_length=64).identity(DataConfig(name="sentiment"), cfg)
    assert list(classifier) == ["task", "backbone", "max_length", "dropout", "prune_vocab", "random_init", "num_layers",
                                "dataset", "train_config"]
    assert classifier["max_length"] == 64 and classifier["dataset"]["name"] == "sentiment"
    assert TeacherConfig.LR == 2e-4 and ClassifierTeacherConfig.LR == 1e-4 and ClassifierTeacherConfig().max_length == 256
    with pytest.raises(ConfigError, match="--decoding must be one of constrained, free, got 'best'"):
        TeacherConfig(decoding="best")
