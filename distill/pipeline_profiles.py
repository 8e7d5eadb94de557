"""The profiles of ``distill run`` for tagging (quick, cpu, full): how much data, which training
recipes, what to quantize and prune, and the checks every pipeline profile shares
(:func:`check_profile`, also used by :mod:`distill.pipeline_classify`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from distill.errors import DistillError
from distill.train import TrainConfig

if TYPE_CHECKING:
    from teachers.adapt import AdaptConfig

STUDENTS = ("bilstm-crf", "bilstm-crf-kd", "bert-small", "bert-small-kd")


def _student_config(arch: str, **overrides) -> TrainConfig:
    from students.train import default_train_config

    return default_train_config(arch, **overrides)


@dataclass
class Profile:
    """How much of everything the pipeline does. ``max_*`` cap the data (None: all of it)."""

    name: str
    max_train: int | None = None
    max_dev: int | None = None
    max_test: int | None = None
    # MLM pretraining of the backbone before the teacher (`distill teacher adapt`); None: off.
    # Runs only when the vocabulary extension adds tokens for the training data.
    adapt: AdaptConfig | None = None
    teacher: TrainConfig = field(default_factory=lambda: e5_teacher_config())
    bilstm: TrainConfig = field(default_factory=lambda: _student_config("bilstm-crf"))
    bert_small: TrainConfig = field(default_factory=lambda: _student_config("bert-small"))
    student_layers: int = 3
    alpha: float = 0.5
    # T 1: emission KD at T 4 trailed T 1 at every alpha in benchmarks/experiments.sh (README), and a
    # T 4 BiLSTM-CRF trailed its gold-only twin by 12 dev F1 after 4 epochs at the cpu scale (this session)
    temperature: float = 1.0
    # what the distilled students match: emission (the teacher's tag scores), marginal (the CRF's
    # posterior marginals: 2.4 dev F1 above emission KD at T 1, alpha 0.5 in benchmarks/kd_table.sh),
    # or any other key of distill.kd.KD_LOSSES
    kd: str = "marginal"
    # Unlabelled text the distilled students also learn from (the teacher labels it), when the
    # data is the built-in MSRA: the train sentences outside max_train (`msra:unlabelled`, or
    # `msra:unlabelled:N` for a seeded N of them); () for none. A user's --train gets none.
    transfer: tuple[str, ...] = ("msra:unlabelled",)
    transfer_ratio: float | None = None  # transfer sentences per labelled one per epoch (None: all, once)
    # with a transfer set: also the distilled BiLSTM-CRF without it (bilstm-crf-kd-labelled), to show what it adds
    kd_without_transfer: bool = True
    quantize: tuple[str, ...] = ("teacher", "bilstm-crf-kd", "bert-small-kd")  # models to quantize
    quantize_methods: tuple[str, ...] = ("int8", "onnx-int8")
    gpu_methods: tuple[str, ...] = ("fp16", "bnb8")  # added when CUDA is available
    prune: tuple[tuple[str, float], ...] = (("magnitude", 0.5),)  # (method, sparsity) of the teacher
    latency_sentences: int = 500

    def __post_init__(self):
        check_profile(self, STUDENTS)
        from distill.kd import KD_LOSSES  # the one registry of KD losses

        if self.kd not in KD_LOSSES:
            raise ValueError(f"kd must be one of {', '.join(KD_LOSSES)}, got {self.kd!r}")
        from quantize.prune import PRUNE_METHODS

        for method, sparsity in self.prune:
            if method not in PRUNE_METHODS:
                raise ValueError(f"unknown pruning method {method!r}; expected one of {', '.join(PRUNE_METHODS)}")
            if not 0 < sparsity < 1:
                raise ValueError(f"pruning sparsity must be in (0, 1), got {sparsity}")


def check_profile(profile, students) -> None:
    """The checks every pipeline profile (tagging or classification) shares: data caps, alpha,
    T, student layers, latency sentences, what to quantize (the teacher or one of ``students``)
    and how (:func:`check_methods`)."""
    for name in ("max_train", "max_dev", "max_test"):
        v = getattr(profile, name)
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {v}")
    if not 0 <= profile.alpha < 1:
        raise ValueError(f"alpha of the distilled students must be in [0, 1), got {profile.alpha}")
    if not profile.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {profile.temperature}")
    if profile.student_layers < 1:
        raise ValueError(f"student_layers must be >= 1, got {profile.student_layers}")
    if profile.latency_sentences < 1:
        raise ValueError(f"latency_sentences must be >= 1, got {profile.latency_sentences}")
    for src in profile.quantize:
        if src not in ("teacher",) + tuple(students):
            raise ValueError(f"cannot quantize {src!r}; expected teacher or one of {', '.join(students)}")
    check_methods(tuple(profile.quantize_methods) + tuple(profile.gpu_methods))


def check_methods(methods) -> None:
    """Each name must be a method of :data:`quantize.api.QUANTIZE_METHODS` (the one registry)."""
    from quantize.api import QUANTIZE_METHODS

    for m in methods:
        if m not in QUANTIZE_METHODS:
            raise ValueError(f"unknown quantization method {m!r}; expected one of {', '.join(QUANTIZE_METHODS)}")


def e5_teacher_config(**overrides) -> TrainConfig:
    """The teacher recipe for the built-in e5-small backbone: 3 epochs, batch 32, encoder
    and embeddings at 2e-4, head 1e-3, CRF 1e-2, 6% warmup then linear decay
    (benchmarks/teacher_table.sh; README's teacher table)."""
    return TrainConfig(**dict(dict(epochs=3, lr=2e-4, head_lr=1e-3), **overrides))


def quick_profile() -> Profile:
    """About 13 minutes end to end on a 2-core CPU (the README gives the measured time)."""
    return Profile(name="quick", max_train=2000, max_dev=200, max_test=500,
                   teacher=e5_teacher_config(), transfer=("msra:unlabelled:4000",),
                   bilstm=_student_config("bilstm-crf", epochs=8),
                   bert_small=_student_config("bert-small", epochs=1),
                   latency_sentences=200)


def cpu_profile() -> Profile:
    """The longest run a 2-core CPU affords in about an hour and a half: 8,000 training
    sentences, the other ~40,000 MSRA train sentences as transfer text (16,000 of them in
    each epoch, a fresh shuffled pass as they run out), the full test set, magnitude and
    head pruning (the committed report)."""
    return Profile(name="cpu", max_train=8000, max_dev=1000, teacher=e5_teacher_config(), transfer_ratio=2.0,
                   bilstm=_student_config("bilstm-crf", epochs=12),
                   bert_small=_student_config("bert-small", epochs=3),
                   prune=(("magnitude", 0.5), ("heads", 0.5)), latency_sentences=300)


def full_profile() -> Profile:
    """The whole MSRA training set and test set: for a GPU (minutes) or a long CPU run (hours).
    The teacher recipe that won in benchmarks/margin.sh: three MLM epochs over the training
    text (the embeddings and MLM head alone for the first 300 steps), then three epochs of
    NER. The same as `distill teacher adapt --epochs 3 --embeddings-only-steps 300 --out
    RUN_DIR/backbone-adapted` and `distill teacher train --epochs 3 --backbone
    RUN_DIR/backbone-adapted --out RUN_DIR/teacher`, whose outputs are reused."""
    from teachers.adapt import AdaptConfig

    return Profile(name="full", adapt=AdaptConfig(epochs=3, embeddings_only_steps=300), transfer=(),
                   teacher=e5_teacher_config(),
                   bilstm=_student_config("bilstm-crf", epochs=12),
                   bert_small=_student_config("bert-small", epochs=2),
                   quantize=("teacher",) + STUDENTS, prune=(("magnitude", 0.5), ("heads", 0.5)),
                   latency_sentences=500)


PROFILES: dict[str, Callable[[], Profile]] = {"quick": quick_profile, "cpu": cpu_profile, "full": full_profile}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise DistillError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]()

