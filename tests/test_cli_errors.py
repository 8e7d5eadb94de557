"""Every CLI command, given a bad path, exits 1 with one readable line naming it.

The commands are found by walking the click tree of ``distill.cli.app``, so commands
added later are covered without editing this file. Each command runs as a user runs
it: ``distill.cli.main`` with ``sys.argv`` set (and once end to end, ``python -m distill``).

- Model parameters (an argument or option named model/teacher/student, or whose help
  says "model folder") get: a path that does not exist, a file, an empty folder, a
  folder whose distill.json is corrupt or names an unknown kind, an incomplete copy of
  a real model, and, for every registered kind, a folder with only its distill.json;
  and real models of other kinds (torch int8, ONNX): used (exit 0) or refused in one line.
- Input data options (--train/--dev/--test/--input/--text, and the tag files of the two-file
  format) get a path that does not exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from distill.cli import app
from distill.modeling import MODEL_KINDS

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAMES = {"model", "teacher", "student"}
DATA_OPTIONS = {"train", "dev", "test", "input", "text", "tags_file", "dev_tags_file", "test_tags_file"}
OUTPUT_NAMES = {"out", "output", "report"}


def _commands(group=None, path=()):
    """(command words, click command) for every leaf command of the app."""
    group = group or typer.main.get_command(app)
    for name, cmd in sorted(group.commands.items()):
        if getattr(cmd, "hidden", False):
            continue
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def _annotation(param):
    td = getattr(param, "type_descriptor", None)
    return getattr(td, "annotation", None)


def _is_path(param) -> bool:
    return _annotation(param) is Path or "path" in str(getattr(param, "type", "")).lower()


def _is_model(param) -> bool:
    """An input model folder (not an output folder, not a folder of model folders)."""
    help_text = (param.help or "").lower()
    if not _is_path(param) or param.name in OUTPUT_NAMES or help_text.startswith("output"):
        return False
    return param.name in MODEL_NAMES or re.search(r"\bmodel folder\b(?!s)", help_text) is not None


def _option_name(param) -> str:
    return max(param.opts, key=len)


# options a command needs before it looks at the target (checked combinations of options)
NEEDS = {("prune", "teacher"): ["--finetune-epochs", "1"]}

COMMANDS = list(_commands())
MODEL_PARAMS = [(words, cmd, p) for words, cmd in COMMANDS for p in cmd.params if _is_model(p)]
DATA_PARAMS = [(words, cmd, p) for words, cmd in COMMANDS for p in cmd.params
               if p.param_type_name == "option" and p.name in DATA_OPTIONS]


def _argv(words, cmd, target, bad: str, good: dict[str, str]) -> list[str]:
    """A command line giving ``bad`` to ``target`` and something sensible to the rest:
    the tiny corpus, a one-step run, an output folder in tmp, a real model elsewhere."""
    args: list[str] = []
    options: list[str] = []
    names = {p.name for p in cmd.params}
    has_required_model = any(_is_model(p) and p.required for p in cmd.params)
    # the tiny corpus, unless the target is another source of text (predict --input, adapt --text)
    corpus = "train" in names and target.name not in ("input", "text")
    for p in cmd.params:
        value = bad if p is target else None
        if value is None:
            if _is_model(p) and (p.required or not has_required_model):  # e.g. student --teacher, not prune --teacher
                value = good["model"]
            elif _is_model(p):
                continue
            elif p.name in ("train", "test") and corpus:
                value = good[p.name]
            elif p.name in ("format", "max_train", "max_test") and corpus:
                value = {"format": "msra", "max_train": "8", "max_test": "4"}[p.name]
            elif p.param_type_name == "option" and p.name in ("max_steps", "steps"):
                value = "1"  # a one-step run, should anything get that far
            elif p.param_type_name == "option" and p.name == "epochs" and "steps" not in names:
                value = "1"
            elif p.name in OUTPUT_NAMES and p.param_type_name == "option":
                value = good["out"]
            elif p.param_type_name == "argument" and _is_path(p):
                value = good["run_dir"]  # a folder holding a model
            elif p.param_type_name == "argument" and not (p.name == "text" and target.name == "input"):
                value = "abc"  # e.g. TEXT for predict
        if value is None:
            continue
        if p.param_type_name == "argument":
            args.append(value)
        else:
            options += [_option_name(p), value]
    return ["distill", *words, *args, *options, *NEEDS.get((" ".join(words), target.name), [])]


def _assert_one_line_naming(code: int, err: str, path: str, argv) -> None:
    """Exit 1; the error is one line, the last on stderr (progress lines may come before), naming ``path``."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 1, (argv, code, err[-1500:])
    assert "Traceback" not in err
    errors = [l for l in lines if l.lower().startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), (argv, lines)
    assert path in errors[0], (argv, errors[0])


# --- bad model folders -----------------------------------------------------------------


def _bad_models(root: Path, tiny_teacher: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    bad = {"missing": root / "does-not-exist"}
    (root / "a-file").write_text("not a folder\n")
    bad["file"] = root / "a-file"
    (root / "empty").mkdir()
    bad["empty folder"] = root / "empty"
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "distill.json").write_text('{"kind": "bert-crf", "lab')
    bad["corrupt distill.json"] = corrupt
    unknown = root / "unknown-kind"
    unknown.mkdir()
    (unknown / "distill.json").write_text(json.dumps({"format": 1, "kind": "gpt-9000", "labels": ["O"], "config": {}}))
    bad["unknown kind"] = unknown
    partial = root / "partial"
    shutil.copytree(tiny_teacher, partial)
    (partial / "model.safetensors").unlink()
    bad["incomplete"] = partial
    for kind in MODEL_KINDS:  # every kind, nothing but its description
        folder = root / f"only-json-{kind}"
        folder.mkdir()
        (folder / "distill.json").write_text(json.dumps({"format": 1, "kind": kind, "labels": ["O", "B-PER", "I-PER"],
                                                         "config": {}, "meta": {}}))
        bad[f"only distill.json ({kind})"] = folder
    return bad


@pytest.fixture(scope="module")
def good(tiny_teacher, tiny_dataset_kwargs, tmp_path_factory) -> dict[str, str]:
    d = tiny_dataset_kwargs
    run_dir = tmp_path_factory.mktemp("cli-run")
    shutil.copytree(tiny_teacher, run_dir / "teacher")
    return {"model": str(tiny_teacher), "train": str(d["train"]), "test": str(d["test"]), "run_dir": str(run_dir),
            "out": str(tmp_path_factory.mktemp("cli-out") / "out")}


@pytest.fixture(scope="module")
def bad_models(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    return _bad_models(tmp_path_factory.mktemp("bad-models"), tiny_teacher)


def test_the_walk_finds_the_commands():
    names = {" ".join(w) for w, _ in COMMANDS}
    assert {"eval", "predict", "teacher train", "teacher eval", "teacher emit"} <= names
    assert {"eval", "predict", "teacher eval", "teacher emit"} <= {" ".join(w) for w, _, _ in MODEL_PARAMS}


@pytest.mark.parametrize("words, cmd, param", MODEL_PARAMS,
                         ids=[f"{' '.join(w)}:{p.name}" for w, _, p in MODEL_PARAMS])
def test_bad_model_folder_exits_1_with_one_line(words, cmd, param, bad_models, good, run_cli):
    failures = []
    for case, folder in bad_models.items():
        argv = _argv(words, cmd, param, str(folder), good)
        try:
            code, _, err = run_cli(argv[1:])
            _assert_one_line_naming(code, err, str(folder), argv)
        except AssertionError as e:
            failures.append(f"{case}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("words, cmd, param", DATA_PARAMS,
                         ids=[f"{' '.join(w)}:{p.name}" for w, _, p in DATA_PARAMS])
def test_missing_input_file_exits_1_with_one_line(words, cmd, param, good, tmp_path, run_cli):
    missing = str(tmp_path / "no-such-file.txt")
    argv = _argv(words, cmd, param, missing, good)
    code, _, err = run_cli(argv[1:])
    _assert_one_line_naming(code, err, missing, argv)


@pytest.fixture(scope="module")
def other_kinds(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    """Real models of other kinds than the teacher: torch int8 and ONNX."""
    from quantize.api import quantize

    root = tmp_path_factory.mktemp("other-kinds")
    return {method: quantize(method=method, model=tiny_teacher, out=root / method) for method in ("int8", "onnx")}


@pytest.mark.parametrize("words, cmd, param", MODEL_PARAMS,
                         ids=[f"{' '.join(w)}:{p.name}" for w, _, p in MODEL_PARAMS])
def test_model_of_another_kind_is_used_or_refused_in_one_line(words, cmd, param, other_kinds, good, tmp_path,
                                                               run_cli):
    """A command either works with the kind (exit 0) or refuses it in one line naming the folder."""
    failures = []
    for kind, folder in other_kinds.items():
        argv = _argv(words, cmd, param, str(folder), dict(good, out=str(tmp_path / f"out-{kind}")))
        try:
            code, _, err = run_cli(argv[1:])
            if code != 0:
                _assert_one_line_naming(code, err, str(folder), argv)
        except AssertionError as e:
            failures.append(f"{kind}: {e}")
    assert not failures, "\n".join(failures)


def test_end_to_end_a_user_sees_one_line(tmp_path):
    missing = tmp_path / "no-model"
    proc = subprocess.run([sys.executable, "-m", "distill", "eval", str(missing)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {missing}: no such model folder"
