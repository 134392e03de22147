"""One-line errors for every command-line tool: a known error (bad input, a missing file, a bad argument) prints
`error: <message>` on stderr and exits with status 2, without a traceback; `--debug`, or LLAVACTION_DEBUG=1 in the
environment, shows it. Unexpected errors (bugs) keep their traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

KNOWN_ERRORS = (ValueError, OSError, LookupError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (`error: argument --batch-size: must be at least 1, got 0`) and the module
    docstring kept as written; `--help` still prints the usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def count(minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (frames, batch size, workers, devices...)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def message(error: BaseException) -> str:
    """The error's own line: a DataLoader worker's error (re-raised with the worker's traceback in its text) is
    reduced to the original message."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name, colon, rest = last.partition(": ")
        return rest if colon and "." in name or name.endswith(("Error", "Exception")) else last
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, OSError) and error.errno and error.strerror and not error.filename:
        return error.strerror  # our own OSErrors carry the path in their text: no "[Errno 28]" before it
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
