"""Reused frame buffers of the training loader's workers: a batch's frames are decoded into one of a few buffers in
turn instead of fresh memory every batch (fresh pages cost a third of the decoding)."""

from __future__ import annotations

import math
import time

import torch
from torch.utils.data import get_worker_info


class FrameBuffers:
    """Each training loader worker's frame batches, written into a few buffers used in turn instead of fresh memory
    every batch (fresh pages cost a third of the decoding). A buffer is reused only after the training process has
    released its batch: `owned[worker, slot]` (shared with the workers) is set by the worker that fills a buffer and
    cleared by the training loader (EpochLoader) once two further batches have been drawn, i.e. once the batch's step
    is over (Lightning fetches one batch ahead). A worker that finds no buffer released within `wait_sec` writes into
    fresh memory instead, as without buffers."""

    SLOTS = 5  # the batches a worker's buffers can have in flight: prefetched (2), held by the loop (2), one spare
    RELEASE_LAG = 2  # batches drawn after a batch before its buffer is released

    def __init__(self, workers: int, wait_sec: float = 30.0):
        self.owned = torch.zeros((max(1, workers), self.SLOTS), dtype=torch.int32)
        if workers > 0:
            self.owned.share_memory_()
        self.wait_sec = wait_sec
        self._buffers: dict[int, torch.Tensor] = {}
        self._next = 0

    def acquire(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """A [B, T, S, S, 3] uint8 tensor to decode a batch into, and its (worker, slot), None for fresh memory."""
        info = get_worker_info()
        worker = info.id if info is not None else 0
        slot = self._next
        self._next = (slot + 1) % self.SLOTS
        deadline = time.monotonic() + self.wait_sec
        while self.owned[worker, slot] and time.monotonic() < deadline:
            time.sleep(0.0005)
        if self.owned[worker, slot]:  # never released: do not overwrite what someone may still read
            return fresh_frames(shape), None
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.numel() < math.prod(shape):
            buffer = self._buffers[slot] = fresh_frames(shape)
        self.owned[worker, slot] = 1
        return buffer.view(-1)[: math.prod(shape)].view(shape), (worker, slot)

    def release(self, owner: tuple[int, int] | None) -> None:
        if owner is not None:
            self.owned[owner] = 0

    def release_all(self) -> None:
        self.owned.zero_()


def fresh_frames(shape: tuple[int, ...]) -> torch.Tensor:
    frames = torch.empty(shape, dtype=torch.uint8)
    if get_worker_info() is not None:  # allocated where the DataLoader would otherwise copy it to
        frames.share_memory_()
    return frames
