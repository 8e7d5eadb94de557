"""Typed, validated configs that carry options from the command line (or a pipeline profile)
to the code that uses them, and :class:`ConfigError`, the error a bad value raises.

:class:`DataConfig` names a dataset everywhere one is named: the commands build it from the
shared data options, the pipeline from its profile, and a model folder records its JSON
form (``meta["params"]["dataset"]``). That JSON form is exactly the dict recorded before
these configs existed, key for key and in the same order, so recorded params still compare
equal (the pipeline's reuse check) and folders written before still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from distill.errors import DistillError

DEFAULT_DATASET = "msra"  # the built-in tagging dataset: what a command reads when no data is named


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


class ConfigError(DistillError, ValueError):
    """A config value out of range: one line saying which option, what was expected and what
    was given (``--max-train must be an integer >= 1 or None, got 0``), or, for options that do
    not go together, the whole sentence as ``option`` alone. A :class:`DistillError`, so the CLI
    prints it as a one-line error; also a ``ValueError``, as the checks it replaces raised."""

    def __init__(self, option: str, expected: str | None = None, got: Any = None):
        self.option, self.expected, self.got = option, expected, got
        super().__init__(option if expected is None else f"{option} must be {expected}, got {_show(got)}")


def check_count(option: str, value: Any, low: int = 1, optional: bool = True) -> None:
    """``value`` must be an integer >= ``low`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(option, f"an integer >= {low}" + (" or None" if optional else ""), value)


def check_fraction(option: str, value: float | None) -> None:
    """``value`` must be None or in [0, 1) (a dropout probability)."""
    if value is not None and not 0 <= value < 1:
        raise ConfigError(option, "in [0, 1)", value)


class StudentBase:
    """What the student configs of both tasks share (:class:`students.train.StudentConfig`,
    :class:`students.classify.ClassifierStudentConfig`): ``num_layers`` None means as many as
    ``layers``, else 3; ``dropout`` is a probability; :attr:`TRAIN` is the architecture's
    training defaults."""

    TRAIN: ClassVar[dict[str, Any]]  # the TrainConfig fields this architecture trains with by default

    def __post_init__(self):
        if self.num_layers is None:
            object.__setattr__(self, "num_layers", len(self.layers) if self.layers is not None else 3)
        check_fraction("--dropout", self.dropout)

    @classmethod
    def train_config(cls, **overrides: Any):
        """The :class:`distill.train.TrainConfig` of this architecture, the given (non-None) fields overridden."""
        from distill.train import TrainConfig

        return TrainConfig(**dict(cls.TRAIN, **{k: v for k, v in overrides.items() if v is not None}))


@dataclass(frozen=True)
class TransferConfig:
    """Unlabelled text a student learns from the teacher alone: ``sources`` (a text file,
    ``corpus:FILE``, or a built-in set such as :attr:`BUILTIN`) and ``ratio`` transfer items
    per labelled item in each epoch (None: the whole set once per epoch)."""

    sources: tuple[str, ...] = ()
    ratio: float | None = None

    UNIT: ClassVar[str] = "sentence"  # what one item is, in messages
    BUILTIN: ClassVar[str] = "msra:unlabelled"

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        if self.ratio is not None and not self.sources:
            raise ConfigError(f"--transfer-ratio needs a transfer set (--transfer FILE or {self.BUILTIN})")
        if self.ratio is not None and not self.ratio > 0:
            raise ConfigError("--transfer-ratio", f"> 0 (transfer {self.UNIT}s per labelled {self.UNIT})", self.ratio)


@dataclass(frozen=True)
class TextTransferConfig(TransferConfig):
    """A text classifier's transfer set (texts, the built-in ``sentiment:unlabelled``)."""

    UNIT: ClassVar[str] = "text"
    BUILTIN: ClassVar[str] = "sentiment:unlabelled"


# the keys every command's dataset has, and those it has only when given (in this order)
DATA_KEYS = ("name", "train", "dev", "test", "fmt", "max_train", "max_dev", "max_test")
OPTIONAL_DATA_KEYS = ("tags_file", "dev_tags_file", "test_tags_file", "dev_size", "task")
PATH_KEYS = ("train", "dev", "test", "tags_file", "dev_tags_file", "test_tags_file")
DATA_OPTIONS = {"name": "--dataset", "fmt": "--format", "dev_size": "dev_size"}  # others: --max-train, ...


@dataclass(frozen=True)
class DataConfig:
    """A dataset: a built-in one (``name``) or the user's files, read in ``fmt``, capped at
    ``max_*`` items (a seeded random subset), with the tag files of the two-file format.
    ``task`` is ``"classify"`` for the user's own text-classification files (a built-in text
    dataset such as ``sentiment`` implies it). ``dev_size``: the dev split carved from train
    when there is no dev file (default: the loader's).

    ``keys`` are the keys of the JSON form, in order: by default those every command records
    (:data:`DATA_KEYS`) and the optional ones that are set; :meth:`from_json` keeps a recorded
    dict's own keys, so a sparse dict (``{"name": "msra"}``) stays sparse.
    """

    name: str | None = DEFAULT_DATASET
    train: str | Path | None = None
    dev: str | Path | None = None
    test: str | Path | None = None
    fmt: str | None = "auto"
    max_train: int | None = None
    max_dev: int | None = None
    max_test: int | None = None
    tags_file: str | Path | None = None
    dev_tags_file: str | Path | None = None
    test_tags_file: str | Path | None = None
    dev_size: int | float | None = None
    task: str | None = None
    keys: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self):
        from distill.data import FORMATS
        from distill.textdata import FORMATS as TEXT_FORMATS

        if self.keys is None:
            object.__setattr__(self, "keys", DATA_KEYS + tuple(k for k in OPTIONAL_DATA_KEYS
                                                                 if getattr(self, k) is not None))
        formats = tuple(dict.fromkeys(FORMATS + TEXT_FORMATS))
        if self.fmt is not None and self.fmt not in formats:
            raise ConfigError("--format", f"one of {', '.join(formats)}", self.fmt)
        for key in ("max_train", "max_dev", "max_test"):
            check_count(self.option(key), getattr(self, key))
        if self.dev_size is not None and (isinstance(self.dev_size, bool) or not self.dev_size > 0):
            raise ConfigError("dev_size", "a number > 0 (sentences, or a fraction of train below 1)", self.dev_size)
        if self.task not in (None, "classify"):
            raise ConfigError("a dataset's task", "'classify' or none (tagging)", self.task)

    @staticmethod
    def option(key: str) -> str:
        """The command-line option of a field (``max_train`` -> ``--max-train``)."""
        return DATA_OPTIONS.get(key) or "--" + key.replace("_", "-")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataConfig:
        """The config of a dataset dict as recorded in a model folder or a pipeline record
        (or passed by a caller): its keys and values kept."""
        if not isinstance(data, dict):
            raise ConfigError("a dataset", "a dict of dataset options", type(data).__name__)
        known = DATA_KEYS + OPTIONAL_DATA_KEYS
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError("a dataset's options", f"some of {', '.join(known)}", unknown[0])
        return cls(**data, keys=tuple(data))

    @classmethod
    def of(cls, data: DataConfig | dict[str, Any]) -> DataConfig:
        """``data`` as a config (a dict is read by :meth:`from_json`)."""
        return data if isinstance(data, DataConfig) else cls.from_json(data)

    def to_json(self) -> dict[str, Any]:
        """The dataset as recorded in params and passed to the loaders: the :attr:`keys`, paths as str."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in ((k, getattr(self, k)) for k in self.keys)}

    def replace(self, **changes: Any) -> DataConfig:
        """A copy with ``changes``; a key the JSON form lacked is added at its end (as ``dict(d, **changes)``)."""
        keys = self.keys + tuple(k for k in changes if k not in self.keys)
        return dataclasses.replace(self, **changes, keys=keys)

    def given(self) -> DataConfig:
        """The same dataset with only the keys that are set (not None): options overriding a default."""
        return DataConfig.from_json({k: v for k, v in self.to_json().items() if v is not None})

    @property
    def is_text(self) -> bool:
        """Whether this is text classification data (a built-in text dataset, or ``task`` classify)."""
        from distill.textdata import is_text_dataset

        return is_text_dataset(self.to_json())

    @property
    def builtin(self) -> str | None:
        """The built-in dataset's name when no train file is given (None for the user's files)."""
        data = self.to_json()
        if data.get("train") is not None:
            return None
        return data.get("name") or ("sentiment" if self.is_text else DEFAULT_DATASET)

    def load(self):
        """The tagging dataset (:func:`distill.data.load_dataset`)."""
        from distill.data import load_dataset

        return load_dataset(**self.to_json())

    def load_text(self):
        """The text classification dataset (:func:`distill.textdata.load_text_dataset`)."""
        from distill.textdata import load_text_dataset

        return load_text_dataset(self.to_json())
