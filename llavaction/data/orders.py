"""The seeded orders epoch plans are made of (data/epochs.py): a streaming shuffle buffer, an interleave of lists in
proportion to what each has left, and seeds stable across processes."""

from __future__ import annotations

import random
from collections.abc import Iterator


def shuffled(items: list, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer of `size` over a finite list: what a streaming reader can shuffle."""
    buffer: list = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= max(1, size):
            yield _pop_random(buffer, rng)
    while buffer:
        yield _pop_random(buffer, rng)


def _pop_random(buffer: list, rng: random.Random):
    index = rng.randrange(len(buffer))
    buffer[index], buffer[-1] = buffer[-1], buffer[index]
    return buffer.pop()


def interleaved(streams: list[list], rng: random.Random) -> Iterator:
    """Items of several lists, each next one drawn from a list with probability proportional to what it has left."""
    left = [len(s) for s in streams]
    taken = [0] * len(streams)
    remaining = sum(left)
    while remaining:
        pick = rng.randrange(remaining)
        s = 0
        while pick >= left[s]:
            pick -= left[s]
            s += 1
        yield streams[s][taken[s]]
        taken[s] += 1
        left[s] -= 1
        remaining -= 1


def seed_of(*parts) -> int:
    """A 63-bit seed from the parts (stable across processes, unlike hash())."""
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(random.Random(text).randbytes(8), "little") >> 1
