"""``distill run`` for text classification on a tiny TSV corpus and a tiny BERT: every step (teacher,
students gold-only and distilled, int8 / ONNX int8, report), then a rerun that skips them all and a
changed student setting that reruns only that student and what depends on it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from distill.pipeline import run_pipeline
from distill.pipeline_classify import ClassifyProfile, classifier_teacher_config, get_classify_profile
from distill.train import TrainConfig
from test_classify_cli import _texts

FAST = dict(batch_size=8, checkpoint_minutes=0)


def tiny_profile(**changes) -> ClassifyProfile:
    profile = ClassifyProfile(
        name="tiny", max_test=10, max_length=32,
        teacher=classifier_teacher_config(epochs=1, lr=1e-3, **FAST),
        bilstm=TrainConfig(epochs=2, lr=2e-3, weight_decay=0.0, warmup=0.0, clip=5.0, **FAST),
        bert_small=TrainConfig(epochs=1, lr=1e-3, **FAST),
        student_layers=1, quantize=("bilstm-kd",), quantize_methods=("int8", "onnx-int8"), latency_sentences=3)
    return dataclasses.replace(profile, **changes)


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    files = {}
    for name, n, seed in (("train", 40, 1), ("dev", 10, 2), ("test", 12, 3)):
        files[name] = root / f"{name}.tsv"
        files[name].write_text("".join(f"{t}\t{l}\n" for t, l in _texts(n, seed, name[:2])), encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory, text_files, tiny_backbone):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    dataset = {"task": "classify", **{k: str(v) for k, v in text_files.items()}}
    kwargs = dict(run_dir=run, dataset=dataset, backbone=str(tiny_backbone), threads=1, quiet=True)
    return run, kwargs, run_pipeline(profile=tiny_profile(), **kwargs)


def test_every_step_runs_and_the_report_covers_every_classifier(classify_run):
    run, _, summary = classify_run
    if torch.cuda.is_available():
        pytest.skip("the GPU adds fp16/bnb8 steps; the CPU layout is checked here")
    expected = ["teacher", "bilstm", "bilstm-kd", "bert-small", "bert-small-kd",
                "bilstm-kd-int8", "bilstm-kd-onnx-int8", "report"]
    assert [s["step"] for s in summary] == expected
    assert {s["status"] for s in summary} == {"done"}
    for name in expected[:-1]:
        meta = json.loads((run / name / "distill.json").read_text(encoding="utf-8"))["meta"]
        assert meta["task"] == "classify", name
    params = {n: json.loads((run / n / "distill.json").read_text(encoding="utf-8"))["meta"]["params"]
              for n in ("bilstm", "bilstm-kd")}
    profile = tiny_profile()
    assert params["bilstm"]["alpha"] == 1.0 and params["bilstm-kd"]["alpha"] == profile.alpha < 1
    assert params["bilstm-kd"]["temperature"] == profile.temperature
    report = json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))
    assert sorted(r["name"] for r in report["models"]) == sorted(expected[:-1])
    assert not report["failed"]
    profile = json.loads((run / "profile.json").read_text(encoding="utf-8"))
    assert profile["task"] == "classify" and profile["report_dataset"]["max_test"] == 10


def test_a_rerun_skips_everything_and_a_changed_student_reruns_only_what_follows(classify_run):
    run, kwargs, _ = classify_run
    summary = run_pipeline(profile=tiny_profile(), **kwargs)
    assert {s["status"] for s in summary} == {"skipped"}
    changed = tiny_profile(bilstm=dataclasses.replace(tiny_profile().bilstm, seed=14))
    statuses = {s["step"]: s["status"] for s in run_pipeline(profile=changed, **kwargs)}
    assert statuses["teacher"] == statuses["bert-small-kd"] == "skipped"
    assert statuses["bilstm"] == statuses["bilstm-kd"] == statuses["bilstm-kd-int8"] == "done"
    assert statuses["report"] == "done"


def test_the_built_in_sentiment_profiles():
    cpu = get_classify_profile("cpu")
    assert cpu.max_train == 2000 and cpu.transfer == ("sentiment:unlabelled",)
    assert get_classify_profile("full").transfer == ()
    every_label = get_classify_profile("cpu-all")
    assert every_label.max_train is None and every_label.transfer == () and not every_label.kd_without_transfer
    with pytest.raises(ValueError, match="alpha"):
        ClassifyProfile(name="x", alpha=1.0)
    with pytest.raises(ValueError, match="quantization method"):
        ClassifyProfile(name="x", quantize_methods=("int4",))
