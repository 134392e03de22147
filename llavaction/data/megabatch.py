"""The reference's length grouping (`group_by_modality_length` as the LLaVAction run uses it): the epoch cut into
megabatches of world x steps x batch items, each sorted by length (longest first) and split into world x steps chunks
of balanced total length (each next item to the chunk with the least length so far, the first of equals; a full chunk
closed; round robin when the megabatch does not divide evenly, as its last one may not); chunk `step x world + rank`
is that rank's micro-batch `step` of the megabatch. It balances the ranks' work at each micro-step; it does not cut
padding. `loader.megabatch_steps` (the gradient accumulation, 32 in the recipe) turns it on (data/epochs.py)."""

from __future__ import annotations

import heapq

import numpy as np


def balanced_chunks(lengths: np.ndarray, count: int) -> list[list[int]]:
    """Positions 0..n-1 of one megabatch split as the reference splits it (the module docstring)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.float64), kind="stable").tolist()
    if len(order) % count:
        return [order[i::count] for i in range(count)]
    per_chunk = len(order) // count
    chunks: list[list[int]] = [[] for _ in range(count)]
    open_chunks = [(0.0, c) for c in range(count)]  # (length so far, chunk): the least first, then the lowest chunk
    for position in order:
        total, chunk = heapq.heappop(open_chunks)
        chunks[chunk].append(position)
        if len(chunks[chunk]) < per_chunk:
            heapq.heappush(open_chunks, (total + float(lengths[position]), chunk))
    return chunks


def megabatch_groups(lengths: np.ndarray, batch: int, world: int, steps: int) -> np.ndarray:
    """For each item of an epoch's sequence (its length given), [rank, batch number of that rank, place in the
    batch]: megabatch k's chunk `step x world + rank` is batch `k x steps + step` of `rank`, in the chunk's order."""
    size = world * steps * batch
    groups = np.empty((len(lengths), 3), dtype=np.int64)
    for k, begin in enumerate(range(0, len(lengths), size)):
        for number, chunk in enumerate(balanced_chunks(lengths[begin : begin + size], world * steps)):
            positions = np.asarray(chunk, dtype=np.int64) + begin
            step, rank = divmod(number, world)
            groups[positions, 0], groups[positions, 1] = rank, k * steps + step
            groups[positions, 2] = np.arange(len(chunk))
    return groups
