"""``distill student`` end to end on the tiny corpus, and every bad argument as the
user sees it: one line on stderr, exit status 1, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.modeling import load_model

runner = CliRunner()


def _data(kw) -> list[str]:
    return ["--train", str(kw["train"]), "--test", str(kw["test"]), "--format", "msra"]


@pytest.mark.parametrize("args, message", [
    (["--T", "0"], "temperature (--T) must be > 0, got 0.0"),
    (["--T", "-2"], "temperature (--T) must be > 0, got -2.0"),
    (["--alpha", "1.5"], "alpha must be in [0, 1]"),
    (["--alpha", "-0.5"], "alpha must be in [0, 1]"),
    (["--kd", "attention"], "unknown KD loss 'attention'; expected one of emission, marginal, both"),
    (["--arch", "transformer"], "unknown student architecture 'transformer'; expected one of bilstm-crf, bert-small"),
    (["--hidden-weight", "1"], "needs arch bert-small"),
    (["--checkpoint-every", "-1"], "checkpoint_every must be >= 0, got -1"),
    (["--arch", "bert-small", "--layers", "0,9"], "out of range; the teacher has layers 0..1"),
])
def test_bad_arguments_are_one_line_errors(args, message, run_cli, tmp_path, tiny_teacher, tiny_dataset_kwargs):
    out = tmp_path / "s"
    code, _, err = run_cli(["student", "--teacher", str(tiny_teacher), "--out", str(out),
                            *_data(tiny_dataset_kwargs), *args])
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists() and not (tmp_path / "s.work").exists()


def test_teacher_label_set_must_match_the_data(run_cli, tmp_path, tiny_teacher, resources):
    conll = str(resources / "tiny.conll")
    code, _, err = run_cli(["student", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s"),
                            "--train", conll, "--dev", conll, "--test", conll])
    assert code == 1 and err.count("\n") == 1
    assert "teacher labels" in err and "MISC" in err and "differ from the training data" in err
    assert not (tmp_path / "s").exists()


def test_missing_teacher_is_an_error_unless_alpha_is_one(tmp_path, tiny_dataset_kwargs):
    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "distill", "student", "--alpha", "0.5", "--out", str(out),
                        *_data(tiny_dataset_kwargs)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: --teacher is required with alpha 0.5 < 1 (alpha 1 trains without a teacher)"
    r = subprocess.run([sys.executable, "-m", "distill", "student", "--arch", "bert-small", "--alpha", "1",
                        "--out", str(out), *_data(tiny_dataset_kwargs)], capture_output=True, text=True)
    assert r.returncode == 1 and "required for bert-small" in r.stderr
    assert not out.exists()
    # the baseline: alpha 1 needs no teacher
    r = runner.invoke(app, ["student", "--alpha", "1", "--out", str(out), "--epochs", "1", "--max-steps", "2",
                            "--batch-size", "8", "--checkpoint-every", "1", *_data(tiny_dataset_kwargs)])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "distill.json").read_text())["meta"]
    assert meta["teacher"] is None and meta["params"]["alpha"] == 1.0
    assert meta["params"]["train_config"]["checkpoint_every"] == 1


@pytest.mark.parametrize("arch, extra", [
    ("bilstm-crf", ["--kd", "marginal", "--embedding-dim", "16", "--hidden-size", "16"]),
    ("bert-small", ["--kd", "both", "--layers", "1", "--hidden-weight", "0.5"]),
])
def test_student_trains_saves_evaluates_and_predicts(arch, extra, tmp_path, tiny_teacher, tiny_dataset_kwargs,
                                                     half_right):
    out = tmp_path / arch
    r = runner.invoke(app, ["student", "--arch", arch, "--teacher", str(tiny_teacher), "--alpha", "0.3", "--T", "2",
                            "--emissions", str(tmp_path / "em"), "--out", str(out), "--epochs", "2",
                            "--max-steps", "4", "--batch-size", "8", *extra, *_data(tiny_dataset_kwargs)])
    assert r.exit_code == 0, r.output
    assert "best dev F1" in r.output
    info = json.loads((out / "distill.json").read_text())
    meta = info["meta"]
    assert meta["role"] == "student" and meta["arch"] == arch
    assert meta["distillation"]["temperature"] == 2.0 and meta["distillation"]["alpha"] == 0.3
    assert meta["params"]["kd"] == extra[1]
    assert meta["training"]["config"]["max_steps"] == 4
    model = load_model(out)
    assert model.meta["role"] == "student"

    with half_right() as f1:  # scored on hand-made predictions of a known F1
        r = runner.invoke(app, ["eval", str(out), *_data(tiny_dataset_kwargs)])
    assert r.exit_code == 0, r.output
    assert "micro" in r.output
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["f1"] == pytest.approx(f1) and metrics["precision"] == 1.0 and metrics["sentences"] == 20

    r = runner.invoke(app, ["predict", str(out), "北京欢迎你"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == list("北京欢迎你")
    assert all(l.split("\t")[1] in ("O",) + tuple(f"{p}-{t}" for p in "BMES" for t in ("LOC", "ORG", "PER"))
               for l in lines)
