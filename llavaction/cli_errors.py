"""One-line errors for every command-line tool: a known error (bad input, a missing file) prints
`error: <message>` on stderr and exits with status 2, without a traceback; `--debug`, or LLAVACTION_DEBUG=1 in the
environment, shows it. Unexpected errors (bugs) keep their traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

KNOWN_ERRORS = (ValueError, OSError, LookupError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        return f"{error.filename}: {error.strerror or error}"
    return str(error) or type(error).__name__


def run_cli(body: Callable[[], int], debug: bool = False) -> int:
    """body's exit status, or 2 with a one-line error for a known error."""
    try:
        return body()
    except KNOWN_ERRORS as error:
        if debug or os.environ.get("LLAVACTION_DEBUG"):
            raise
        print(f"error: {message(error)}", file=sys.stderr)
        return 2
