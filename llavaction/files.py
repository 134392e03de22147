"""Outputs written whole or not at all: a file is written under a temporary name in its own folder and renamed to its
final name only when complete, so a crash or a full disk never leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is complete: a hidden name of this process in the same folder (a rename
    within one filesystem is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_output(path: Path | str, mode: str = "w") -> Iterator[IO]:
    """Open `path` for writing ('w' text, 'wb' bytes) under a temporary name; renamed to `path` when the block ends
    without error. On an error the temporary file is removed, and an OSError without a file name (ENOSPC: 'No space
    left on device') is raised again naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
            yield stream
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError) and not err.filename:
            raise OSError(err.errno, f"{path}: {err.strerror or os.strerror(err.errno or errno.EIO)}") from err
        raise


def remove_stale_temporaries(folder: Path | str) -> None:
    """Remove temporary files that killed writers left in a folder (call only while holding the folder)."""
    for stale in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
