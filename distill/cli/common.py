"""Options shared by several commands, and small helpers for command functions."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Optional

import typer

from distill.config import DEFAULT_DATASET
DATASET = typer.Option(DEFAULT_DATASET, "--dataset", help="Built-in dataset name (used when --train is not given).")
TRAIN = typer.Option(None, "--train", help="Training file (CoNLL, MSRA, JSONL, or the text of two files); default: the built-in dataset.")
DEV = typer.Option(None, "--dev", help="Dev file; default: a deterministic split carved from train.")
TEST = typer.Option(None, "--test", help="Test file; default: the built-in test set (or dev).")
FORMATS_HELP = ("auto|conll|msra|jsonl|twofile (twofile: text file plus a tag file; a tag file implies it); "
                "text classification: auto|tsv|csv|jsonl|txt")
FORMAT = typer.Option("auto", "--format", help=FORMATS_HELP)


def tags_option(flag: str, of: str):
    """The option naming the tag file of a data file in the two-file format."""
    return typer.Option(None, flag, help=f"Tag file of {of} (two-file format): one line of space-separated tags per "
                                         "text line; one tag per character for text without spaces.")


TAGS_FILE = tags_option("--tags-file", "--train")
DEV_TAGS_FILE = tags_option("--dev-tags-file", "--dev")
TEST_TAGS_FILE = tags_option("--test-tags-file", "--test")
MAX_TRAIN = typer.Option(None, "--max-train", help="Use a deterministic random subset of this many train sentences.")
MAX_DEV = typer.Option(None, "--max-dev", help="Use at most this many dev sentences.")
MAX_TEST = typer.Option(None, "--max-test", help="Use at most this many test sentences.")
CHECKPOINT_MINUTES = typer.Option(10.0, "--checkpoint-minutes", help="Also write a resumable checkpoint mid-epoch this often (0: off).")
CHECKPOINT_EVERY = typer.Option(0, "--checkpoint-every", help="Also write a resumable checkpoint every N optimizer steps (0: off).")


def quiet_libraries() -> None:
    """Silence library chatter (load reports, download bars) that is not the user's business."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    logging.getLogger("torch").setLevel(logging.ERROR)


TASKS = ("tag", "classify")
TEXT_DEFAULT_DATASET = "sentiment"  # the built-in dataset of --task classify


def task_option(what: str):
    return typer.Option(None, "--task", help=f"tag | classify (default: {what}).")


def resolve_task(task: Optional[str], dataset: str, model_task: Optional[str] = None, model: Optional[Path] = None) -> str:
    """The task of a command: ``--task``, else the model folder's (``model_task``), else
    classify for a built-in text dataset (``--dataset sentiment``), else tag. A ``--task``
    that contradicts the model folder is an error."""
    from distill.errors import DistillError
    from distill.textdata import TEXT_DATASETS

    if task is not None and task not in TASKS:
        raise DistillError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if task is not None and model_task is not None and task != model_task:
        what = "a text classifier" if model_task == "classify" else "a tagger"
        raise DistillError(f"{model}: is {what} (task {model_task!r}); --task {task} does not apply")
    if task == "tag" and dataset in TEXT_DATASETS:
        raise DistillError(f"--dataset {dataset} is a text classification dataset; --task tag does not apply")
    return task or model_task or ("classify" if dataset in TEXT_DATASETS else "tag")


def model_task(folder: Optional[Path]) -> Optional[str]:
    """The task a model folder records (``meta["task"]``; a tagger records none): None without a folder."""
    if folder is None:
        return None
    from distill.modeling import read_meta

    return (read_meta(folder).get("meta") or {}).get("task") or "tag"


def data_config(dataset: str, train: Optional[Path], dev: Optional[Path], test: Optional[Path], fmt: str,
                max_train: Optional[int] = None, max_dev: Optional[int] = None, max_test: Optional[int] = None, *,
                tags_file: Optional[Path] = None, dev_tags_file: Optional[Path] = None,
                test_tags_file: Optional[Path] = None, task: str = "tag"):
    """The :class:`distill.config.DataConfig` of the shared data options (tag files recorded only
    when given, so the data a model records is unchanged without them). ``task`` classify reads
    the tagging default dataset as the built-in ``sentiment``, and marks the user's own files
    ``"task": "classify"`` in place of a name (tag files are kept, so the reader refuses them
    by name)."""
    from distill.config import DataConfig

    name: Optional[str] = dataset
    if task == "classify" and dataset == DEFAULT_DATASET:
        name = None if train is not None else TEXT_DEFAULT_DATASET
    return DataConfig(name=name, train=train, dev=dev, test=test, fmt=fmt, max_train=max_train, max_dev=max_dev,
                      max_test=max_test, tags_file=tags_file, dev_tags_file=dev_tags_file,
                      test_tags_file=test_tags_file, task="classify" if task == "classify" and train is not None
                      else None)


def reject_options(task: str, given: dict[str, bool]) -> None:
    """One line naming the first option (``--flag``: given) that does not apply to ``task``."""
    from distill.errors import DistillError

    for flag, used in given.items():
        if used:
            other = "tagging" if task == "classify" else "text classification"
            raise DistillError(f"{flag} is for {other}; it does not apply to --task {task}")
