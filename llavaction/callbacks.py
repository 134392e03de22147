"""Callbacks named by the experiment configs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ReportMQAAccuracy(L.Callback):
    """After each real validation (not the sanity check), print the MQA accuracy against chance and write it to
    `<log_dir>/validation_results.json`."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/mqa_accuracy" not in trainer.callback_metrics:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        rank_zero_info(f"validation MQA accuracy: {metrics['val/mqa_accuracy']:.1f}% "
                       f"(chance {metrics['val/chance']:.1f}%) on {int(metrics['val/questions'])} questions")
        if trainer.is_global_zero and trainer.log_dir:
            path = Path(trainer.log_dir) / "validation_results.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(metrics | {"epoch": trainer.current_epoch, "step": trainer.global_step},
                                       indent=2) + "\n")
