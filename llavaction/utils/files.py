"""Outputs written whole or not at all, by one writer at a time: a file is written under a temporary name in its own
folder and renamed to its final name only when complete, so a crash or a full disk never leaves a file that looks
finished; an output folder or file is held by one process (exclusive_output), so two jobs never write into each
other's output."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def safe_name(text: str, keep: str = "-_") -> str:
    """`text` as one path component (a file name, a WebDataset key): anything but ASCII letters, digits and the
    characters in `keep` becomes '_', so an id can never name another folder."""
    return re.sub(f"[^A-Za-z0-9{re.escape(keep)}]", "_", text)


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


@contextlib.contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """A folder written whole or not at all: the block fills a hidden temporary folder beside `path`, which takes
    `path`'s place when the block ends without error (an earlier `path` is kept until then, and removed after). On an
    error the temporary folder is removed and `path` is left as it was."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: an existing file; expected a folder to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_name(path)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    if path.exists():
        os.replace(path, old)
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(folder: Path | str) -> None:
    """Remove temporary files that killed writers left in a folder (call only while holding the folder)."""
    for stale in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


class OutputBusy(OSError):
    """Another process holds the output; the message names it."""


def lock_path(output: Path) -> Path:
    """The lock of an output file or folder: `.<name>.lock` beside it (the same place whether the output exists yet,
    is a folder or has a dot in its name, and untouched when a folder is replaced whole)."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


UNREADABLE_LOCK_SEC = 2.0  # a lock still unreadable this long after it was written is not being written


@contextlib.contextmanager
def exclusive_output(output: Path | str) -> Iterator[None]:
    """Hold an output folder or file for one writer: a second process writing the same output fails at once, naming
    the holder (pid, host, command, start). A lock left by a process that died on this host is taken over; one from
    another host that is no longer running must be removed by hand (its path is in the message). Only the launching
    process of a multi-process job takes it (ranks started with LOCAL_RANK, NODE_RANK, RANK or SLURM_PROCID above 0
    do not)."""
    if any(int(os.environ.get(name, "0") or 0) > 0 for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")):
        yield
        return
    output = Path(output)
    lock = lock_path(output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for _ in range(5):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_holder(lock)
            if holder == {} and _age(lock) > UNREADABLE_LOCK_SEC:  # not a lock this code writes, and not new
                raise OutputBusy(
                    f"{output}: its lock {lock} is empty or not a lock (not JSON naming a writer): it looks stale; if "
                    f"no job writes {output}, remove {lock}"
                ) from None
            if not holder:  # being written this instant, or gone: look again
                time.sleep(0.05)
                continue
            if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                with contextlib.suppress(FileNotFoundError):  # a dead writer's: the first to rename it takes over
                    os.replace(lock, lock.with_name(f"{lock.name}.stale-{os.getpid()}"))
                    os.unlink(lock.with_name(f"{lock.name}.stale-{os.getpid()}"))
                continue
            raise OutputBusy(
                f"{output} is being written by pid {holder.get('pid')} on {holder.get('host')} since "
                f"{holder.get('started')} ({holder.get('command')}); wait for it or choose another output "
                f"(a lock left by a crash on another host: remove {lock})"
            ) from None
        with os.fdopen(descriptor, "w") as stream:
            stream.write(json.dumps(me))
        break
    else:
        raise OutputBusy(f"{output}: cannot take its lock {lock}")
    try:
        yield
    finally:
        if _read_holder(lock) == me:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def _read_holder(lock: Path) -> dict | None:
    """The writer a lock names; None when the lock is gone, {} when it names none (empty, not JSON, not an object)."""
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
