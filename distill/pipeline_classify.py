"""``distill run`` for text classification: the same resumable steps as for tagging
(:mod:`distill.pipeline_steps` makes them, :mod:`distill.pipeline` runs them), planned for
classifier folders. Layout::

    RUN_DIR/teacher                         the BERT classifier (e5-small by default)
    RUN_DIR/bilstm, bilstm-kd, bert-small, bert-small-kd
                                            students: gold labels only, and distilled
                                            (alpha * CE + (1 - alpha) * T^2 * KL over logits,
                                            transfer texts with the KD term alone)
    RUN_DIR/bilstm-kd-labelled              the distilled BiLSTM without the transfer set
    RUN_DIR/<model>-int8, <model>-onnx-int8 compressed forms
    RUN_DIR/report

The built-in dataset ``sentiment`` (or ``--task classify`` with a user's files) selects this
plan; the profile of the same name sets its sizes (:data:`CLASSIFY_PROFILES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from distill.config import DataConfig, TextTransferConfig
from distill.errors import DistillError
from distill.pipeline_profiles import check_profile
from distill.pipeline_steps import (Step, StudentSpec, _config_key, _plain, quantize_steps, report_step,
                                    student_steps)
from distill.train import TrainConfig

STUDENTS = ("bilstm", "bilstm-kd", "bert-small", "bert-small-kd")


def _student_config(arch: str, **overrides) -> TrainConfig:
    from students.classify import default_classifier_train_config

    return default_classifier_train_config(arch, **overrides)


def classifier_teacher_config(**overrides) -> TrainConfig:
    """The e5-small classifier recipe: 3 epochs, batch 32, encoder 1e-4, head 1e-3, 6% warmup
    then linear decay, early stopping on dev macro-F1 (chosen on dev; README's sentiment section)."""
    return TrainConfig(**dict(dict(epochs=3, lr=1e-4, head_lr=1e-3, patience=2), **overrides))


@dataclass
class ClassifyProfile:
    """How much the classification pipeline does. ``max_*`` cap the data (None: all of it)."""

    name: str
    max_train: int | None = None
    max_dev: int | None = None
    max_test: int | None = None
    teacher: TrainConfig = field(default_factory=classifier_teacher_config)
    max_length: int = 256  # sub-tokens the teacher reads: longer reviews keep their head and tail
    bilstm: TrainConfig = field(default_factory=lambda: _student_config("bilstm"))
    bert_small: TrainConfig = field(default_factory=lambda: _student_config("bert-small"))
    student_layers: int = 3
    # chosen on dev by benchmarks/sentiment_kd_table.sh (BiLSTM students, the cpu profile's data):
    # dev macro-F1 0.843 at T 4, alpha 0.1; 0.842 at T 2, alpha 0.5; 0.837 at T 1, alpha 0.5
    alpha: float = 0.1
    temperature: float = 4.0
    # the built-in data's train texts outside max_train, labels dropped (`sentiment:unlabelled[:N]`)
    transfer: tuple[str, ...] = ("sentiment:unlabelled",)
    transfer_ratio: float | None = None  # transfer texts per labelled one per epoch (None: all, once)
    kd_without_transfer: bool = True  # also bilstm-kd-labelled: what the transfer set adds
    quantize: tuple[str, ...] = ("teacher", "bilstm-kd", "bert-small-kd")
    quantize_methods: tuple[str, ...] = ("int8", "onnx-int8")
    gpu_methods: tuple[str, ...] = ("fp16", "bnb8")
    latency_sentences: int = 300

    def __post_init__(self):
        check_profile(self, STUDENTS)


def quick_profile() -> ClassifyProfile:
    """A few minutes on a 2-core CPU: 1,000 labelled reviews, 3,000 transfer texts, 1,000 test reviews."""
    return ClassifyProfile(name="quick", max_train=1000, max_dev=300, max_test=1000,
                           teacher=classifier_teacher_config(epochs=2), max_length=128,
                           transfer=("sentiment:unlabelled:3000",),
                           bilstm=_student_config("bilstm", epochs=6),
                           bert_small=_student_config("bert-small", epochs=1), latency_sentences=200)


def cpu_profile() -> ClassifyProfile:
    """The committed report (reports/sentiment-cpu): 2,000 labelled reviews and the rest of the
    training split as transfer text, the full dev and test splits. The 3-layer BERTs train up to
    3 epochs and keep their best on dev (with the transfer set that is ~14,000 texts an epoch).
    The teacher and the distilled students are also exported to fp32 ONNX, so their speeds
    compare within one runtime as well as in PyTorch."""
    return ClassifyProfile(name="cpu", max_train=2000, bert_small=_student_config("bert-small", epochs=3),
                           quantize_methods=("int8", "onnx", "onnx-int8"))


def cpu_all_profile() -> ClassifyProfile:
    """Every model on all 13,891 labelled training reviews, no transfer set (reports/sentiment-all-cpu):
    what the labels alone give, beside the cpu profile's 2,000. One epoch for the teacher and the
    3-layer BERTs, which keeps the whole run to about 45 minutes on 2 cores."""
    return ClassifyProfile(name="cpu-all", teacher=classifier_teacher_config(epochs=1), transfer=(),
                           kd_without_transfer=False, bert_small=_student_config("bert-small", epochs=1),
                           quantize_methods=("onnx-int8",), latency_sentences=200)


def full_profile() -> ClassifyProfile:
    """Every training label, no transfer set (there is no unlabelled text left): for a GPU."""
    return ClassifyProfile(name="full", transfer=(), kd_without_transfer=False,
                           quantize=("teacher",) + STUDENTS, latency_sentences=500)


CLASSIFY_PROFILES: dict[str, Callable[[], ClassifyProfile]] = {
    "quick": quick_profile, "cpu": cpu_profile, "cpu-all": cpu_all_profile, "full": full_profile}


def get_classify_profile(name: str) -> ClassifyProfile:
    if name not in CLASSIFY_PROFILES:
        raise DistillError(f"unknown profile {name!r}; expected one of {', '.join(CLASSIFY_PROFILES)}")
    return CLASSIFY_PROFILES[name]()


def plan_classify(*, run_dir: Path, profile: ClassifyProfile, train_ds: dict, report_ds: dict,
                  backbone: str | None, cuda: bool, threads: int | None, quiet: bool) -> list:
    """The classification pipeline's steps, in order (see the module docstring)."""
    teacher = run_dir / "teacher"
    steps: list[Step] = []

    def run_teacher(resume: bool):
        from teachers.train import ClassifierTeacherConfig, train_classifier_teacher

        config = ClassifierTeacherConfig(backbone=backbone, max_length=profile.max_length)
        return train_classifier_teacher(out=teacher, dataset=train_ds, config=config,
                                        train_config=profile.teacher, resume=resume, quiet=quiet)

    steps.append(Step("teacher", "teacher (BERT classifier)", teacher, "distill.json",
                      lambda: _plain({"task": "classify", "backbone": backbone, "dataset": train_ds,
                                      "max_length": profile.max_length, "train_config": _config_key(profile.teacher)}),
                      run_teacher, trains=True))

    # the built-in transfer set is the training split outside the labelled budget: none without one
    builtin = DataConfig.from_json(train_ds).builtin == "sentiment"
    transfer = list(profile.transfer) if builtin and train_ds.get("max_train") else []

    def run_student(spec: StudentSpec, resume: bool):
        from students.classify import CLASSIFY_BUILDERS, train_classifier_student

        return train_classifier_student(out=spec.out, teacher=spec.teacher,
                                        student=CLASSIFY_BUILDERS[spec.arch](num_layers=profile.student_layers),
                                        dataset=train_ds, alpha=spec.alpha, temperature=profile.temperature,
                                        transfer=TextTransferConfig(tuple(spec.transfer),
                                                                    profile.transfer_ratio if spec.transfer else None),
                                        train_config=spec.config, resume=resume, quiet=quiet)

    def student_params(spec: StudentSpec) -> dict:
        return {"task": "classify", "arch": spec.arch, "alpha": spec.alpha,
                "temperature": profile.temperature if spec.alpha < 1 else None,
                "num_layers": profile.student_layers if spec.arch == "bert-small" else None}

    steps += student_steps(run_dir, teacher, profile, train_ds, transfer, names=STUDENTS, lstm="bilstm",
                           run=run_student, identity=student_params, gold="gold labels only")

    methods = list(profile.quantize_methods) + (list(profile.gpu_methods) if cuda else [])
    steps += quantize_steps(run_dir, profile.quantize, methods, train_ds, quiet)
    steps.append(report_step(run_dir, report_ds, threads, profile.latency_sentences, quiet))
    return steps
