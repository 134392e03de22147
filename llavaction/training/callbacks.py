"""Small callbacks of what a fit shows and how it computes: plain progress lines where no progress bar can be seen,
TensorBoard's layout of the figures a researcher reads first, and the float32 matmul precision of a recipe."""

from __future__ import annotations

import math
import sys
import time
from typing import Literal

import lightning as L
import torch

from llavaction.training.optim import optimizer_steps
from llavaction.utils.checks import check_count

# TensorBoard's CUSTOM SCALARS tab, category by category in this order: each chart [kind, tags (regular expressions,
# except Margin's: value, lower, upper)].
LAYOUT = {
    "1. validation": {
        "MQA accuracy (headline rule) with its 95% interval": [
            "Margin",
            ["val/mqa_accuracy", "val/mqa_accuracy_low", "val/mqa_accuracy_high"],
        ],
        "MQA accuracy by every rule, and chance": ["Multiline", [r"val/mqa_accuracy_[a-z]+$", r"val/chance$"]],
        "EPIC action recognition (action heads)": ["Multiline", [r"val/ek100/all_.*"]],
    },
    "2. training": {
        "loss (language model + weighted action heads)": ["Multiline", [r"train/loss$"]],
        "language-model loss by task": ["Multiline", [r"train/loss_.*"]],
        "action heads' loss": ["Multiline", [r"train/action_loss$"]],
        "learning rates": ["Multiline", [r"lr-.*"]],
    },
    "3. data and speed": {
        "padding and skipped samples (per epoch)": ["Multiline", [r"train/(padding|skipped)_samples.*"]],
        "throughput": ["Multiline", [r"perf/(samples|tokens)_per_s"]],
        "GPU memory and MFU": ["Multiline", [r"perf/(gpu_max_memory_gib|mfu)"]],
    },
}


class TensorBoardLayout(L.Callback):
    """Writes LAYOUT into the run's TensorBoard log when a fit starts: the CUSTOM SCALARS tab opens on the headline
    accuracy with its interval in one chart, then the training losses (in all, by task, the heads'), then data and
    speed. Nothing without a TensorBoard logger."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(LAYOUT)


class PlainProgress(L.Callback):
    """Plain progress lines on stdout when it is not a terminal (a log file, a SLURM job, `make demo > log`), where
    a progress bar redrawn in place shows nothing readable: one line when training starts, one every `every_n_steps`
    optimizer steps (epoch, step, loss, seconds a step, time left) and one at each epoch's end.

    Args:
        every_n_steps: optimizer steps between two lines.
        when: 'not_a_terminal' (stdout redirected), 'always' or 'never'.
    """

    def __init__(self, every_n_steps: int = 50, when: Literal["not_a_terminal", "always", "never"] = "not_a_terminal"):
        check_count("every_n_steps", every_n_steps, minimum=1)
        self.every_n_steps, self.when = every_n_steps, when
        self.active, self.total, self.started, self.first, self.last = False, None, 0.0, 0, -1
        self.loss = None  # this process's last training loss (trainer.callback_metrics syncs every rank: not here)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        terminal = sys.stdout.isatty()
        self.active = trainer.is_global_zero and (
            self.when == "always" or self.when == "not_a_terminal" and not terminal
        )
        if not self.active:
            return
        batches = trainer.num_training_batches
        self.total = optimizer_steps(trainer, int(batches)) if math.isfinite(batches) else None
        self.started, self.first, self.last = time.monotonic(), trainer.global_step, trainer.global_step
        of = f" of {self.total}" if self.total else ""
        print(f"training from step {trainer.global_step}{of} (a line every {self.every_n_steps} steps)", flush=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.active and isinstance(outputs, dict) and outputs.get("loss") is not None:
            self.loss = outputs["loss"].detach()
        step = trainer.global_step
        if self.active and step != self.last and step % self.every_n_steps == 0:
            self.last = step
            print(self._line(trainer), flush=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            print(f"{self._line(trainer)}; epoch {trainer.current_epoch + 1} done", flush=True)

    def _line(self, trainer: L.Trainer) -> str:
        step, elapsed = trainer.global_step, time.monotonic() - self.started
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
        parts = [
            f"epoch {trainer.current_epoch + 1}{epochs}",
            f"step {step}" + (f"/{self.total}" if self.total else ""),
        ]
        if self.loss is not None:  # read on rank 0 alone, so never a metric whose reading waits for the other ranks
            parts.append(f"loss {float(self.loss):.4f}")
        done = step - self.first
        if done > 0:
            per_step = elapsed / done
            parts.append(f"{per_step:.2f} s a step")
            if self.total:
                parts.append(f"about {_duration(per_step * max(0, self.total - step))} left")
        return ", ".join(parts)


def _duration(seconds: float) -> str:
    """'42 s', '17 min', '3.2 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class Float32Matmul(L.Callback):
    """The precision of float32 matrix products for the fit (torch.set_float32_matmul_precision): 'high' lets CUDA
    use TF32, as the reference's recipe does (HF Trainer's --tf32 True); under bf16-mixed only the float32 products
    outside autocast are affected.

    Args:
        precision: 'highest' (full float32), 'high' (TF32 allowed) or 'medium'.
    """

    def __init__(self, precision: Literal["highest", "high", "medium"] = "high"):
        self.precision = precision

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        torch.set_float32_matmul_precision(self.precision)
