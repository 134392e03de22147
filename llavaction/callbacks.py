"""Callbacks named by the experiment configs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

RESULTS_FILE = "validation_results.json"


def format_results(results: dict) -> str:
    """'validation MQA accuracy: 55.5% (chance 20.0%) by letter scoring on 110 questions; by likelihood: 60.1%'."""
    modes = results["scoring"]
    others = "".join(f"; by {m}: {results[f'val/mqa_accuracy_{m}']:.1f}%" for m in modes[1:])
    return (f"validation MQA accuracy: {results['val/mqa_accuracy']:.1f}% (chance {results['val/chance']:.1f}%) "
            f"by {modes[0]} scoring on {int(results['val/questions'])} questions{others}")


class ReportMQAAccuracy(L.Callback):
    """After each real validation (not the sanity check), print the MQA accuracy against chance and write it to
    `<log_dir>/validation_results.json`."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/mqa_accuracy" not in trainer.callback_metrics:
            return
        log_dir = trainer.log_dir  # a collective call under distributed strategies: every rank asks
        if not trainer.is_global_zero:
            return
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        results |= {"scoring": list(pl_module.hparams.mqa_scoring), "epoch": trainer.current_epoch,
                    "step": trainer.global_step}
        print(format_results(results), flush=True)
        if log_dir:
            path = Path(log_dir) / RESULTS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")
