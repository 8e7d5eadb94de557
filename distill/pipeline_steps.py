"""The step machinery of ``distill run``, shared by the tagging and classification plans: a
:class:`Step`, the ``RUN_DIR/.steps`` records that decide whether it is done, adopting an
output made by hand, and the student, quantization and report steps both plans use."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from distill.errors import DistillError
from distill.fileio import write_json
from distill.train import TrainConfig

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
BOOKKEEPING = ("checkpoint_minutes", "checkpoint_every")  # TrainConfig fields that do not change the model


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
                  gold: str = "gold tags only", kd: str = "") -> list[Step]:
    """The students' training steps, taggers or classifiers alike: names starting ``bert-small``
    are the small BERT, the others the ``lstm`` architecture; ``-kd`` names distil at the
    profile's alpha and T with the ``transfer`` sources, and with a transfer set a
    ``<lstm>-kd-labelled`` twin distils without it (``profile.kd_without_transfer``); the others
    learn gold labels alone. ``run(spec, resume)`` trains one; ``identity(spec)`` gives its
    own params, to which the data, schedule, teacher and transfer set are added here. ``gold`` and
    ``kd`` name what the gold-only and the distilled students learn, for the step titles."""
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

        what = f"distilled, {kd + ', ' if kd else ''}alpha {profile.alpha}, T {profile.temperature}" if alpha < 1 else gold
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
        from distill.report_steps import find_models

        models = {e.name: _saved(e.folder) for e in find_models(run_dir, exclude=[run_dir / "report"])}
        return _plain({"models": models, "dataset": report_ds, "threads": threads or default_threads(),
                       "latency_sentences": latency_sentences})

    def run_report(resume: bool):
        from distill.report import make_report

        return make_report(run_dir=run_dir, dataset=report_ds, threads=threads, latency_sentences=latency_sentences,
                           quiet=quiet)

    return Step("report", "comparison report", run_dir / "report", "report.json", report_params, run_report)

