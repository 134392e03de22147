"""Training epochs planned from the shard sets' index.json alone (no frame read): which items each rank and loader
worker reads, in which order and in which batches. The training stream (streams.TrainStream) and
`python -m llavaction.data.plan` run this same code, so the plan a user inspects is what a fit consumes.

An item is a shard sample, or one conversation of a replayed video's sample. In each epoch a source gives:
- taken whole (weight `size` or a sampling strategy, llavaction.data.sampling): each of its items exactly once (a
  strategy picks a fixed subset for the run first: first/end by question-file order, random seeded);
- with a numeric weight: its share of `samples_per_epoch`, read from an endless series of seeded permutations of its
  items, so an epoch continues where the previous one stopped: full passes, then a without-replacement remainder.
A source's epoch items are ordered shard by shard (shards in a seeded per-epoch order, samples as stored). The sources
are merged evenly (each source's items spread over the whole epoch) and the merged sequence is cut into contiguous
shares: equal per rank (the first `total mod ranks` ranks one more), then per loader worker by the batches it serves
(batch b of a rank comes from worker b mod W). A shard is read by the one worker whose share holds it, except where a
cut falls inside it: then each of the neighbouring workers reads its own samples of it.
A worker reads its items of a source from `open_shards` shards at a time (their samples interleaved at random), through
a seeded shuffle buffer per source, interleaves its sources by
drawing each next item from a source in proportion to what the source has left, and cuts batches (from length-sorted
windows when asked). Every rank serves the same number of batches, so a rank short of a full last batch fills it with
repeats of that batch's samples (or of the worker's previous ones), flagged as padding: left out of the loss and
counted. At most one batch's worth per rank is padding.
Every planned row carries its place in the epoch's merged sequence (which depends on the seed and the data alone): a
resume under another layout plans what no rank read of an epoch by these same rules (data/resume.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from llavaction.data.megabatch import megabatch_groups
from llavaction.data.orders import interleaved, seed_of, shuffled
from llavaction.data.sources import SourceItems
from llavaction.data.stages import conversation_key


@dataclass(frozen=True)
class PlannedItem:
    """One row of a batch: the source, the read (in the worker's reads of that source) holding its sample, the
    conversation (-1: the sample itself), the item's place in the epoch's merged sequence (what identifies it when a
    resume plans the rest of an epoch) and whether it is padding."""

    source: int
    read: int
    conversation: int
    place: int
    padding: bool = False


@dataclass
class SlotPlan:
    """What one loader worker of one rank does in an epoch: for each source the samples it reads, in order, as
    (shard, sample) pairs, and its batches of PlannedItems, in the order it serves them."""

    rank: int
    worker: int
    reads: list[list[tuple[int, int]]]
    batches: list[list[PlannedItem]]


@dataclass
class EpochPlanner:
    """Plans every epoch of a training mixture for a world size and worker count (the module docstring).

    Args:
        sources: each source's items (strategies already applied).
        quotas: items per epoch of each source; None: the source whole.
        seed: the run's seed.
        batch_size: samples per batch and rank.
        world_size: ranks.
        num_workers: loader workers per rank (0: the main process, planned as one).
        shuffle_buffer: items each worker holds per source for shuffling.
        length_group_window: when > 0, batches are cut from windows of this many batches' items sorted by words.
        open_shards: shards of a source a worker reads at once, their samples interleaved.
        megabatch_steps: when > 0, the reference's length grouping instead (data/megabatch.py): megabatches of
            world x megabatch_steps x batch_size items of the epoch's sequence, shuffled within windows of
            shuffle_buffer x world items; each rank's batches come from every megabatch, so each rank reads every
            shard of the epoch.
        remaining: (epoch, places): this planner plans only these places of that epoch's merged sequence (ascending),
            by the same rules: what is left of an epoch a resume continues under another layout (data/resume.py).
    """

    sources: list[SourceItems]
    quotas: list[int | None]
    seed: int
    batch_size: int
    world_size: int
    num_workers: int
    shuffle_buffer: int
    length_group_window: int = 0
    open_shards: int = 1
    megabatch_steps: int = 0
    remaining: tuple[int, np.ndarray] | None = None
    _grouped: tuple | None = field(default=None, init=False, repr=False)
    _merged: tuple | None = field(default=None, init=False, repr=False)
    _passes: dict[int, dict[int, np.ndarray]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.remaining is None and self.total < self.world_size:
            raise ValueError(f"an epoch of {self.total} training samples cannot feed {self.world_size} ranks")
        if self.megabatch_steps and self.length_group_window:
            raise ValueError("data.loader.megabatch_steps and length_group_window are two length groupings: set one")

    @property
    def workers(self) -> int:
        return max(1, self.num_workers)

    def source_quota(self, source: int) -> int:
        quota = self.quotas[source]
        return len(self.sources[source]) if quota is None else quota

    @property
    def epoch_items(self) -> int:
        """Items of a whole epoch over all ranks, padding left out."""
        return sum(self.source_quota(s) for s in range(len(self.sources)))

    @property
    def total(self) -> int:
        """Items this planner plans per epoch over all ranks (a remainder's for its epoch), padding left out."""
        return self.epoch_items if self.remaining is None else len(self.remaining[1])

    def relaid(self, **layout) -> EpochPlanner:
        """This planner's data under another layout (world_size, num_workers, batch_size, ...; remaining)."""
        return replace(self, **layout)

    def rank_items(self, rank: int) -> int:
        share, extra = divmod(self.total, self.world_size)
        return share + (rank < extra)

    @property
    def batches_per_rank(self) -> int:
        if self.megabatch_steps:  # each megabatch gives every rank megabatch_steps batches
            return self.megabatch_steps * math.ceil(
                self.total / (self.world_size * self.megabatch_steps * self.batch_size)
            )
        return math.ceil(self.rank_items(0) / self.batch_size)

    def worker_batches(self, worker: int) -> list[int]:
        """The batch numbers of a rank that a worker serves."""
        return list(range(worker, self.batches_per_rank, self.workers))

    def source_epoch(self, source: int, epoch: int) -> np.ndarray:
        """The source's items of an epoch in read order (see the module docstring)."""
        items, quota = self.sources[source], self.quotas[source]
        size = len(items)
        if quota is None:  # whole: pass `epoch` of the source
            segments = [(epoch, np.arange(size))]
        else:  # positions [epoch * quota, (epoch + 1) * quota) of the endless series of passes
            start, stop = epoch * quota, (epoch + 1) * quota
            segments = []
            for run in range(start // size, math.ceil(stop / size)):
                low, high = max(start, run * size) - run * size, min(stop, (run + 1) * size) - run * size
                segments.append((run, np.sort(self._pass(source, run)[low:high])))
        ordered = []
        for run, chosen in segments:  # shard by shard in a seeded order, samples as stored
            shard_order = np.random.default_rng(seed_of(self.seed, "shards", source, run)).permutation(len(items.urls))
            position = np.empty_like(shard_order)
            position[shard_order] = np.arange(len(shard_order))
            ordered.append(chosen[np.lexsort((chosen, position[items.shard[chosen]]))])
        return np.concatenate(ordered) if ordered else np.zeros(0, dtype=np.int64)

    def _pass(self, source: int, run: int) -> np.ndarray:
        """Pass `run` over a weighted source: a seeded permutation of its items, except that when an epoch began
        inside an earlier pass, the items that epoch took from it come last, so the epoch takes every item once
        before it repeats any (full passes, then a remainder without replacement)."""
        cache = self._passes.setdefault(source, {})
        if run not in cache:
            size, quota = len(self.sources[source]), self.quotas[source]
            permutation = np.random.default_rng(seed_of(self.seed, "pass", source, run)).permutation(size)
            began = (run * size // quota) * quota  # where the epoch holding this pass's start began
            earlier = began // size
            if began % size and earlier < run:
                taken = np.zeros(size, dtype=bool)
                taken[self._pass(source, earlier)[began - earlier * size :]] = True
                permutation = np.concatenate([permutation[~taken[permutation]], permutation[taken[permutation]]])
            cache[run] = permutation
        return cache[run]

    def merged(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """The epoch's items of all sources merged evenly (the places a remainder keeps): per place its source, its
        position in that source's epoch sequence and its place in the whole merged sequence; and the sequences."""
        if self._merged is None or self._merged[0] != epoch:
            if self.remaining is not None and self.remaining[0] != epoch:
                raise ValueError(f"this planner plans what is left of epoch {self.remaining[0]}, not epoch {epoch}")
            sequences = [self.source_epoch(s, epoch) for s in range(len(self.sources))]
            source_of = np.concatenate([np.full(len(q), s) for s, q in enumerate(sequences)])
            position = np.concatenate([np.arange(len(q)) for q in sequences])
            spread = np.concatenate([(np.arange(len(q)) + 0.5) / max(1, len(q)) for q in sequences])
            order = np.lexsort((source_of, spread))
            place = np.arange(len(order)) if self.remaining is None else np.asarray(self.remaining[1], dtype=np.int64)
            self._merged = (epoch, source_of[order][place], position[order][place], place, sequences)
        return self._merged[1:]

    def worker_span(self, rank: int, worker: int) -> tuple[int, int]:
        """[start, stop) of a worker's share in the merged sequence."""
        start = sum(self.rank_items(r) for r in range(rank))
        real = self.rank_items(rank)
        for w in range(worker):
            start += self._worker_real(real, w)
        return start, start + self._worker_real(real, worker)

    def _worker_real(self, real: int, worker: int) -> int:
        """Items of a worker whose rank has `real` items: full batches, but for the rank's last batch (a rank holds
        at least all but one batch's worth: ranks differ by one item at most)."""
        batches, last = self.worker_batches(worker), self.batches_per_rank - 1
        full = sum(1 for b in batches if b < last) * self.batch_size
        return full + (real - last * self.batch_size if last in batches else 0)

    def slot(self, epoch: int, rank: int, worker: int) -> SlotPlan:
        """The plan of one worker of one rank for an epoch."""
        if self.megabatch_steps:
            return self._megabatch_slot(epoch, rank, worker)
        source_of, position, place, sequences = self.merged(epoch)
        start, stop = self.worker_span(rank, worker)
        reads: list[list[tuple[int, int]]] = [[] for _ in self.sources]
        streams = []
        for s, items in enumerate(self.sources):
            at = np.flatnonzero(source_of[start:stop] == s) + start
            rng = random.Random(seed_of(self.seed, "open_shards", epoch, rank, worker, s))
            planned: list[tuple[PlannedItem, int]] = []
            for unit in self._read_order(items, sequences[s][position[at]], place[at], rng):
                reads[s].append(unit[0][1:3])
                read = len(reads[s]) - 1
                planned += [(PlannedItem(s, read, conv, merged), item) for item, _, _, conv, merged in unit]
            rng = random.Random(seed_of(self.seed, "shuffle", epoch, rank, worker, s))
            streams.append(list(shuffled(planned, self.shuffle_buffer, rng)))
        rng = random.Random(seed_of(self.seed, "interleave", epoch, rank, worker))
        mixed = list(interleaved(streams, rng))
        batches = self._batches(mixed, epoch, rank, worker)
        plan = SlotPlan(rank, worker, reads, [[p for p, _ in batch] for batch in batches])
        self._pad(plan, rank, epoch)
        return plan

    def grouped(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The megabatch grouping of an epoch: the merged sequence shuffled within windows (per place its source, its
        position in that source's sequence and its place in the merged sequence), and per place its [rank, batch
        number, place in the batch]."""
        if self._grouped is None or self._grouped[0] != epoch:
            source_of, position, place, sequences = self.merged(epoch)
            rng = np.random.default_rng(seed_of(self.seed, "megabatch", epoch))
            window, count = self.shuffle_buffer * self.world_size, len(source_of)
            order = np.concatenate(
                [rng.permutation(np.arange(b, min(b + window, count))) for b in range(0, count, window)]
                or [np.zeros(0, dtype=np.int64)]
            )
            source_of, position, place = source_of[order], position[order], place[order]
            words = np.empty(count, dtype=np.int64)
            for s, items in enumerate(self.sources):
                here = source_of == s
                words[here] = items.words[sequences[s][position[here]]]
            groups = megabatch_groups(words, self.batch_size, self.world_size, self.megabatch_steps)
            self._grouped = (epoch, source_of, position, place, groups)
        return self._grouped[1:]

    def _megabatch_slot(self, epoch: int, rank: int, worker: int) -> SlotPlan:
        """A worker's batches under the megabatch grouping; its reads in the merged sequence's order (shard by shard),
        a sample read once for the consecutive rows it gives, kept until its batches are served."""
        sequences = self.merged(epoch)[3]
        source_of, position, place, groups = self.grouped(epoch)
        serves = self.worker_batches(worker)
        mine = np.flatnonzero((groups[:, 0] == rank) & np.isin(groups[:, 1], serves))
        reads: list[list[tuple[int, int]]] = [[] for _ in self.sources]
        row_of = {}
        for at in sorted(mine.tolist(), key=lambda m: (source_of[m], position[m])):  # shards read forward
            s = int(source_of[at])
            items, item = self.sources[s], int(sequences[s][position[at]])
            sample = (int(items.shard[item]), int(items.sample[item]))
            if not reads[s] or reads[s][-1] != sample:
                reads[s].append(sample)
            row_of[at] = PlannedItem(s, len(reads[s]) - 1, int(items.conversation[item]), int(place[at]))
        chunk_of = {b: [] for b in serves}
        for at in sorted(mine.tolist(), key=lambda m: groups[m, 2]):  # chunk order: as the megabatch was split
            chunk_of[int(groups[at, 1])].append(row_of[at])
        plan = SlotPlan(rank, worker, reads, [chunk_of[b] for b in serves])
        self._pad(plan, rank, epoch)
        return plan

    def _read_order(
        self, items: SourceItems, chosen: np.ndarray, places: np.ndarray, rng: random.Random
    ) -> list[list[tuple]]:
        """A worker's reads of one source: units of (item, shard, sample, conversation, merged place) rows that one
        read of a sample serves (its conversations), taken from `open_shards` consecutive shards at a time, each next
        unit drawn from a shard in proportion to the units the shard has left."""
        columns = (chosen.tolist(), items.shard[chosen].tolist(), items.sample[chosen].tolist())
        units: list[list[tuple]] = []
        for row in zip(*columns, items.conversation[chosen].tolist(), places.tolist()):
            same_sample = units and units[-1][0][1:3] == row[1:3]
            if same_sample and all(done[3] != row[3] for done in units[-1]):  # a next pass reads the sample again
                units[-1].append(row)
            else:
                units.append([row])
        runs: list[list[list[tuple]]] = []  # the units of one shard, in a row
        for unit in units:
            if runs and runs[-1][-1][0][1] == unit[0][1]:
                runs[-1].append(unit)
            else:
                runs.append([unit])
        ordered = []
        for begin in range(0, len(runs), self.open_shards):
            ordered += interleaved(runs[begin : begin + self.open_shards], rng)
        return ordered

    def _batches(self, mixed: list, epoch: int, rank: int, worker: int) -> list[list]:
        size = self.batch_size
        if self.length_group_window <= 0:
            batches = [mixed[i : i + size] for i in range(0, len(mixed), size)]
        else:
            rng = random.Random(seed_of(self.seed, "length_groups", epoch, rank, worker))
            batches, window = [], size * self.length_group_window
            for begin in range(0, len(mixed), window):
                pool = sorted(mixed[begin : begin + window], key=lambda p: self.sources[p[0].source].words[p[1]])
                group = [pool[i : i + size] for i in range(0, len(pool), size)]
                rng.shuffle(group)
                batches += group
        return batches + [[] for _ in range(len(self.worker_batches(worker)) - len(batches))]

    def _pad(self, plan: SlotPlan, rank: int, epoch: int) -> None:
        """Fill short batches with repeats of their own items, or of the worker's previous batch; a worker with no
        item of its own repeats the first items of its rank, read for the purpose."""
        previous: list[PlannedItem] = []
        for batch in plan.batches:
            missing = self.batch_size - len(batch)
            if missing:
                pool = [p for p in batch if not p.padding] or previous or self._rank_first(plan, rank, epoch)
                batch += [replace(pool[i % len(pool)], padding=True) for i in range(missing)]
            previous = [p for p in batch if not p.padding] or previous

    def _rank_first(self, plan: SlotPlan, rank: int, epoch: int) -> list[PlannedItem]:
        """The first items of the rank's share (of the epoch's, for a rank of a remainder left without any)."""
        source_of, position, place, sequences = self.merged(epoch)
        start = sum(self.rank_items(r) for r in range(rank)) if self.rank_items(rank) else 0
        pool = []
        for at in range(start, start + min(self.batch_size, self.rank_items(rank) or self.total)):
            s = int(source_of[at])
            item = int(sequences[s][position[at]])
            items = self.sources[s]
            plan.reads[s].append((int(items.shard[item]), int(items.sample[item])))
            pool.append(PlannedItem(s, len(plan.reads[s]) - 1, int(items.conversation[item]), int(place[at])))
        return pool

    def slots(self, epoch: int) -> Iterator[SlotPlan]:
        """Every worker's plan, rank by rank."""
        for rank in range(self.world_size):
            for worker in range(self.workers):
                yield self.slot(epoch, rank, worker)

    def item_of(self, plan: SlotPlan, planned: PlannedItem) -> tuple[int, int, int]:
        """(shard, sample, conversation) of a planned item."""
        shard, sample = plan.reads[planned.source][planned.read]
        return shard, sample, planned.conversation

    def key_of(self, plan: SlotPlan, planned: PlannedItem) -> str:
        shard, sample, conversation = self.item_of(plan, planned)
        return conversation_key(self.sources[planned.source].keys[shard][sample], conversation)

    def describe(self) -> dict:
        """What decides the plan: a checkpoint records it, so a resume under other settings is caught."""
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "shuffle_buffer": self.shuffle_buffer,
            "length_group_window": self.length_group_window,
            "open_shards": self.open_shards,
            "megabatch_steps": self.megabatch_steps,
            "items": [len(s) for s in self.sources],
            "quotas": [self.source_quota(s) for s in range(len(self.sources))],
        }
