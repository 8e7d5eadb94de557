"""The ``distill`` command line: one typer app, one module per command group.

Command functions parse options and call plain keyword-only functions; heavy
libraries are imported inside those, so ``distill --help`` stays instant.
"""

from __future__ import annotations

import os
import sys

import typer

from distill.errors import DistillError

app = typer.Typer(
    name="distill", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Knowledge distillation and compression for sequence labelling (NER).",
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")):
    if debug:
        os.environ["DISTILL_DEBUG"] = "1"


from distill.cli import common, predict, quantize, report, student, teacher  # noqa: E402,F401  (registers commands)
from distill.cli import adapt  # noqa: E402,F401  (after teacher: adds `teacher adapt`)


def main() -> None:
    """Entry point: user errors print one line and exit 1; ``--debug`` shows tracebacks."""
    debug = "--debug" in sys.argv or os.environ.get("DISTILL_DEBUG") == "1"
    try:
        app(standalone_mode=False)
    except DistillError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        # usage errors and --help exits: typer vendors click, so match by behaviour, not by class
        if type(e).__name__ == "BadParameter" and hasattr(e, "format_message"):  # e.g. a path that does not exist
            print(f"error: {e.format_message()}", file=sys.stderr)
            sys.exit(1)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Exit":
            sys.exit(getattr(e, "exit_code", 0))
        raise
