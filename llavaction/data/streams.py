"""The training and evaluation streams: shards -> samples (stages.py) -> batches, as IterableDatasets.

Training: each epoch follows its plan (epochs.py): every loader worker of every rank reads its planned samples and
serves its planned batches, so the epoch is a deterministic function of (seed, epoch, world size, workers). With W
workers, batch b of a rank comes from logical worker b mod W, so a run resumed after b batches plans the same epoch
and skips what was consumed (samples only used by consumed batches are not read); resumed under another layout, it
reads the epoch's remainder as planned by resume.py.
Evaluation: every sample exactly once across ranks, the same number of batches on every rank and worker.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

from torch.utils.data import IterableDataset, get_worker_info

from llavaction.data.buffers import FrameBuffers
from llavaction.data.epochs import EpochPlanner, PlannedItem, SlotPlan
from llavaction.data.options import TaskSource
from llavaction.data.resume import EpochPlans
from llavaction.data.shards import ShardChanged, ShardError, iter_shard, join, read_index
from llavaction.data.sources import SourceItems
from llavaction.data.stages import (
    BadSample,
    Collate,
    DecodeFrames,
    Descriptions,
    EncodePrompt,
    JpegFrames,
    SkipCounter,
    conversation_of,
    padding_copy,
)
from llavaction.data.store import ServedQuestions, StoreQuestions


@dataclass
class SourceStream:
    """One task of the training mixture, with the stages that turn its shard samples into prompts (joined: a qa
    source's descriptions, or a question file over a frame store, read once by the DataModule, not by every loader
    worker at every epoch)."""

    source: TaskSource
    decode: DecodeFrames
    encode: EncodePrompt
    joined: Descriptions | StoreQuestions | ServedQuestions | None = None

    def serving(self, items: SourceItems, reads: list[tuple[int, int]]) -> SourceStream:
        """This stream for a worker that makes these reads (shard, sample) of the source's items: a question file over
        a frame store gives only their questions (a worker holds only the questions it serves)."""
        if isinstance(self.joined, StoreQuestions):
            keys = {items.keys[shard][sample] for shard, sample in reads}
            return replace(self, joined=self.joined.served(keys))
        return self

    def decoded(self, raw: dict) -> dict:
        """A shard sample's chosen frames and metadata, with what the source joins to it."""
        sample = self.decode(raw)
        return self.joined(sample) if self.joined is not None else sample


class SlotReader:
    """Reads one worker's planned samples, per source in planned order, each shard streamed once for its reads (the
    plan interleaves a few shards of a source: each stays open until its last read), keeping each decoded sample until
    its last use in the batches still to serve. A read those batches do not need is not made, and a shard holding
    none that they need is not opened."""

    def __init__(self, planner: EpochPlanner, plan: SlotPlan, batches: list[list[PlannedItem]], streams: list):
        self.planner, self.streams = planner, streams
        self.uses = Counter((p.source, p.read) for batch in batches for p in batch)
        self.cache: dict[tuple[int, int], dict | Exception] = {}
        self.pending = [self._reads(s, reads) for s, reads in enumerate(plan.reads)]

    def _reads(self, source: int, reads: list[tuple[int, int]]) -> Iterator[tuple[int, dict | Exception]]:
        needed = [read for read in range(len(reads)) if self.uses[(source, read)]]
        last_read = {reads[read][0]: read for read in needed}
        shards: dict[int, ShardCursor] = {}
        try:
            for read in needed:
                shard, sample = reads[read]
                cursor = shards.get(shard)
                if cursor is None or cursor.position >= sample:  # first read, or a later pass reads it again
                    if cursor is not None:
                        cursor.close()
                    items = self.planner.sources[source]
                    cursor = shards[shard] = ShardCursor(items.urls[shard], items.sizes[shard], items.keys[shard])
                yield read, cursor.sample(sample)
                if last_read[shard] == read:
                    shards.pop(shard).close()
        finally:
            for cursor in shards.values():
                cursor.close()

    def get(self, source: int, read: int) -> dict | Exception:
        """The decoded sample of a read, or the error that made it unusable."""
        key = (source, read)
        while key not in self.cache:
            got, raw = next(self.pending[source])
            if self.uses[(source, got)]:
                self.cache[(source, got)] = self._decode(source, raw)
        value = self.cache[key]
        self.uses[key] -= 1
        if not self.uses[key]:
            del self.cache[key]
        return value

    def _decode(self, source: int, raw: dict | Exception) -> dict | Exception:
        if isinstance(raw, Exception):
            return raw
        try:
            return self.streams[source].decoded(raw)
        except BadSample as err:
            return err


class ShardCursor:
    """One shard streamed forward: the sample at a position (ascending), or the error that stopped the stream."""

    def __init__(self, url: str, size: int, keys: tuple[str, ...]):
        self.url, self.samples = url, iter_shard(url, expected=size, keys=keys)
        self.position, self.current, self.failure = -1, None, None

    def sample(self, position: int) -> dict | Exception:
        if self.failure is None:
            try:
                while self.position < position:
                    self.current = next(self.samples)
                    self.position += 1
            except StopIteration:
                self.failure = ShardError(f"{self.url}: ended before sample {position}")
            except ShardChanged:  # the plan would train on other samples than it lists: stop, naming the shard
                raise
            except ShardError as err:
                self.failure = err
        return self.failure or self.current

    def close(self) -> None:
        self.samples.close()


class TrainStream(IterableDataset):
    """One epoch of collated training batches for one rank, as planned (set_epoch before each pass; see the module
    docstring). A planned sample that cannot be used is a counted skip whose row becomes padding."""

    def __init__(self, plans: EpochPlans, sources: list[SourceStream], collate: Collate, rank: int):
        self.plans, self.sources, self.rank = plans, sources, rank
        # made here, in the training process, so that its ownership flags are shared with the workers
        self.buffers = FrameBuffers(plans.base.num_workers)
        self.collate = copy.copy(collate)
        self.collate.buffers = self.buffers
        self.epoch, self.consumed = 0, 0

    @property
    def planner(self) -> EpochPlanner:
        """The planner of the epoch set."""
        return self.plans.planner(self.epoch)

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """The epoch to produce, and how many of its planner's batches (on this rank) were already consumed."""
        self.epoch, self.consumed = epoch, consumed

    def __len__(self) -> int:
        return self.plans.base.batches_per_rank

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        planner = self.planner
        workers = planner.workers
        # The DataLoader asks its workers in turn from worker 0, so after `consumed` batches physical worker 0 must
        # play the logical worker that produces batch number `consumed`.
        logical = (physical + self.consumed) % workers
        done = len(range(logical, self.consumed, workers))
        plan = planner.slot(self.epoch, self.rank, logical)
        batches = plan.batches[done:]
        streams = [s.serving(items, reads) for s, items, reads in zip(self.sources, planner.sources, plan.reads)]
        reader = SlotReader(planner, plan, batches, streams)
        encoders = [s.encode.at_epoch(self.epoch) for s in self.sources]
        skips = SkipCounter()
        collate = copy.copy(self.collate)
        collate.skips = skips
        last_good = None
        for batch in batches:
            prepared = []
            for planned in batch:
                sample = self._prepare(reader, encoders, plan, planned, skips)
                if sample is not None:
                    last_good = sample
                prepared.append(sample)
            usable = [s for s in prepared if s is not None] or ([last_good] if last_good is not None else [])
            if not usable:
                raise BadSample(f"rank {self.rank}, worker {logical}: no usable training sample in a whole batch")
            yield collate([s if s is not None else padding_copy(usable[0]) for s in prepared])

    def _prepare(self, reader, encoders, plan: SlotPlan, planned: PlannedItem, skips: SkipCounter) -> dict | None:
        """The prompt-encoded sample of a planned row (padding flagged), or None when it cannot be used."""
        decoded = reader.get(planned.source, planned.read)
        if isinstance(decoded, Exception):
            if not planned.padding:
                if isinstance(decoded, ShardError):
                    what = f"{self.planner.key_of(plan, planned)} of source {planned.source}: {decoded}"
                    skips.skip("unreadable_shard", what)
                else:
                    skips.skip("bad_sample", str(decoded))
            return None
        try:
            sample = encoders[planned.source](conversation_of(decoded, planned.conversation))
        except BadSample as err:
            if not planned.padding:
                skips.skip("bad_sample", str(err))
            return None
        return padding_copy(sample) if planned.padding else sample


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
        questions: dict[str, dict] | None = None,
    ):
        """questions: {key: question} asked over the shards' frames in place of the questions they hold (a frame
        store, llavaction.data.store); only their keys are asked, and a shard holding none of them is not read."""
        keys = {
            join(location, name): tuple(entry["key"] for entry in entries)
            for location in locations
            for name, entries in read_index(location).items()
        }
        asked = {url: len(k) if questions is None else sum(key in questions for key in k) for url, k in keys.items()}
        self.shards = [(url, keys[url], asked[url]) for url in keys if asked[url]]
        self.questions = questions
        self.batch_size, self.decode, self.encode, self.collate = batch_size, decode, encode, collate
        self.rank, self.world_size, self.workers = rank, world_size, max(1, num_workers)
        slots = self.world_size * self.workers
        self.batches_per_slot = max(
            [
                math.ceil(sum(n for i, (_, _, n) in enumerate(self.shards) if i % slots == slot) / batch_size)
                for slot in range(slots)
            ]
            + [1]
        )

    def __len__(self) -> int:
        return self.batches_per_slot * self.workers

    def padding_sample(self, frames: JpegFrames) -> dict:
        sample = {
            "__key__": "padding",
            "meta": {"narration_id": None, "options": [], "answer_index": None},
            "frames": JpegFrames(None, frames.count, frames.size, frames.timing),
            "is_padding": True,
        }
        encoded = self.encode.encoder.encode("", None, self.encode.visual_span(sample), name="padding")
        return sample | {"input_ids": encoded.input_ids, "labels": encoded.labels}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        slot, slots = self.rank * self.workers + worker, self.world_size * self.workers
        mine = [(url, keys) for i, (url, keys, _) in enumerate(self.shards) if i % slots == slot]
        batch, emitted, template = [], 0, None
        for url, keys in mine:
            for raw in iter_shard(url, expected=len(keys), keys=keys):
                if self.questions is not None and raw["__key__"] not in self.questions:
                    continue
                sample = self.decode(raw)
                if self.questions is not None:
                    sample["meta"] = sample["meta"] | self.questions[raw["__key__"]]
                sample = self.encode(sample)
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
