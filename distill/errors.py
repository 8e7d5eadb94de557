"""The project's own errors: a user error prints as one line and exits 1."""

from __future__ import annotations

from pathlib import Path


class DistillError(Exception):
    """A user-facing error: bad input, bad option, missing or corrupt file.

    The CLI prints ``str(error)`` as a single line and exits with status 1.
    """


class DataError(DistillError):
    """A problem in an input data file, located by file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
