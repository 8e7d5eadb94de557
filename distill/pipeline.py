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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from distill.config import DEFAULT_DATASET, DataConfig, TransferConfig
from distill.errors import DistillError
from distill.fileio import write_json
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
    """About 20 minutes end to end on a 2-core CPU (the README gives the measured time)."""
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
                   bert_small=_student_config("bert-small", epochs=1),
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


TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
BOOKKEEPING = ("checkpoint_minutes", "checkpoint_every")  # TrainConfig fields that do not change the model
ADAPTED = "backbone-adapted"


def _config_key(cfg: TrainConfig) -> dict[str, Any]:
    """A training config as step params: every field that can change the trained model."""
    return {k: v for k, v in asdict(cfg).items() if k not in BOOKKEEPING}


def _plain(obj: Any) -> Any:
    """What ``obj`` looks like after a JSON round trip (so params compare equal to recorded ones)."""
    return json.loads(json.dumps(obj, default=str))


@dataclass
class Step:
    name: str  # the record's name in RUN_DIR/.steps, and the output folder's name for models
    title: str
    output: Path
    marker: str  # the file in ``output`` that exists once the step's output is complete
    params: Callable[[], dict]  # computed when the step is reached (it may need upstream outputs)
    run: Callable[[bool], Any]  # run(resume)
    trains: bool = False  # a training step: resumable from OUT.work/checkpoint.pt
    required: bool = True  # a failure stops the pipeline (else it is reported and the rest goes on)
    # whether ``output`` was made with these params outside the pipeline (by hand); such an
    # output is adopted when its training finished, and resumed when it did not
    made_with: Callable[[dict], bool] | None = None


def _saved(folder: Path) -> str | None:
    """The ``saved`` stamp of a model folder (None when it is not one)."""
    try:
        return json.loads((folder / "distill.json").read_text(encoding="utf-8")).get("saved")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


class StepRecords:
    """RUN_DIR/.steps/<name>.json: a step's params, status and the stamp of the output it made."""

    def __init__(self, run_dir: Path):
        self.folder = run_dir / ".steps"

    def read(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.folder / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def write(self, name: str, record: dict[str, Any]) -> None:
        write_json(self.folder / f"{name}.json", record)

    def is_done(self, step: Step, params: dict) -> bool:
        rec = self.read(step.name)
        if rec.get("status") != "done" or rec.get("params") != params or not (step.output / step.marker).exists():
            return False
        return step.marker != "distill.json" or rec.get("output_saved") == _saved(step.output)


def _training_finished(out: Path) -> bool | None:
    """Whether the training that wrote ``out`` finished: None when there is no checkpoint to tell."""
    ckpt = out.with_name(out.name + ".work") / "checkpoint.pt"
    if not ckpt.exists():
        return None
    from distill.train import load_checkpoint

    try:
        return bool(load_checkpoint(ckpt)["state"].get("done"))
    except DistillError:  # an unreadable checkpoint cannot be resumed either
        return False


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


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
                             kd=KDConfig(alpha=spec.alpha, temperature=profile.temperature),
                             transfer=TransferConfig(tuple(spec.transfer),
                                                     profile.transfer_ratio if spec.transfer else None),
                             train_config=spec.config, resume=resume, quiet=quiet)

    def student_params(spec: StudentSpec) -> dict:
        return {"arch": spec.arch, "alpha": spec.alpha, "temperature": profile.temperature, "kd": "emission",
                "num_layers": profile.student_layers if spec.arch == "bert-small" else None}

    steps += student_steps(run_dir, teacher, profile, train_ds, transfer, names=STUDENTS, lstm="bilstm-crf",
                           run=run_student, identity=student_params)

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


@dataclass
class StudentSpec:
    """One student of a plan: its folder, architecture, alpha (1: gold labels alone), training
    config, the teacher it learns from (None: none) and its transfer sources."""

    name: str
    out: Path
    arch: str
    alpha: float
    config: TrainConfig
    teacher: Path | None
    transfer: list[str]


def student_steps(run_dir: Path, teacher: Path, profile, train_ds: dict, transfer: list[str], *, names,
                  lstm: str, run: Callable[[StudentSpec, bool], Any], identity: Callable[[StudentSpec], dict],
                  gold: str = "gold tags only") -> list[Step]:
    """The students' training steps, taggers or classifiers alike: names starting ``bert-small``
    are the small BERT, the others the ``lstm`` architecture; ``-kd`` names distil at the
    profile's alpha and T with the ``transfer`` sources, and with a transfer set a
    ``<lstm>-kd-labelled`` twin distils without it (``profile.kd_without_transfer``); the others
    learn gold labels alone. ``run(spec, resume)`` trains one; ``identity(spec)`` gives its
    own params, to which the data, schedule, teacher and transfer set are added here."""
    names = list(names)
    kd_lstm = next(n for n in names if n.endswith("-kd") and not n.startswith("bert-small"))
    if transfer and profile.kd_without_transfer:
        names.insert(names.index(kd_lstm) + 1, kd_lstm + "-labelled")
    steps = []
    for name in names:
        arch = "bert-small" if name.startswith("bert-small") else lstm
        alpha = profile.alpha if "-kd" in name else 1.0
        spec = StudentSpec(name, run_dir / name, arch, alpha,
                           profile.bert_small if arch == "bert-small" else profile.bilstm,
                           teacher if arch == "bert-small" or alpha < 1 else None,  # gold alone: no teacher
                           transfer if alpha < 1 and not name.endswith("-labelled") else [])

        def params(spec=spec):
            return _plain({**identity(spec), "dataset": train_ds, "train_config": _config_key(spec.config),
                           "teacher_saved": _saved(spec.teacher) if spec.teacher else None,
                           **({"transfer": spec.transfer, "transfer_ratio": profile.transfer_ratio}
                              if spec.transfer else {})})

        what = f"distilled, alpha {profile.alpha}, T {profile.temperature}" if alpha < 1 else gold
        what += f", transfer {'+'.join(spec.transfer)}" if spec.transfer else ""
        steps.append(Step(name, f"student {name} ({what})", spec.out, "distill.json", params,
                          lambda resume, spec=spec: run(spec, resume), trains=True))
    return steps


def quantize_steps(run_dir: Path, sources, methods, train_ds: dict, quiet: bool) -> list[Step]:
    """One optional step per (model, method): ``RUN_DIR/<model>-<method>`` (taggers or classifiers)."""
    steps = []
    for src in sources:
        for method in methods:
            source, out = run_dir / src, run_dir / f"{src}-{method}"

            def run_quantize(resume: bool, source=source, out=out, method=method):
                from quantize.api import quantize

                return quantize(method=method, model=source, out=out, dataset=train_ds, quiet=quiet)

            steps.append(Step(out.name, f"quantize {src} ({method})", out, "distill.json",
                              lambda source=source, method=method: _plain(
                                  {"source": source.name, "source_saved": _saved(source), "method": method}),
                              run_quantize, required=False))
    return steps


def report_step(run_dir: Path, report_ds: dict, threads: int | None, latency_sentences: int, quiet: bool) -> Step:
    """The comparison report over every model folder in ``run_dir``."""
    def report_params():
        from distill.bench import default_threads
        from distill.report import find_models

        models = {e.name: _saved(e.folder) for e in find_models(run_dir, exclude=[run_dir / "report"])}
        return _plain({"models": models, "dataset": report_ds, "threads": threads or default_threads(),
                       "latency_sentences": latency_sentences})

    def run_report(resume: bool):
        from distill.report import make_report

        return make_report(run_dir=run_dir, dataset=report_ds, threads=threads, latency_sentences=latency_sentences,
                           quiet=quiet)

    return Step("report", "comparison report", run_dir / "report", "report.json", report_params, run_report)


def run_pipeline(*, run_dir: str | Path, profile: str | Profile = "quick", dataset: DataConfig | dict | None = None,
                 backbone: str | None = None, threads: int | None = None, quiet: bool = False) -> list[dict[str, Any]]:
    """Run every step not already done into ``run_dir``; returns one record per step.

    ``profile``: a name in :data:`PROFILES` or a :class:`Profile`; ``dataset``: the data options
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


def _teacher_params_match(folder: Path, params: dict) -> bool:
    """Whether the teacher in ``folder`` was trained with ``params`` (what train_teacher records).

    Training configs compare as configs: a field the recorded one lacks (added to
    TrainConfig since) counts as its default, and checkpointing frequency is ignored.
    """
    try:
        meta = json.loads((folder / "distill.json").read_text(encoding="utf-8")).get("meta", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    recorded = meta.get("params") if isinstance(meta, dict) else None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("train_config"), dict):
        return False
    rec, want = dict(recorded), dict(params)
    try:
        rec_cfg = _config_key(TrainConfig(**{k: v for k, v in rec.pop("train_config").items() if k in TRAIN_FIELDS}))
    except (TypeError, ValueError):
        return False
    want_cfg = want.pop("train_config")
    return _plain(rec) == want and _plain(rec_cfg) == _plain({k: v for k, v in want_cfg.items() if k not in BOOKKEEPING})


def _adopt(step: Step, params: dict, records: StepRecords, console) -> None:
    """Take over an output made by hand with this step's settings (a teacher trained or a backbone
    adapted with `distill teacher ...`), when its training finished."""
    if step.made_with(params) and _training_finished(step.output) is not False:
        records.write(step.name, {"params": params, "status": "done", "adopted": True,
                                  "output_saved": _saved(step.output)})
        console.print(f"  using the {step.name} output already made in {step.output} (same settings)")


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
