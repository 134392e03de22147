"""Callbacks named by the experiment configs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class ReportMQAAccuracy(L.Callback):
    """After each real validation (not the sanity check), print the MQA accuracy against chance and write it to
    `<log_dir>/validation_results.json`."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/mqa_accuracy" not in trainer.callback_metrics:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        log_dir = trainer.log_dir  # a collective call under distributed strategies: every rank asks
        if not trainer.is_global_zero:
            return
        print(f"validation MQA accuracy: {metrics['val/mqa_accuracy']:.1f}% (chance {metrics['val/chance']:.1f}%) "
              f"on {int(metrics['val/questions'])} questions", flush=True)
        if log_dir:
            path = Path(log_dir) / "validation_results.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(metrics | {"epoch": trainer.current_epoch, "step": trainer.global_step},
                                       indent=2) + "\n")
