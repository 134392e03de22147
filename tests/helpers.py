"""Callbacks for tests that drive `train.py` in a subprocess."""

import time

import lightning as L


class AnnounceSteps(L.Callback):
    """Prints `step N` after each training step and waits a little, so a test can signal the run mid-epoch."""

    def __init__(self, delay: float = 0.2):
        self.delay = delay

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"step {trainer.global_step}", flush=True)
        time.sleep(self.delay)
