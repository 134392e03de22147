"""Training-step performance in TensorBoard: samples and tokens per second and, on a GPU, peak memory and MFU."""

from __future__ import annotations

import time

import lightning as L
import torch

from llavaction.training.flops import peak_bf16_flops, training_flops
from llavaction.utils.constants import IGNORE_INDEX


class StepPerformance(L.Callback):
    """Logs each training step's perf/samples_per_s and perf/tokens_per_s (visual tokens included, padding not) and,
    on a GPU, perf/gpu_max_memory_gib and perf/mfu: model FLOPs (llavaction.training.flops) over step time x the
    card's peak (cards in llavaction.training.flops.PEAK_BF16_FLOPS). The step is timed from batch start to end, data
    loading excluded."""

    def __init__(self):
        self._started, self._cuda, self._peak = 0.0, False, None

    def on_train_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        self._cuda = device.type == "cuda"
        self._peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if self._cuda else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._cuda:
            torch.cuda.synchronize()  # so the step's time is its own, not the previous step's queued kernels
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self._started
        frames = batch.frames.shape[1]
        lengths = batch.attention_mask.sum(1) + pl_module.config.extra_tokens(frames)  # LLaVA's spliced tokens
        metrics = {"perf/samples_per_s": len(lengths) / seconds, "perf/tokens_per_s": float(lengths.sum()) / seconds}
        if self._cuda:
            metrics["perf/gpu_max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if self._peak:
            supervised = int((batch.labels != IGNORE_INDEX).sum())
            flops = training_flops(
                pl_module.family,
                pl_module.config,
                frames,
                lengths.tolist(),
                supervised,
                vision_trained=pl_module.train_parts.vision_tower,
                frame_size=batch.frames.shape[2],
            )
            metrics["perf/mfu"] = flops / seconds / self._peak
        pl_module.log_dict(metrics, batch_size=len(lengths))
