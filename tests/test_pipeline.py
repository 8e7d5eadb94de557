"""``distill run``: every step on tiny models, then skip-and-resume: a second run skips
everything, a changed setting or a deleted output reruns exactly what depends on it,
a hand-trained teacher with the same settings is reused, an interrupted training resumes."""

import dataclasses
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.pipeline import Profile, StepRecords, _adopt, get_profile, plan, run_pipeline
from distill.pipeline_profiles import PROFILES
from distill.train import TrainConfig

runner = CliRunner()


def tiny_profile(**changes) -> Profile:
    fast = dict(batch_size=8, checkpoint_minutes=0)
    profile = Profile(
        name="tiny", max_test=6,
        teacher=TrainConfig(epochs=1, lr=1e-3, embedding_lr=1e-3, head_lr=1e-2, **fast),
        bilstm=TrainConfig(epochs=1, lr=2e-3, weight_decay=0.0, warmup=0.0, clip=5.0, **fast),
        bert_small=TrainConfig(epochs=1, lr=1e-3, **fast),
        student_layers=1, quantize=("bilstm-crf-kd",), quantize_methods=("int8", "onnx-int8"),
        prune=(("magnitude", 0.5),), latency_sentences=3)
    return dataclasses.replace(profile, **changes)


def saved_stamps(run):
    return {p.parent.name: json.loads(p.read_text(encoding="utf-8"))["saved"] for p in run.glob("*/distill.json")}


def fake_report(*, run_dir, **kwargs):
    """Stands in for the (slow, separately tested) report when only the steps are under test."""
    from distill.fileio import write_json

    write_json(run_dir / "report" / "report.json", {"models": sorted(p.parent.name for p in run_dir.glob("*/distill.json"))})


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory, tiny_backbone, tiny_dataset_kwargs):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    kwargs = dict(run_dir=run, dataset=tiny_dataset_kwargs, backbone=str(tiny_backbone), threads=1, quiet=True)
    summary = run_pipeline(profile=tiny_profile(), **kwargs)
    return run, kwargs, summary


def statuses(summary):
    return {s["step"]: s["status"] for s in summary}


def test_first_run_makes_every_model_and_the_report(tiny_pipeline):
    run, _, summary = tiny_pipeline
    expected = ["teacher", "emit", "bilstm-crf", "bilstm-crf-kd", "bert-small", "bert-small-kd",
                "bilstm-crf-kd-int8", "bilstm-crf-kd-onnx-int8", "teacher-prune50", "report"]
    if torch.cuda.is_available():
        pytest.skip("the GPU adds fp16/bnb8 steps; the CPU layout is checked here")
    assert [s["step"] for s in summary] == expected
    assert set(statuses(summary).values()) == {"done"}
    report = json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))
    names = sorted(r["name"] for r in report["models"])
    assert names == sorted(set(expected) - {"emit", "report"})
    assert report["teacher"] == "teacher" and not report["failed"]
    assert report["dataset"]["test_sentences"] == 6  # the profile's max_test reached the report
    profile = json.loads((run / "profile.json").read_text(encoding="utf-8"))
    assert profile["profile"]["name"] == "tiny" and profile["profile"]["bilstm"]["epochs"] == 1
    assert profile["dataset"]["max_test"] is None and profile["report_dataset"]["max_test"] == 6
    from distill.report import resolve_dataset  # `distill report RUN` alone re-uses the run's test data

    assert resolve_dataset(run, None, None) == profile["report_dataset"]
    assert resolve_dataset(run, None, 3)["max_test"] == 3
    students = {json.loads((run / n / "distill.json").read_text())["meta"]["params"]["alpha"] for n in
                ("bilstm-crf", "bilstm-crf-kd")}
    assert students == {1.0, 0.5}


def test_second_run_skips_every_step(tiny_pipeline):
    run, kwargs, _ = tiny_pipeline
    before = saved_stamps(run)
    report_before = (run / "report" / "report.json").stat().st_mtime_ns
    summary = run_pipeline(profile=tiny_profile(), **kwargs)
    assert set(statuses(summary).values()) == {"skipped"}
    assert saved_stamps(run) == before
    assert (run / "report" / "report.json").stat().st_mtime_ns == report_before


def test_changed_setting_reruns_that_step_and_what_depends_on_it(tiny_pipeline, monkeypatch):
    run, kwargs, _ = tiny_pipeline
    monkeypatch.setattr("distill.report.make_report", fake_report)
    before = saved_stamps(run)
    changed = tiny_profile(bilstm=dataclasses.replace(tiny_profile().bilstm, lr=3e-3))
    summary = statuses(run_pipeline(profile=changed, **kwargs))
    rerun = {"bilstm-crf", "bilstm-crf-kd", "bilstm-crf-kd-int8", "bilstm-crf-kd-onnx-int8", "report"}
    assert {k for k, v in summary.items() if v == "done"} == rerun
    assert {k for k, v in summary.items() if v == "skipped"} == set(summary) - rerun
    after = saved_stamps(run)
    assert {k for k in before if before[k] != after[k]} == rerun - {"report"}
    assert json.loads((run / "bilstm-crf" / "distill.json").read_text())["meta"]["params"]["train_config"]["lr"] == 3e-3


def test_deleted_output_reruns(tiny_pipeline, monkeypatch):
    run, kwargs, _ = tiny_pipeline
    monkeypatch.setattr("distill.report.make_report", fake_report)
    profile = tiny_profile(bilstm=dataclasses.replace(tiny_profile().bilstm, lr=3e-3))  # as the last run
    run_pipeline(profile=profile, **kwargs)
    shutil.rmtree(run / "bert-small")
    summary = statuses(run_pipeline(profile=profile, **kwargs))
    assert {k for k, v in summary.items() if v == "done"} == {"bert-small", "report"}
    assert (run / "bert-small" / "distill.json").exists()


def test_interrupted_training_resumes_from_its_checkpoint(tiny_pipeline, monkeypatch):
    run, kwargs, _ = tiny_pipeline
    monkeypatch.setattr("distill.report.make_report", fake_report)
    profile = tiny_profile(bilstm=dataclasses.replace(tiny_profile().bilstm, lr=3e-3))
    run_pipeline(profile=profile, **kwargs)
    # pretend bert-small-kd was stopped after its last epoch, before it was recorded as done
    ckpt_path = run / "bert-small-kd.work" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    ckpt["state"]["done"] = False
    torch.save(ckpt, ckpt_path)
    records = StepRecords(run)
    rec = records.read("bert-small-kd")
    records.write("bert-small-kd", {"params": rec["params"], "status": "started"})
    before = saved_stamps(run)["bert-small-kd"]
    summary = statuses(run_pipeline(profile=profile, **kwargs))
    assert summary["bert-small-kd"] == "done"
    # resumed: the loop had no epoch left, so the model folder was kept, not retrained
    assert saved_stamps(run)["bert-small-kd"] == before
    assert torch.load(ckpt_path, map_location="cpu", weights_only=False)["state"]["done"] is True


def test_hand_trained_teacher_with_the_same_settings_is_reused(tmp_path, tiny_backbone, tiny_dataset_kwargs):
    from distill.pipeline import normalise_dataset
    from teachers.train import TeacherConfig, train_teacher

    profile = tiny_profile()
    train_ds, report_ds = normalise_dataset(tiny_dataset_kwargs, profile)
    # what `distill teacher train --out RUN/teacher ...` does with the same settings
    train_teacher(out=tmp_path / "teacher", dataset=train_ds, config=TeacherConfig(backbone=str(tiny_backbone)),
                  train_config=profile.teacher, quiet=True)

    def teacher_step(p):
        steps = plan(run_dir=tmp_path, profile=p, train_ds=train_ds, report_ds=report_ds,
                     backbone=str(tiny_backbone), cuda=False, threads=1, quiet=True)
        return steps[0]

    records = StepRecords(tmp_path)
    other = tiny_profile(teacher=dataclasses.replace(profile.teacher, seed=14))
    step = teacher_step(other)
    _adopt(step, step.params(), records, console=_Silent())
    assert not records.is_done(step, step.params())
    step = teacher_step(profile)
    # a teacher trained before TrainConfig grew a field, with another checkpoint frequency: the same settings
    info = json.loads((tmp_path / "teacher" / "distill.json").read_text(encoding="utf-8"))
    del info["meta"]["params"]["train_config"]["checkpoint_every"]
    info["meta"]["params"]["train_config"]["checkpoint_minutes"] = 30.0
    (tmp_path / "teacher" / "distill.json").write_text(json.dumps(info), encoding="utf-8")
    _adopt(step, step.params(), records, console=_Silent())
    assert records.is_done(step, step.params())
    assert records.read("teacher")["adopted"] is True


class _Silent:
    def print(self, *args, **kwargs):
        pass


def test_full_profile_reuses_a_teacher_from_distill_teacher_train(tmp_path, tiny_dataset_kwargs, monkeypatch):
    """What `distill teacher train --out RUN/teacher --epochs 3 --backbone RUN/backbone-adapted`
    records is what the full profile's teacher step wants."""
    import teachers.train
    from distill.data import load_dataset
    from distill.pipeline import ADAPTED, _plain, _teacher_params_match, normalise_dataset
    from teachers.train import TeacherConfig

    recorded = {}

    class Model:
        meta = {"vocabulary": {"unk_rate_before": 0.0, "added": 0}}

    def fake_train(model, train, dev, out, cfg, **kwargs):
        recorded.update(kwargs["extra_meta"]["params"])
        return {"best_f1": 0.0, "best_epoch": 1}

    # the real command line and train_teacher; only the data, the encoder and the loop are stand-ins
    monkeypatch.setattr(teachers.train, "load_dataset", lambda **kw: load_dataset(**tiny_dataset_kwargs))
    monkeypatch.setattr("teachers.bert_crf.build_teacher", lambda *a, **kw: Model())
    monkeypatch.setattr(teachers.train, "train", fake_train)
    adapted = str(tmp_path / ADAPTED)
    (tmp_path / ADAPTED).mkdir()  # what `distill teacher adapt` leaves (only its stamp matters here)
    (tmp_path / ADAPTED / "adapt.json").write_text(json.dumps({"finished": "2026-11-22T21:00:00"}), encoding="utf-8")
    r = runner.invoke(app, ["teacher", "train", "--out", str(tmp_path / "teacher"), "--epochs", "3",
                            "--backbone", adapted, "--checkpoint-every", "500"])
    assert r.exit_code == 0, r.output
    assert recorded["train_config"]["checkpoint_every"] == 500  # bookkeeping: still the same teacher
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "distill.json").write_text(json.dumps({"meta": {"params": recorded}}), encoding="utf-8")
    full = get_profile("full")

    def want(backbone, profile):  # what the pipeline's teacher step asks for
        return _plain(TeacherConfig(backbone=backbone).identity(normalise_dataset(None, profile)[0], profile.teacher))

    assert _teacher_params_match(folder, want(adapted, full))
    assert not _teacher_params_match(folder, want(None, full))  # not adapted: another teacher
    assert not _teacher_params_match(folder, want(adapted, get_profile("quick")))  # capped data: not the same teacher
    (tmp_path / ADAPTED / "adapt.json").write_text(json.dumps({"finished": "2026-11-22T23:00:00"}), encoding="utf-8")
    assert not _teacher_params_match(folder, want(adapted, full))  # re-adapted


def test_adapt_step_comes_first_when_the_vocabulary_is_extended(tmp_path, tiny_backbone, tiny_dataset_kwargs,
                                                                monkeypatch):
    from distill.pipeline import ADAPTED
    from teachers.adapt import AdaptConfig

    monkeypatch.setattr("distill.report.make_report", fake_report)
    profile = tiny_profile(adapt=AdaptConfig(steps=3, batch_size=8, embeddings_only_steps=1), quantize=(), prune=())
    run = tmp_path / "run"
    kwargs = dict(run_dir=run, profile=profile, dataset=tiny_dataset_kwargs, backbone=str(tiny_backbone), threads=1,
                  quiet=True)
    summary = run_pipeline(**kwargs)
    assert [s["step"] for s in summary][:2] == ["adapt", "teacher"] and statuses(summary)["adapt"] == "done"
    adapted = json.loads((run / ADAPTED / "adapt.json").read_text(encoding="utf-8"))
    assert adapted["steps"] == 3 and adapted["vocabulary"]["added"] > 0
    meta = json.loads((run / "teacher" / "distill.json").read_text(encoding="utf-8"))["meta"]
    assert meta["params"]["backbone"] == str(run / ADAPTED)
    assert meta["vocabulary"]["added"] == 0  # the adapted backbone already holds the new tokens
    assert json.loads((run / "profile.json").read_text(encoding="utf-8"))["adapt"] is True

    assert set(statuses(run_pipeline(**kwargs)).values()) == {"skipped"}
    # another adaptation: the adapted backbone, the teacher and everything after it are made again
    longer = dataclasses.replace(profile, adapt=AdaptConfig(steps=4, batch_size=8, embeddings_only_steps=1))
    again = statuses(run_pipeline(**dict(kwargs, profile=longer)))
    assert again["adapt"] == again["teacher"] == again["bilstm-crf-kd"] == "done", again
    assert again["bilstm-crf"] == "skipped"  # trained on gold tags alone: it never saw the teacher


def test_adapt_step_is_left_out_when_the_backbone_covers_the_data(tmp_path, resources, tiny_backbone,
                                                                  tiny_dataset_kwargs):
    from conftest import make_tiny_backbone
    from distill.data import read_msra
    from distill.pipeline import extends_vocabulary, normalise_dataset

    train_ds, report_ds = normalise_dataset(tiny_dataset_kwargs, tiny_profile())
    assert extends_vocabulary(str(tiny_backbone), train_ds)
    chars = "".join(sorted({c for s in read_msra(resources / "msra_train.txt").tokens for c in s}))
    covering = make_tiny_backbone(tmp_path / "covering", chars)
    assert not extends_vocabulary(str(covering), train_ds)
    steps = plan(run_dir=tmp_path, profile=get_profile("full"), train_ds=train_ds, report_ds=report_ds,
                 backbone=str(covering), cuda=False, threads=1, quiet=True)
    assert steps[0].name == "teacher" and steps[0].params()["backbone"] == str(covering)


def test_a_backbone_adapted_by_hand_with_the_same_settings_is_reused(tmp_path, tiny_backbone, tiny_dataset_kwargs):
    from distill.pipeline import ADAPTED, _adapted_matches, normalise_dataset
    from teachers.adapt import AdaptConfig, adapt_backbone

    train_ds, report_ds = normalise_dataset(tiny_dataset_kwargs, tiny_profile())
    cfg = AdaptConfig(steps=1, batch_size=8)
    # what `distill teacher adapt --steps 1 --batch-size 8 --train ... --out RUN/backbone-adapted` does
    adapt_backbone(out=tmp_path / ADAPTED, backbone=str(tiny_backbone), dataset=dict(tiny_dataset_kwargs),
                   steps=1, batch_size=8, checkpoint_every=50, quiet=True)

    def adapt_step(config):
        return plan(run_dir=tmp_path, profile=tiny_profile(adapt=config), train_ds=train_ds, report_ds=report_ds,
                    backbone=str(tiny_backbone), cuda=False, threads=1, quiet=True, adapt=True)[0]

    assert _adapted_matches(tmp_path / ADAPTED, adapt_step(cfg).params())
    assert not _adapted_matches(tmp_path / ADAPTED, adapt_step(dataclasses.replace(cfg, steps=2)).params())
    other = dict(tiny_dataset_kwargs, max_train=10)
    params = dict(adapt_step(cfg).params(), dataset=normalise_dataset(other, tiny_profile())[0])
    assert not _adapted_matches(tmp_path / ADAPTED, params)  # other text


def test_profiles_are_validated():
    with pytest.raises(DistillError, match="unknown profile 'fast'; expected one of quick, cpu, full"):
        get_profile("fast")
    with pytest.raises(ValueError, match="alpha"):
        tiny_profile(alpha=1.0)
    with pytest.raises(ValueError, match="unknown quantization method 'int4'"):
        tiny_profile(quantize_methods=("int4",))
    with pytest.raises(ValueError, match="cannot quantize 'nope'"):
        tiny_profile(quantize=("nope",))
    with pytest.raises(ValueError, match="kd must be one of emission, marginal, both, viterbi, got 'soft'"):
        tiny_profile(kd="soft")
    assert get_profile("cpu").kd == get_profile("quick").kd == "marginal"


def test_cli_run_skips_a_finished_run(tiny_pipeline, tiny_backbone, tiny_dataset_kwargs, monkeypatch):
    run, _, _ = tiny_pipeline
    monkeypatch.setattr("distill.report.make_report", fake_report)
    profile = tiny_profile(bilstm=dataclasses.replace(tiny_profile().bilstm, lr=3e-3))
    monkeypatch.setitem(PROFILES, "tiny", lambda: profile)
    r = runner.invoke(app, ["run", str(run), "--profile", "tiny", "--backbone", str(tiny_backbone),
                            "--train", str(tiny_dataset_kwargs["train"]), "--test", str(tiny_dataset_kwargs["test"]),
                            "--format", "msra", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "step 10/10: comparison report" in r.output
    r = runner.invoke(app, ["run", str(run), "--profile", "nope"])
    assert isinstance(r.exception, DistillError) and "expected one of" in str(r.exception)


def test_built_in_data_gives_the_distilled_students_the_transfer_set(tmp_path):
    """On MSRA with a labelled budget the KD students also learn from the rest of train
    (and one distilled BiLSTM-CRF does without it); the full profile has no rest to use."""
    from distill.pipeline import get_profile, normalise_dataset, plan

    def students(name):
        profile = get_profile(name)
        train_ds, report_ds = normalise_dataset(None, profile)
        steps = plan(run_dir=tmp_path, profile=profile, train_ds=train_ds, report_ds=report_ds, backbone="x",
                     cuda=False, threads=1, quiet=True)
        return {s.name: s.params() for s in steps if s.name.startswith(("bilstm-crf", "bert-small")) and s.trains}

    cpu = students("cpu")
    assert list(cpu) == ["bilstm-crf", "bilstm-crf-kd", "bilstm-crf-kd-labelled", "bert-small", "bert-small-kd"]
    assert cpu["bilstm-crf-kd"]["transfer"] == ["msra:unlabelled"] and cpu["bilstm-crf-kd"]["transfer_ratio"] == 2.0
    assert cpu["bert-small-kd"]["transfer"] == ["msra:unlabelled"]
    assert "transfer" not in cpu["bilstm-crf-kd-labelled"] and cpu["bilstm-crf-kd-labelled"]["alpha"] < 1
    assert "transfer" not in cpu["bilstm-crf"] and cpu["bilstm-crf"]["alpha"] == 1
    assert students("quick")["bilstm-crf-kd"]["transfer"] == ["msra:unlabelled:4000"]
    full = students("full")
    assert "bilstm-crf-kd-labelled" not in full and "transfer" not in full["bilstm-crf-kd"]
