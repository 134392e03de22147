"""The run's checkpoints, through Lightning's public callback hooks and `Trainer.save_checkpoint` only: periodic ones
(every N epochs, or every so much training time), one when a fit stops on an exception or a signal, each written whole
or not at all, and `last.ckpt` naming the newest; `--ckpt_path last` resolves to it (llavaction.cli.train)."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import time
from pathlib import Path

import lightning as L

from llavaction.utils.files import exclusive_output

PARTIAL_SUFFIX = ".partial"
LAST = "last.ckpt"
CHECKPOINT_NAME = re.compile(r"^epoch=(\d+)-step=(\d+)\.ckpt$")


def checkpoint_folder(default_root_dir: str | Path, dirpath: str | Path | None = None) -> Path:
    """Where a run's checkpoints go: `dirpath`, else `<default_root_dir>/checkpoints`."""
    return Path(dirpath) if dirpath else Path(default_root_dir) / "checkpoints"


class RunFolderLock(L.Callback):
    """The run folder held by one fit: a second fit into it fails at once naming the holder (exclusive_output), made
    before the fit starts so that the refused one writes nothing; released when the fit ends, finished or not."""

    def __init__(self, folder: Path):
        self.held = contextlib.ExitStack()
        self.held.enter_context(exclusive_output(folder))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.held.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.held.close()


class RunCheckpoint(L.Callback):
    """Checkpoints in one folder for every run of an experiment (not one per logger version), so that `--ckpt_path
    last` resumes the newest checkpoint of earlier runs, including one written when a fit was stopped by SIGTERM; a
    finished fit always leaves one of its final step.

    Each checkpoint, `epoch=E-step=S.ckpt` (a file, or a folder of shards under FSDP2), is written under a hidden
    partial name and renamed when complete, so a full disk or a killed writer never leaves anything that looks like a
    checkpoint (a killed run's partial writes are removed when the next run starts); `last.ckpt` then names it (a
    second name of the same file; for a sharded checkpoint folder, a relative symbolic link).

    Args:
        dirpath: the folder (default: <trainer.default_root_dir>/checkpoints).
        every_n_epochs: a checkpoint at the end of every N training epochs (0: none).
        every_n_train_steps: a checkpoint after every N optimizer steps (0: none), mid-epoch ones included.
        train_time_interval: a checkpoint whenever this much time ("H:MM:SS") passed since the last one, at the next
            optimizer step (null: none).
        keep: how many periodic checkpoints to keep, the newest (-1: all); the one last.ckpt names is always kept.
        save_on_exception: a checkpoint when the fit stops on an exception, SIGTERM included, once it has taken an
            optimizer step.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_epochs: int = 0,
        every_n_train_steps: int = 0,
        train_time_interval: str | None = None,
        keep: int = -1,
        save_on_exception: bool = True,
    ):
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"RunCheckpoint.{name} must be an integer >= 0, got {value!r}")
        if keep == 0 or keep < -1:
            raise ValueError(f"RunCheckpoint.keep must be -1 (all) or at least 1, got {keep}")
        self.dirpath, self.every_n_epochs, self.keep = dirpath, every_n_epochs, keep
        self.every_n_train_steps = every_n_train_steps
        self.interval = _seconds(train_time_interval) if train_time_interval else None
        self.save_on_exception = save_on_exception
        self._last_time = time.monotonic()
        self._saved_step = -1
        self._start_step: int | None = None  # the step this fit started training at (None: not training yet)
        self._batch_step = -1

    def folder(self, trainer: L.Trainer) -> Path:
        return checkpoint_folder(trainer.default_root_dir, self.dirpath)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._last_time = time.monotonic()
        folder = self.folder(trainer)
        if trainer.is_global_zero and folder.is_dir():  # a killed run's partial writes
            for partial in folder.glob(f".*{PARTIAL_SUFFIX}"):
                _remove(partial)

    def on_train_start(self, trainer, pl_module) -> None:
        self._start_step = self._batch_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        stepped, self._batch_step = step != self._batch_step, step
        if self.every_n_train_steps and step != self._saved_step and step % self.every_n_train_steps == 0:
            self.save(trainer)
        elif self.interval is not None and stepped:  # after an optimizer step: no accumulated gradient is lost
            due = time.monotonic() - self._last_time >= self.interval
            if trainer.strategy.broadcast(due):  # every rank saves together (sharded checkpoints are collective)
                self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        """The finished run's final state, unless a checkpoint of its last step was just written."""
        if self._saved_step != trainer.global_step:
            self.save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A checkpoint of what the fit trained before it stopped; none when it trained nothing (refused in its setup,
        or stopped before its first optimizer step: the checkpoint it started from, if any, is still the newest)."""
        trained = self._start_step is not None and trainer.global_step > self._start_step
        if self.save_on_exception and trainer.state.fn == "fit" and trained:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> Path:
        """Write a checkpoint of the current step, whole or not at all, then point last.ckpt at it."""
        folder = self.folder(trainer)
        path = folder / f"epoch={trainer.current_epoch}-step={trainer.global_step}.ckpt"
        if self._saved_step == trainer.global_step and path.exists():
            return path
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{path.name}{PARTIAL_SUFFIX}"
        try:
            trainer.save_checkpoint(partial)
        except OSError as err:
            if trainer.is_global_zero:
                _remove(partial)
            raise OSError(err.errno, f"{path}: the checkpoint was not written ({err.strerror or err})") from err
        if trainer.is_global_zero:
            _remove(path)  # the same step written again (a resumed run)
            os.replace(partial, path)
            link = folder / LAST
            staged = folder / f".{LAST}{PARTIAL_SUFFIX}"
            _remove(staged)
            if path.is_dir():  # a sharded checkpoint: a link relative to the folder, so the run folder can move
                os.symlink(path.name, staged)
            else:  # a second name of the same file: it can be moved or copied alone, and outlives pruning
                os.link(path, staged)
            os.replace(staged, link)  # last.ckpt always names a whole checkpoint
            self._prune(folder, path)
        trainer.strategy.barrier("RunCheckpoint.save")
        self._saved_step, self._last_time = trainer.global_step, time.monotonic()
        return path

    def _prune(self, folder: Path, newest: Path) -> None:
        if self.keep < 0:
            return
        periodic = sorted(
            (p for p in folder.iterdir() if CHECKPOINT_NAME.match(p.name)),
            key=lambda p: tuple(int(x) for x in CHECKPOINT_NAME.match(p.name).groups()),
        )
        for old in periodic[: max(0, len(periodic) - self.keep)]:
            if old != newest:
                _remove(old)


def _seconds(text: str) -> float:
    """'H:MM:SS' (or 'D days, H:MM:SS' as str(timedelta) writes it) in seconds."""
    days = 0
    if "day" in text:
        head, _, text = text.partition(",")
        days = int(head.split()[0])
    try:
        hours, minutes, seconds = (float(part) for part in text.strip().split(":"))
    except ValueError:
        raise ValueError(f"RunCheckpoint.train_time_interval {text!r}: expected 'H:MM:SS'") from None
    total = datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    if total <= 0:
        raise ValueError(f"RunCheckpoint.train_time_interval must be positive, got {text!r}")
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
