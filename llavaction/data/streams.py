"""The training and evaluation streams: shards -> samples (stages.py) -> batches, as IterableDatasets.

Training: per rank, each epoch is a deterministic function of (seed, epoch, rank): a weighted mixture of endless task
streams (shards resampled, samples shuffled), cut into batches. With W loader workers, batch b of the epoch comes from
logical worker b mod W, whose content depends on (seed, epoch, rank, logical worker) only, so a run resumed after b
batches rebuilds the same epoch and skips what was consumed (frames of skipped batches are never decoded).
Evaluation: every sample exactly once across ranks, the same number of batches on every rank and worker.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch.utils.data import IterableDataset, get_worker_info

from llavaction.data.stages import (
    BadSample,
    Collate,
    DecodeFrames,
    Descriptions,
    EncodePrompt,
    JpegFrames,
    SkipCounter,
    TaskSource,
    conversations_of,
)
from llavaction.shards import ShardError, iter_shard, join, location_sizes, read_sizes


@dataclass
class SourceStream:
    """One task of the training mixture, with the stages that turn its shard samples into prompts."""

    source: TaskSource
    decode: DecodeFrames
    encode: EncodePrompt
    shuffle_buffer: int
    descriptions: Descriptions | None = field(init=False)

    def __post_init__(self):
        # read once here, not by every loader worker at every epoch
        self.descriptions = Descriptions(self.source.descriptions) if self.source.descriptions else None

    def samples(self, seed: str, epoch: int, skips: SkipCounter, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        """An endless, seeded stream: shards drawn with replacement from this rank's share of the shards (shard i
        goes to rank i mod world_size, when there are at least as many shards as ranks), samples shuffled in a
        buffer; bad samples and unreadable shards are counted skips."""
        rng = random.Random(seed)
        sizes = {join(self.source.path, name): size for name, size in read_sizes(self.source.path).items()}
        urls = list(sizes)
        if len(urls) >= world_size:
            urls = urls[rank::world_size]
        descriptions = self.descriptions
        encode = self.encode.at_epoch(epoch)
        buffer: list[dict] = []
        while True:
            url = rng.choice(urls)
            try:
                for raw in iter_shard(url, expected=sizes[url]):
                    if descriptions is not None and not descriptions.has(raw):
                        continue
                    buffer.append(raw)
                    if len(buffer) >= self.shuffle_buffer:
                        yield from self._prepare(buffer.pop(rng.randrange(len(buffer))), descriptions, encode, skips)
            except ShardError as err:
                skips.skip(f"the rest of a shard: {err}")

    def _prepare(
        self, raw: dict, descriptions: Descriptions | None, encode: EncodePrompt, skips: SkipCounter
    ) -> list[dict]:
        """The training samples of one shard sample (one per conversation of a replayed video); bad ones skipped."""
        try:
            sample = self.decode(raw)
        except BadSample as err:
            skips.skip(str(err))
            return []
        if descriptions is not None:
            sample = descriptions(sample)
        prepared = []
        for one in conversations_of(sample):
            try:
                prepared.append(encode(one))
            except BadSample as err:
                skips.skip(str(err))
        return prepared


class TrainStream(IterableDataset):
    """One epoch of collated training batches for one rank (set_epoch before each pass; see the module docstring)."""

    def __init__(
        self,
        sources: list[SourceStream],
        weights: list[float],
        batch_size: int,
        batches_per_worker: int,
        collate: Collate,
        seed: int,
        rank: int,
        num_workers: int,
        length_group_window: int = 0,
        world_size: int = 1,
    ):
        self.sources, self.weights, self.batch_size = sources, weights, batch_size
        self.batches_per_worker, self.collate, self.seed, self.rank = batches_per_worker, collate, seed, rank
        self.workers, self.length_group_window = max(1, num_workers), length_group_window
        self.world_size = world_size
        self.epoch, self.consumed = 0, 0

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """The epoch to produce, and how many of its batches (on this rank) were already consumed."""
        self.epoch, self.consumed = epoch, consumed

    def __len__(self) -> int:
        return self.batches_per_worker * self.workers

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        # The DataLoader asks its workers in turn from worker 0, so after `consumed` batches physical worker 0 must
        # play the logical worker that produces batch number `consumed`.
        logical = (physical + self.consumed) % self.workers
        done = len(range(logical, self.consumed, self.workers))
        stream_seed = f"{self.seed}:{self.epoch}:{self.rank}:{logical}"
        skips = SkipCounter()
        collate = copy.copy(self.collate)
        collate.skips = skips
        mixed = self._mix(stream_seed, skips)
        for index, samples in enumerate(self._batches(mixed, stream_seed)):
            if index >= self.batches_per_worker:
                return
            if index >= done:  # batches consumed before a resume are formed but never decoded
                yield collate(samples)

    def _mix(self, stream_seed: str, skips: SkipCounter) -> Iterator[dict]:
        streams = [
            s.samples(f"{stream_seed}:source{i}", self.epoch, skips, self.rank, self.world_size)
            for i, s in enumerate(self.sources)
        ]
        rng = random.Random(f"{stream_seed}:mix")
        while True:
            yield next(streams[rng.choices(range(len(streams)), weights=self.weights)[0]])

    def _batches(self, samples: Iterator[dict], stream_seed: str) -> Iterator[list[dict]]:
        """Lists of batch_size samples; with a length-group window, `window` batches' worth sorted by token length
        (less padding), the batches of each window in a seeded order."""
        if self.length_group_window <= 0:
            while True:
                yield [next(samples) for _ in range(self.batch_size)]
        rng = random.Random(f"{stream_seed}:length_groups")
        while True:
            pool = sorted(
                (next(samples) for _ in range(self.batch_size * self.length_group_window)),
                key=lambda s: len(s["input_ids"]),
            )
            batches = [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            rng.shuffle(batches)
            yield from batches


def batches_per_worker(samples_per_epoch: int, world_size: int, num_workers: int, batch_size: int) -> int:
    return math.ceil(samples_per_epoch / (world_size * max(1, num_workers) * batch_size))


class EvalStream(IterableDataset):
    """Every sample exactly once across ranks, and the same number of batches on every rank and worker: shard i goes
    to slot i mod (ranks x workers); each slot pads its batches with flagged dummy samples up to the largest slot.
    Each shard must hold the samples its sizes.json lists (a truncated shard is an error naming it)."""

    def __init__(
        self,
        locations: list[str],
        batch_size: int,
        decode: DecodeFrames,
        encode: EncodePrompt,
        collate: Collate,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ):
        self.shards = list(location_sizes(locations).items())
        self.batch_size, self.decode, self.encode, self.collate = batch_size, decode, encode, collate
        self.rank, self.world_size, self.workers = rank, world_size, max(1, num_workers)
        slots = self.world_size * self.workers
        self.batches_per_slot = max(
            [
                math.ceil(sum(size for i, (_, size) in enumerate(self.shards) if i % slots == slot) / batch_size)
                for slot in range(slots)
            ]
            + [1]
        )

    def __len__(self) -> int:
        return self.batches_per_slot * self.workers

    def padding_sample(self, frames: JpegFrames) -> dict:
        meta = {"narration_id": None, "options": [], "answer_index": None}
        encoded = self.encode.encoder.encode("", None, self.encode.visual_tokens, name="padding")
        return {
            "__key__": "padding",
            "meta": meta,
            "frames": JpegFrames(None, frames.count, frames.size),
            "is_padding": True,
            "input_ids": encoded.input_ids,
            "labels": encoded.labels,
        }

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        slot, slots = self.rank * self.workers + worker, self.world_size * self.workers
        mine = [(url, size) for i, (url, size) in enumerate(self.shards) if i % slots == slot]
        batch, emitted, template = [], 0, None
        for url, size in mine:
            for raw in iter_shard(url, expected=size):
                sample = self.encode(self.decode(raw))
                template = sample["frames"]
                batch.append(sample)
                if len(batch) == self.batch_size:
                    yield self.collate(batch)
                    batch, emitted = [], emitted + 1
        if template is None:  # this slot got no shard: shape the padding like any sample of the set
            template = self.decode(next(iter_shard(self.shards[0][0])))["frames"]
        while emitted < self.batches_per_slot:
            batch += [self.padding_sample(template)] * (self.batch_size - len(batch))
            yield self.collate(batch)
            batch, emitted = [], emitted + 1
