"""The two-file format (a text file and a tag file) from the command line.

Every command that reads a labelled file takes the tag file of each of its data files
(``--tags-file`` for ``--train``, ``--dev-tags-file``, ``--test-tags-file``), and each is
run here on a tiny People's-Daily-style corpus (unspaced text, one ``B_LOC``-style tag
per character). ``predict --labelled`` on such input writes a tag file of the same form.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer

from distill.cli import app
from test_cli_errors import COMMANDS

TWOFILE = Path(__file__).parent / "resources" / "twofile"
TAG_OPTIONS = {"train": "--tags-file", "dev": "--dev-tags-file", "test": "--test-tags-file"}
FILES = {"train": "zh_train", "dev": "zh_test", "test": "zh_test"}  # 16 and 8 sentences


def _command(words: str):
    cmd = typer.main.get_command(app)
    for word in words.split():
        cmd = cmd.commands[word]
    return cmd


def _data(words: str) -> list[str]:
    """``--format twofile`` and every data file the command takes, each with its tag file."""
    names = {p.name for p in _command(words).params}
    args = ["--format", "twofile"]
    for part, option in TAG_OPTIONS.items():
        if part in names:
            args += [f"--{part}", str(TWOFILE / f"{FILES[part]}.txt"), option, str(TWOFILE / f"{FILES[part]}.tags")]
    return args


def _meta(folder: Path) -> dict:
    return json.loads((folder / "distill.json").read_text(encoding="utf-8"))["meta"]


def test_every_labelled_file_option_has_its_tag_file_option():
    missing = []
    for words, cmd in COMMANDS:
        opts = {o for p in cmd.params for o in p.opts}
        for part, option in TAG_OPTIONS.items():
            if f"--{part}" in opts and option not in opts:
                missing.append(f"{' '.join(words)}: --{part} without {option}")
        if "--labelled" in opts and "--tags-file" not in opts:
            missing.append(f"{' '.join(words)}: --labelled without --tags-file")
        for p in cmd.params:
            if "--format" in p.opts and "twofile" not in (p.help or ""):
                missing.append(f"{' '.join(words)}: --format help does not list twofile")
    assert not missing, "\n".join(missing)


def _tiny_profile():
    from distill.pipeline import Profile
    from distill.train import TrainConfig

    fast = TrainConfig(epochs=1, max_steps=1, batch_size=8, lr=1e-3, checkpoint_minutes=0)
    return Profile(name="quick", teacher=fast, bilstm=fast, bert_small=fast, student_layers=1, quantize=(),
                   prune=(), latency_sentences=2)


def _fake_report(*, run_dir, **kwargs):
    from distill.fileio import write_json

    write_json(Path(run_dir) / "report" / "report.json", {"models": []})


# command -> its options beyond the data (MODEL, BACKBONE, OUT, RUN stand for the tiny models
# and tmp folders), and a check that it read the two-file corpus
CASES = {
    "teacher train": (["--backbone", "BACKBONE", "--out", "OUT", "--epochs", "1", "--max-steps", "1",
                       "--batch-size", "8", "--checkpoint-minutes", "0"],
                      lambda out: _meta(out)["dataset"] == "zh_train" and _meta(out)["char_level"]
                      and _meta(out)["separator"] == "_"),
    "teacher eval": (["MODEL", "--out", "OUT"], lambda out: json.loads(out.read_text())["sentences"] == 8),
    "teacher emit": (["MODEL", "--out", "OUT"], lambda out: json.loads((out / "meta.json").read_text())["sentences"] == 16),
    "teacher adapt": (["--backbone", "BACKBONE", "--out", "OUT", "--steps", "1", "--batch-size", "8"],
                      lambda out: json.loads((out / "adapt.json").read_text())["text"]["sentences"] == 14
                      and json.loads((out / "adapt.json").read_text())["text"]["char_level"]),
    "student": (["--teacher", "MODEL", "--out", "OUT", "--emissions", "RUN/em", "--epochs", "1", "--max-steps", "1",
                 "--batch-size", "8", "--embedding-dim", "8", "--hidden-size", "8", "--checkpoint-minutes", "0"],
                lambda out: _meta(out)["dataset"] == "zh_train" and _meta(out)["char_level"]),
    "eval": (["MODEL", "--out", "OUT"], lambda out: json.loads(out.read_text())["sentences"] == 8),
    "prune": (["MODEL", "--out", "OUT", "--method", "heads", "--sparsity", "0.5"],
              lambda out: _meta(out)["params"]["dataset"]["tags_file"] == str(TWOFILE / "zh_train.tags")),
    "quantize int8": (["MODEL", "--out", "OUT", "--check", "100"], lambda out: _meta(out)["check"]["sentences"] == 8),
    "report": (["RUN", "--out", "OUT", "--latency-sentences", "2", "--warmup", "0", "--threads", "1", "--no-gpu"],
               lambda out: json.loads((out / "report.json").read_text())["dataset"]["test_sentences"] == 8),
    "run": (["OUT", "--backbone", "BACKBONE", "--quiet"],
            lambda out: json.loads((out / "profile.json").read_text())["dataset"]["tags_file"]
            == str(TWOFILE / "zh_train.tags") and _meta(out / "teacher")["char_level"]),
}


@pytest.mark.parametrize("words", list(CASES))
def test_command_reads_a_two_file_corpus(words, tiny_teacher, tiny_backbone, tmp_path, monkeypatch, run_cli):
    if words == "run":  # the pipeline's steps are the commands above; here one step each, no measuring
        import distill.pipeline_profiles

        monkeypatch.setitem(distill.pipeline_profiles.PROFILES, "quick", _tiny_profile)
        monkeypatch.setattr("distill.report.make_report", _fake_report)
    if words == "report":
        shutil.copytree(tiny_teacher, tmp_path / "run" / "teacher")
    options, check = CASES[words]
    out = tmp_path / ("out.json" if words.endswith("eval") else "out")
    places = {"MODEL": str(tiny_teacher), "BACKBONE": str(tiny_backbone), "OUT": str(out), "RUN": str(tmp_path / "run")}
    options = [places.get(o, o.replace("RUN/", f"{tmp_path / 'run'}/")) for o in options]
    code, stdout, err = run_cli([*words.split(), *options, *_data(words)])
    assert code == 0, (stdout + err)[-2000:]
    assert check(out)


def test_predict_writes_a_tag_file_of_the_same_form(tiny_teacher, tmp_path, run_cli):
    """One line of tags per text line (blank for a blank line), one tag per character of
    unspaced text, with the input's ``_`` separator."""
    text, tags = tmp_path / "pd.txt", tmp_path / "pd.tags"
    text.write_text("北京欢迎你\n\n我爱北京天安门\n", encoding="utf-8")
    tags.write_text("B_LOC I_LOC O O O\n\nO O B_LOC I_LOC B_LOC I_LOC I_LOC\n", encoding="utf-8")
    out = tmp_path / "pred.tags"
    code, stdout, err = run_cli(["predict", str(tiny_teacher), "--labelled", "--input", str(text), "--tags-file",
                                 str(tags), "--out", str(out)])
    assert code == 0, stdout + err
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == lines[3] == ""
    assert [len(lines[0].split()), len(lines[2].split())] == [5, 7]
    predicted = set(lines[0].split() + lines[2].split())
    assert predicted <= {"O"} | {f"{p}_{t}" for p in "BI" for t in ("LOC", "ORG", "PER")}
    # the output is itself a tag file for the text
    from distill.data import read_twofile

    assert read_twofile(text, out).tokens == [list("北京欢迎你"), list("我爱北京天安门")]


def test_predicted_tags_keep_the_input_scheme_and_separator(tiny_teacher, tmp_path, monkeypatch):
    """BMES tags with ``_`` in, BMES tags with ``_`` out (the model's BIO converted back)."""
    import io

    import distill.evaluate
    from distill.predict import predict_file

    text, tags = tmp_path / "pd.txt", tmp_path / "pd.tags"
    text.write_text("北京欢迎你\n王小明\n", encoding="utf-8")
    tags.write_text("B_LOC E_LOC O O O\nB_PER M_PER E_PER\n", encoding="utf-8")
    bio = [["B-LOC", "I-LOC", "O", "B-PER", "I-PER"], ["B-PER", "I-PER", "I-PER"]]
    monkeypatch.setattr(distill.evaluate, "predict_tags", lambda model, sentences, batch_size: bio)
    out = io.StringIO()
    assert predict_file(model=tiny_teacher, input=str(text), tags_file=tags, stdout=out) == 2
    assert out.getvalue() == "B_LOC E_LOC O B_PER E_PER\nB_PER M_PER E_PER\n"


def test_predict_tag_file_errors_are_one_line(tiny_teacher, tmp_path, run_cli):
    text, tags = tmp_path / "pd.txt", tmp_path / "pd.tags"
    text.write_text("北京欢迎你\n", encoding="utf-8")
    tags.write_text("B_LOC I_LOC O O\n", encoding="utf-8")
    code, stdout, err = run_cli(["predict", str(tiny_teacher), "--labelled", "--input", str(text), "--tags-file",
                                 str(tags)])
    assert code == 1 and not stdout.strip()
    assert err.strip() == (f"error: {tags}:1: 4 tags, expected 5 (one per character of unspaced text) "
                           f"or 1 (the line as one token) on line 1 of {text}")
    code, stdout, err = run_cli(["predict", str(tiny_teacher), "abc", "--tags-file", str(tags)])
    assert code == 1 and not stdout.strip()
    assert err.strip() == f"error: --tags-file {tags}: the tags of a labelled --input; give --input FILE"


def _readme_data_section() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    return text.split("### Data\n", 1)[1].split("\n### ", 1)[0]


def test_readme_two_file_example_is_the_resources_first_lines():
    rows = re.findall(r"\| `(\S+)`: `([^`]+)` \| `(\S+)`: `([^`]+)` \|", _readme_data_section())
    assert [(t, g) for t, _, g, _ in rows] == [("en.txt", "en.tags"), ("zh_train.txt", "zh_train.tags")]
    for text_file, text, tags_file, tags in rows:
        assert (TWOFILE / text_file).read_text(encoding="utf-8").split("\n")[0] == text
        assert (TWOFILE / tags_file).read_text(encoding="utf-8").split("\n")[0] == tags


def test_readme_two_file_commands_run_as_written(tiny_backbone, tmp_path, monkeypatch, run_cli):
    """The README's commands, from a folder where ``tests/`` is this one, with the tiny backbone
    and a one-step run added to ``teacher train`` (the bundled backbone is too slow for a test)."""
    block = re.search(r"```sh\n(.*?)```", _readme_data_section(), re.S).group(1)
    commands = [shlex.split(c) for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    assert [c[:3] for c in commands] == [["distill", "teacher", "train"]] * 2 + [["distill", "predict", "runs/zh"]]
    (tmp_path / "tests").symlink_to(Path(__file__).resolve().parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    tiny = ["--backbone", str(tiny_backbone), "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
            "--checkpoint-minutes", "0"]
    for argv in commands:
        code, stdout, err = run_cli(argv[1:] + (tiny if argv[1] == "teacher" else []))
        assert code == 0, (argv, (stdout + err)[-2000:])
    assert not _meta(tmp_path / "runs" / "en")["char_level"] and _meta(tmp_path / "runs" / "zh")["char_level"]
    predicted = (tmp_path / "zh_test.pred.tags").read_text(encoding="utf-8").splitlines()
    text = (TWOFILE / "zh_test.txt").read_text(encoding="utf-8").splitlines()
    assert [len(line.split()) for line in predicted] == [len(line) for line in text]


@pytest.mark.parametrize("words", ["quantize int8", "prune", "eval", "report"])
def test_a_tag_file_without_its_text_file_is_an_error(words, tiny_teacher, tmp_path, run_cli):
    """Not silently ignored where the data options are optional (the command's own default data)."""
    tags = TWOFILE / "zh_train.tags"
    target = str(tmp_path / "run") if words == "report" else str(tiny_teacher)
    if words == "report":
        shutil.copytree(tiny_teacher, tmp_path / "run" / "teacher")
    code, stdout, err = run_cli([*words.split(), target, "--out", str(tmp_path / "o"), "--tags-file", str(tags)])
    assert code == 1 and not stdout.strip()
    assert err.strip() == f"error: --tags-file {tags}: give --train too, the text file these tags belong to"
    assert not (tmp_path / "o").exists()
