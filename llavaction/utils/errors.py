"""One-line errors for every command-line tool: a known error (bad input, a missing file) prints `error: <message>` on
stderr and exits with status 2, without a traceback; `--debug`, or LLAVACTION_DEBUG=1 in the environment, shows it.
Unexpected errors (bugs) keep their traceback. Bad options are refused the same way by the parsers
(llavaction.utils.options, llavaction.cli.train). Ctrl-C is one line too (exit status 130): every output is written
whole or not at all, so an interrupted command leaves nothing half-written to report."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

KNOWN_ERRORS = (ValueError, OSError, LookupError)


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
    if (
        isinstance(error, OSError)
        and error.filename
        and (str(error.filename) not in str(error) or str(error).startswith("[Errno"))
    ):
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, OSError) and error.errno and error.strerror and not error.filename:
        return error.strerror  # our own OSErrors carry the path in their text: no "[Errno 28]" before it
    return str(error) or type(error).__name__


INTERRUPTED = 130  # the shell's status of a command stopped by Ctrl-C (128 + SIGINT)


def run_cli(body: Callable[[], int], debug: bool = False) -> int:
    """body's exit status, or 2 with a one-line error for a known error, or 130 with one line for Ctrl-C."""
    try:
        return body()
    except KNOWN_ERRORS as error:
        if debug or os.environ.get("LLAVACTION_DEBUG"):
            raise
        print(f"error: {message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug or os.environ.get("LLAVACTION_DEBUG"):
            raise
        print(
            "error: interrupted (Ctrl-C); outputs are written whole or not at all: nothing half-written is left, and "
            "an extraction continues with --resume",
            file=sys.stderr,
        )
        return INTERRUPTED
