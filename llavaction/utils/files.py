"""Outputs written whole or not at all, by one writer at a time, never over what the command did not make: a file is
written under a temporary name in its own folder and renamed to its final name only when complete, so a crash or a
full disk never leaves a file that looks finished; an output folder or file is held by one process (exclusive_output),
so two jobs never write into each other's output; a folder a command writes carries its marker (OUTPUT_MARKER), so
the command later replaces or continues its own output and refuses any other non-empty folder (claim_folder,
replaced_folder); and no output is one of the command's own inputs (check_apart)."""

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
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if is_disk_full(err):  # a writer's own error type (safetensors') or an OSError without the file's name
            raise OSError(errno.ENOSPC, f"{path}: no space left on device; nothing written") from err
        raise
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    if path.exists():
        os.replace(path, old)
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def is_disk_full(error: BaseException) -> bool:
    """Whether an error is a full disk, whoever raised it: an OSError ENOSPC, or a library's own error saying so
    (safetensors raises `SafetensorError: ... StorageFull ... os error 28`)."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    text = str(error)
    return "os error 28" in text or "StorageFull" in text or "No space left on device" in text


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


# a process of a job launched beside others (another node, another task of srun or torchrun) says its rank here
RANK_VARIABLES = ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID", "SLURM_PROCID", "RANK", "LOCAL_RANK")


def launched_first() -> bool:
    """Whether this process is its job's first (rank 0 on node 0, or a process launched alone)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


UNREADABLE_LOCK_SEC = 2.0  # a lock still unreadable this long after it was written is not being written


@contextlib.contextmanager
def exclusive_output(output: Path | str) -> Iterator[None]:
    """Hold an output folder or file for one writer: a second process writing the same output fails at once, naming
    the holder (pid, host, command, start). A lock left by a process that died on this host is taken over; one from
    another host that is no longer running must be removed by hand (its path is in the message). Only the launching
    process of a multi-process job takes it (launched_first); the others write under its hold. Taken again by the
    process that holds it (a command holding a store while it lists an addition), it is held on, and released by
    the outer hold."""
    if not launched_first():
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
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:  # held by this process already
                yield
                return
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


# The file a command writes into every folder it makes: which command made it. A folder with this marker naming the
# command is the command's own earlier output, which it may replace or continue; any other non-empty folder is someone
# else's and is refused.
OUTPUT_MARKER = ".llavaction-output.json"
# Hidden entries this module itself leaves in a folder (locks of outputs inside it, temporaries of writers): they do
# not make a folder someone else's.
_OWN_HIDDEN = re.compile(r"\..*\.(lock|tmp|old)|\..*\.lock\.stale-\d+")


def _marker(folder: Path | str) -> dict:
    """A folder's marker ({} without a readable one)."""
    try:
        marker = json.loads((Path(folder) / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else {}


def output_owner(folder: Path | str) -> str | None:
    """The command whose output a folder is (the one its marker names); None without a readable marker."""
    return _marker(folder).get("command")


def foreign_entries(folder: Path) -> list[str]:
    """The names in a folder that no llavaction writer left there (its marker, locks and temporaries aside), sorted;
    [] for a folder that does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != OUTPUT_MARKER and not _OWN_HIDDEN.fullmatch(p.name))


def mark_folder(folder: Path | str, command: str, entries: list[str] | None = None) -> None:
    """Write the marker naming `command` into a folder (atomically: two array tasks marking one root agree), with the
    entries the command wrote there when it writes the folder whole (anything added later is not its own)."""
    folder = Path(folder)
    marker = {"command": command, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    with atomic_output(folder / OUTPUT_MARKER) as stream:
        stream.write(json.dumps(marker | ({} if entries is None else {"entries": entries})) + "\n")


def check_output_folder(out: Path | str, command: str, option: str = "--out") -> bool:
    """`out` may be written by `command`: it does not exist, is empty, or carries `command`'s marker and nothing but
    what the command wrote there (True: an earlier output of the command, which it may replace or continue). A file,
    another command's folder, or any folder holding something else (a thesis, a run, a home directory, a note added to
    an earlier output) is refused in one line naming one of its entries."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{option} {out}: an existing file; {command} writes a folder there")
    marker = _marker(out) if out.is_dir() else {}
    foreign = foreign_entries(out)
    if marker.get("command") == command:
        listed = marker.get("entries")
        foreign = [name for name in foreign if name not in listed] if isinstance(listed, list) else []
        if not foreign:
            return True
    elif not foreign:
        return False
    owner = marker.get("command")
    made_by = f"it holds {foreign[0]!r}, which {command} did not write"
    if owner and owner != command:
        made_by = f"it is the output of {owner}"
    elif not owner:  # an output of a version before markers is not told from a folder of one's own
        made_by += f" (no marker {OUTPUT_MARKER} of its output there)"
    raise ValueError(
        f"{option} {out}: {made_by}; {command} writes only into a new or empty folder or one it wrote itself "
        "(nothing there was changed): give another folder"
    )


def claim_folder(out: Path | str, command: str, option: str = "--out") -> bool:
    """check_output_folder, then the folder made (when absent) and marked as `command`'s; returns whether it held an
    earlier output of the command. Call it holding the folder (exclusive_output)."""
    out = Path(out)
    earlier = check_output_folder(out, command, option)
    out.mkdir(parents=True, exist_ok=True)
    if not earlier:
        mark_folder(out, command)
    return earlier


@contextlib.contextmanager
def replaced_folder(out: Path | str, command: str, option: str = "--out") -> Iterator[Path]:
    """A folder `command` writes whole: held by this process, refused unless new, empty or `command`'s own earlier
    output (check_output_folder), filled under a temporary name (atomic_folder) with the marker, and its files given
    the modes the umask gives new files (a writer that creates its files 0600, as safetensors does, made alike)."""
    out = Path(out)
    with exclusive_output(out):
        check_output_folder(out, command, option)
        with atomic_folder(out) as folder:
            yield folder
            mark_folder(folder, command, foreign_entries(folder))
            usual_modes(folder)


def usual_modes(folder: Path) -> None:
    """Every file and folder under `folder` with the mode the umask gives a new one (0644 and 0755 by default)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


# one path, several, or none (an option not given)
Paths = Path | str | list | tuple | None


def _local(paths) -> list[Path]:
    """The local paths among a value (a path, a list of them, None; URLs and hub ids that are not on disk left out),
    resolved (links followed, '..' removed)."""
    items = paths if isinstance(paths, (list, tuple)) else [paths]
    return [
        Path(p).resolve()
        for p in items
        if p is not None and str(p) and "://" not in str(p) and (Path(p).exists() or Path(p).is_symlink())
    ]


def check_apart(outputs: dict[str, Paths], inputs: dict[str, Paths], folders: bool = False) -> None:
    """A command never writes over one of its inputs: an output (option -> path or paths) that is an input, that
    is a file inside an input folder (one the command may read), or (with `folders`: the outputs are folders
    the command writes) that holds an input (written whole, it would remove it), is refused in one line naming both
    options; so are two outputs of one command at one path. Inputs that are not on disk (URLs, hub ids) cannot be
    written over."""
    written: dict[Path, str] = {}
    for option, paths in outputs.items():
        items = paths if isinstance(paths, (list, tuple)) else [paths]
        for path in (Path(p).resolve() for p in items if p is not None and "://" not in str(p)):
            if path in written and written[path] != option:
                raise ValueError(
                    f"{written[path]} and {option} are the same file {path}: one would overwrite the other"
                )
            written[path] = option
    for path, option in written.items():
        for name, values in inputs.items():
            for source in _local(values):
                if source == path:
                    raise ValueError(
                        f"{option} {path} is also this command's input {name}: a command never writes over its own "
                        "input (nothing was changed); write elsewhere"
                    )
                if source in path.parents and path.is_file():
                    raise ValueError(
                        f"{option} {path} lies in this command's input {name} {source}: a command never writes over "
                        "its own input (nothing was changed); write elsewhere"
                    )
                if folders and path in source.parents:
                    raise ValueError(
                        f"{option} {path} holds this command's input {name} {source}: writing there could remove it "
                        "(nothing was changed); write elsewhere"
                    )
