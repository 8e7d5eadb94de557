"""``distill run RUN_DIR``: the whole pipeline in one command, resumable step by step.

[language-adaptive MLM pretraining of the backbone, when the profile asks for it and the
teacher's vocabulary is extended on the data] -> teacher -> emissions -> students
(BiLSTM-CRF and 3-layer BERT, each distilled with alpha/T and trained on gold tags alone)
-> int8 / ONNX int8 (fp16 and bitsandbytes 8-bit on a GPU) -> magnitude pruning -> the
comparison report. Layout::

    RUN_DIR/profile.json            the settings of the profile that ran
    RUN_DIR/backbone-adapted        (profile full) the backbone after `distill teacher adapt`
    RUN_DIR/teacher                 (+ teacher/emissions-train)
    RUN_DIR/bilstm-crf, bilstm-crf-kd, bert-small, bert-small-kd
    RUN_DIR/<model>-int8, <model>-onnx-int8, teacher-prune50
    RUN_DIR/report
    RUN_DIR/.steps/<step>.json      what each step ran with, and whether it finished

A step is skipped when its ``.steps`` record says it finished with the same params
and its output is still the one it wrote (same ``saved`` stamp). Params of later steps
include the ``saved`` stamp of the model they start from, so retraining the teacher
reruns everything after it. A teacher trained by hand (``distill teacher train --out
RUN_DIR/teacher``) with the profile's settings is reused. An interrupted training step
resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distill.config import DEFAULT_DATASET, DataConfig, TransferConfig
from distill.errors import DistillError
from distill.fileio import write_json
from distill.pipeline_profiles import STUDENTS, Profile, get_profile
from distill.pipeline_steps import (Step, StepRecords, StudentSpec, _adopt, _clock, _plain, _saved,
                                    _teacher_params_match, _training_finished, quantize_steps, report_step,
                                    student_steps)

ADAPTED = "backbone-adapted"


def normalise_dataset(dataset: DataConfig | dict | None, profile: Profile) -> tuple[dict, dict]:
    """The training data (no test cap, so the report's test size never retrains anything) and
    the report's data, as the JSON form of a :class:`distill.config.DataConfig` (what the steps
    record): the profile's caps unless ``dataset`` (the options given) sets them."""
    given = DataConfig.of(dataset).to_json() if dataset is not None else {}
    base = DataConfig(name="sentiment" if given.get("task") == "classify" else DEFAULT_DATASET,
                      max_train=profile.max_train, max_dev=profile.max_dev, max_test=profile.max_test)
    report = base.replace(**given)
    return report.replace(max_test=None).to_json(), report.to_json()


def extends_vocabulary(backbone: str | None, train_ds: dict) -> bool:
    """Whether the teacher's vocabulary extension adds tokens for this backbone and data."""
    from distill.data import load_dataset
    from teachers.bert_crf import default_backbone, load_tokenizer, words_to_add

    return bool(words_to_add(load_tokenizer(backbone or default_backbone()), load_dataset(**train_ds).train.tokens)[1])


def plan(*, run_dir: Path, profile: Profile, train_ds: dict, report_ds: dict, backbone: str | None,
         cuda: bool, threads: int | None, quiet: bool, adapt: bool = False) -> list[Step]:
    """The pipeline's steps, in order (``adapt``: start with the profile's MLM adaptation)."""
    teacher = run_dir / "teacher"
    emissions = teacher / "emissions-train"
    adapted = run_dir / ADAPTED
    steps: list[Step] = []
    if adapt:
        adapt_cfg = profile.adapt
        assert adapt_cfg is not None

        def run_adapt(resume: bool):
            from teachers.adapt import adapt_backbone

            return adapt_backbone(out=adapted, backbone=backbone, dataset=train_ds, config=adapt_cfg, resume=resume,
                                  quiet=quiet)

        steps.append(Step("adapt", "adapt the backbone (masked-language-model pretraining on the training text)",
                          adapted, "adapt.json", lambda: _plain({
                              "backbone": backbone, "dataset": train_ds,
                              "config": {k: v for k, v in asdict(adapt_cfg).items() if k != "checkpoint_every"}}),
                          run_adapt, trains=True, made_with=lambda params: _adapted_matches(adapted, params)))
    teacher_backbone = str(adapted) if adapt else backbone

    def run_teacher(resume: bool):
        from teachers.train import TeacherConfig, train_teacher

        return train_teacher(out=teacher, dataset=train_ds, config=TeacherConfig(backbone=teacher_backbone),
                             train_config=profile.teacher, resume=resume, quiet=quiet)

    def params_of_teacher():
        from teachers.train import TeacherConfig

        return _plain(TeacherConfig(backbone=teacher_backbone).identity(train_ds, profile.teacher))

    steps.append(Step("teacher", "teacher (BERT-CRF)", teacher, "distill.json", params_of_teacher, run_teacher,
                      trains=True, made_with=lambda params: _teacher_params_match(teacher, params)))

    def run_emit(resume: bool):
        from distill.emissions import emit

        return emit(model=teacher, dataset=train_ds, out=emissions, batch_size=64, quiet=quiet)

    steps.append(Step("emit", "teacher emissions on the training set", emissions, "meta.json",
                      lambda: _plain({"teacher_saved": _saved(teacher), "dataset": train_ds, "batch_size": 64}),
                      run_emit))

    # the built-in transfer set is the MSRA train text outside the labelled budget: none without one
    builtin_data = DataConfig.from_json(train_ds).builtin == DEFAULT_DATASET
    transfer = list(profile.transfer) if builtin_data and train_ds.get("max_train") else []

    def run_student(spec: StudentSpec, resume: bool):
        from distill.kd import KDConfig
        from students.train import STUDENTS, train_student

        return train_student(out=spec.out, teacher=spec.teacher,
                             student=STUDENTS[spec.arch](num_layers=profile.student_layers), dataset=train_ds,
                             kd=KDConfig(alpha=spec.alpha, temperature=profile.temperature, kd=profile.kd),
                             transfer=TransferConfig(tuple(spec.transfer),
                                                     profile.transfer_ratio if spec.transfer else None),
                             train_config=spec.config, resume=resume, quiet=quiet)

    def student_params(spec: StudentSpec) -> dict:
        return {"arch": spec.arch, "alpha": spec.alpha, "temperature": profile.temperature, "kd": profile.kd,
                "num_layers": profile.student_layers if spec.arch == "bert-small" else None}

    steps += student_steps(run_dir, teacher, profile, train_ds, transfer, names=STUDENTS, lstm="bilstm-crf",
                           run=run_student, identity=student_params, kd=f"{profile.kd} KD")

    methods = list(profile.quantize_methods) + (list(profile.gpu_methods) if cuda else [])
    steps += quantize_steps(run_dir, profile.quantize, methods, train_ds, quiet)

    for method, sparsity in profile.prune:
        out = run_dir / f"teacher-{'prune' if method == 'magnitude' else 'heads'}{round(sparsity * 100)}"

        def run_prune(resume: bool, out=out, method=method, sparsity=sparsity):
            from quantize.prune import prune

            return prune(model=teacher, out=out, method=method, sparsity=sparsity, finetune_epochs=0,
                         dataset=train_ds, quiet=quiet)

        steps.append(Step(out.name, f"prune the teacher ({method}, {sparsity:.0%})", out, "distill.json",
                          lambda method=method, sparsity=sparsity: _plain(
                              {"source": "teacher", "source_saved": _saved(teacher), "method": method,
                               "sparsity": sparsity, "finetune_epochs": 0, "dataset": train_ds}),
                          run_prune, required=False))

    steps.append(report_step(run_dir, report_ds, threads, profile.latency_sentences, quiet))
    return steps


def run_pipeline(*, run_dir: str | Path, profile: str | Profile = "quick", dataset: DataConfig | dict | None = None,
                 backbone: str | None = None, threads: int | None = None, quiet: bool = False) -> list[dict[str, Any]]:
    """Run every step not already done into ``run_dir``; returns one record per step.

    ``profile``: a name in :data:`distill.pipeline_profiles.PROFILES` or a :class:`Profile`; ``dataset``: the data options
    overriding the profile's (:class:`distill.config.DataConfig`; default: built-in msra); a text
    classification dataset (built-in ``sentiment``, or ``"task": "classify"``) runs
    :func:`distill.pipeline_classify.plan_classify` with the profile of that name there;
    ``backbone``: the teacher's encoder (default: bundled MiniLM). Raises DistillError
    when a step fails; a failed quantization or pruning step is reported after the
    report has been written.
    """
    import torch
    from rich.console import Console

    classify = dataset is not None and DataConfig.of(dataset).is_text
    if isinstance(profile, str):
        from distill.pipeline_classify import get_classify_profile

        prof = get_classify_profile(profile) if classify else get_profile(profile)
    else:
        prof = profile
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise DistillError(f"{run_dir}: is a file, expected a run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    train_ds, report_ds = normalise_dataset(dataset, prof)
    cuda = torch.cuda.is_available()
    adapt = getattr(prof, "adapt", None) is not None and extends_vocabulary(backbone, train_ds)
    if classify:
        from distill.pipeline_classify import plan_classify

        steps = plan_classify(run_dir=run_dir, profile=prof, train_ds=train_ds, report_ds=report_ds,
                              backbone=backbone, cuda=cuda, threads=threads, quiet=quiet)
    else:
        steps = plan(run_dir=run_dir, profile=prof, train_ds=train_ds, report_ds=report_ds, backbone=backbone,
                     cuda=cuda, threads=threads, quiet=quiet, adapt=adapt)
    write_json(run_dir / "profile.json", {
        "task": "classify" if classify else "tag",
        "profile": asdict(prof), "dataset": train_ds, "report_dataset": report_ds, "backbone": backbone,
        "cuda": cuda, "gpu_methods": list(prof.gpu_methods) if cuda else "skipped: no CUDA GPU",
        "adapt": adapt if getattr(prof, "adapt", None) is not None else "off in this profile",
        "steps": [s.name for s in steps]})
    console = Console(stderr=True, quiet=quiet)
    records = StepRecords(run_dir)
    summary, failed = [], []
    for i, step in enumerate(steps, 1):
        console.print(f"[bold cyan]step {i}/{len(steps)}[/]: {step.title}")
        params = step.params()
        if step.made_with and not records.is_done(step, params):
            _adopt(step, params, records, console)
        if records.is_done(step, params):
            console.print("  skipped: already done with these settings")
            summary.append({"step": step.name, "status": "skipped"})
            continue
        resume = step.trains and (records.read(step.name).get("params") == params or (
            step.made_with is not None and step.made_with(params))) \
            and _training_finished(step.output) is False
        if resume:
            console.print("  resuming from the checkpoint")
        records.write(step.name, {"params": params, "status": "started", "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        t0 = time.time()
        try:
            step.run(resume)
        except Exception as e:  # noqa: BLE001 — optional steps must not stop the report
            if step.required or not isinstance(e, (DistillError, RuntimeError, ValueError, OSError, ImportError)) \
                    or os.environ.get("DISTILL_DEBUG") == "1":
                if isinstance(e, DistillError):
                    raise DistillError(f"step {i}/{len(steps)} ({step.title}) failed: {e} "
                                       f"(`distill run` again continues from this step)") from None
                raise
            message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            records.write(step.name, {"params": params, "status": "failed", "error": message})
            console.print(f"  [red]failed[/]: {message}")
            if (step.output / step.marker).exists():  # made from an older source: the report must not show it
                shutil.rmtree(step.output, ignore_errors=True)
                console.print(f"  removed the stale {step.output.name} made by an earlier run")
            failed.append(f"{step.name} ({message})")
            summary.append({"step": step.name, "status": "failed", "error": message})
            continue
        seconds = time.time() - t0
        if not (step.output / step.marker).exists():
            raise DistillError(f"step {i}/{len(steps)} ({step.title}) finished but wrote no {step.output / step.marker}")
        records.write(step.name, {"params": params, "status": "done", "seconds": round(seconds, 1),
                                  "output_saved": _saved(step.output), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        console.print(f"  done in {_clock(seconds)}")
        summary.append({"step": step.name, "status": "done", "seconds": round(seconds, 1)})
    total = sum(s.get("seconds", 0) for s in summary)
    console.print(f"[bold]finished[/]: {sum(s['status'] == 'done' for s in summary)} steps run in {_clock(total)}, "
                  f"{sum(s['status'] == 'skipped' for s in summary)} skipped; report: {run_dir / 'report' / 'report.md'}")
    if failed:
        raise DistillError(f"{len(failed)} step(s) failed: {'; '.join(failed)}; the report covers the other models")
    return summary

def _adapted_matches(folder: Path, params: dict) -> bool:
    """Whether ``folder`` holds a finished `distill teacher adapt` of the backbone, text and
    settings that ``params`` (the pipeline's adapt step) asks for."""
    from distill.data import load_dataset
    from teachers.backbones import resolve_backbone

    try:
        info = json.loads((folder / "adapt.json").read_text(encoding="utf-8"))
        config = {k: v for k, v in info["config"].items() if k != "checkpoint_every"}
        same = (info["source_backbone"] == resolve_backbone(params["backbone"]) and config == params["config"]
                and info["extend_vocab"] is True and info["min_count"] == 2)
        return same and info["text"]["fingerprint"] == load_dataset(**params["dataset"]).train.fingerprint()
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False
