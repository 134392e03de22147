"""The reference's length grouping (`group_by_modality_length` as the LLaVAction run uses it): the epoch cut into
megabatches of world x steps x batch items, each sorted by length (longest first) and split into world x steps chunks
of balanced total length (each next item to the chunk with the least length so far, the first of equals; a full chunk
closed; round robin when the megabatch does not divide evenly, as its last one may not); the chunks, concatenated,
are cut into per-device batches, the j-th being rank j mod world's micro-batch j // world of the megabatch (for a full
megabatch, chunk `step x world + rank`). It balances the ranks' work at each micro-step; it does not cut
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
    batch]: the chunks of megabatch k, concatenated, are cut into per-device batches of `batch` items, the j-th going
    to rank j mod world as its batch k x steps + j // world (as the reference's data loader deals its sampler's flat
    list; for a full megabatch, chunk j is batch j)."""
    size = world * steps * batch
    groups = np.empty((len(lengths), 3), dtype=np.int64)
    for k, begin in enumerate(range(0, len(lengths), size)):
        chunks = balanced_chunks(lengths[begin : begin + size], world * steps)
        flat = np.asarray([position for chunk in chunks for position in chunk], dtype=np.int64) + begin
        cut = np.arange(len(flat))
        step, rank = np.divmod(cut // batch, world)
        groups[flat, 0], groups[flat, 1], groups[flat, 2] = rank, k * steps + step, cut % batch
    return groups
