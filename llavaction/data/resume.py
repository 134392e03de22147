"""An epoch continued under another layout (world size, loader workers, per-device batch, length grouping): the
samples no rank consumed before, and only those, planned by the same rules over the new ranks and workers.

An epoch's merged sequence (data/epochs.py: every source's items of the epoch, merged evenly) depends on the seed and
the data alone, not on the layout; every planned row carries its place in it. A checkpoint records, for the epoch it
stopped in, the plan of each part read so far (EpochPlanner.describe()) and the batches every rank finished of it
(ranks step together: the same count on each). Re-planning a part under its own layout gives the places its finished
batches held (padding rows left out); what no part consumed is the remainder, planned as an epoch of its own under the
new layout (EpochPlanner.remaining), its batches numbered after those the epoch's progress counts as done, so that
the epoch keeps the length of a whole epoch under the new layout. A resume under the same layout as the last part is
no re-plan: it skips the finished batches of the same plan (exact resume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llavaction.data.epochs import EpochPlanner

# what decides the epoch's items (a resume must keep them); every other key of a plan's description is its layout
DATA_KEYS = ("seed", "items", "quotas")
# the layout keys of a plan's description, as EpochPlanner's fields
LAYOUT_FIELDS = {
    "world_size": "world_size",
    "workers": "num_workers",
    "batch_size": "batch_size",
    "shuffle_buffer": "shuffle_buffer",
    "length_group_window": "length_group_window",
    "open_shards": "open_shards",
    "megabatch_steps": "megabatch_steps",
}


@dataclass(frozen=True)
class EpochPart:
    """A part of an interrupted epoch: the plan it was read under (EpochPlanner.describe()) and the batches every
    rank finished of it."""

    plan: dict
    batches: int

    def as_dict(self) -> dict:
        return {"plan": self.plan, "batches": self.batches}

    @classmethod
    def from_dict(cls, state: dict) -> EpochPart:
        return cls(dict(state["plan"]), int(state["batches"]))


def layout_of(plan: dict) -> dict:
    """EpochPlanner fields of a plan description's layout."""
    return {name: plan[key] for key, name in LAYOUT_FIELDS.items() if key in plan}


def data_differences(recorded: dict, now: dict) -> str:
    """What differs between two plans' data ('seed 0 there, 1 here'); '' when their epochs hold the same items."""
    return "; ".join(
        f"{key} {recorded[key]} there, {now.get(key)} here"
        for key in DATA_KEYS
        if key in recorded and recorded[key] != now.get(key)
    )


def read_places(planner: EpochPlanner, epoch: int, batches: int) -> np.ndarray:
    """The places of the epoch's merged sequence held by the first `batches` batches of every rank (padding left
    out), ascending."""
    if planner.megabatch_steps:  # every row's rank and batch number are known at once
        place, groups = planner.grouped(epoch)[2:]
        return np.sort(place[groups[:, 1] < batches])
    read = [
        planned.place
        for plan in planner.slots(epoch)
        for number, batch in zip(planner.worker_batches(plan.worker), plan.batches)
        if number < batches
        for planned in batch
        if not planned.padding
    ]
    return np.unique(np.asarray(read, dtype=np.int64))


@dataclass
class ResumedEpoch:
    """An epoch continued under another layout: the parts read before, and the remainder's planner, whose batch j
    is the epoch's batch `first_batch + j`."""

    epoch: int
    earlier: list[EpochPart]
    planner: EpochPlanner
    first_batch: int

    @classmethod
    def plan(cls, base: EpochPlanner, epoch: int, earlier: list[EpochPart]) -> ResumedEpoch:
        """What is left of `epoch` after the earlier parts, planned under `base`'s layout. Each part's data must be
        base's (data_differences, checked by the caller)."""
        planner = base.relaid(remaining=(epoch, planned_parts(base, epoch, earlier)[1]))
        return cls(epoch, list(earlier), planner, base.batches_per_rank - planner.batches_per_rank)


def planned_parts(
    base: EpochPlanner, epoch: int, parts: list[EpochPart]
) -> tuple[list[tuple[EpochPart, EpochPlanner]], np.ndarray]:
    """Each part of an epoch with the planner that planned it, and the places no part read."""
    planners, left = [], np.arange(base.epoch_items)
    for part in parts:
        planner = base.relaid(**layout_of(part.plan), remaining=(epoch, left))
        planners.append((part, planner))
        left = np.setdiff1d(left, read_places(planner, epoch, part.batches), assume_unique=True)
    return planners, left


@dataclass
class EpochPlans:
    """The planner of each epoch of a fit: `base`, except for the epoch a resume re-planned."""

    base: EpochPlanner
    resumed: ResumedEpoch | None = None

    def planner(self, epoch: int) -> EpochPlanner:
        return self.resumed.planner if self.resumed is not None and self.resumed.epoch == epoch else self.base

    def first_batch(self, epoch: int) -> int:
        """The epoch's batch number of the planner's first batch (0 but for a re-planned epoch)."""
        return self.resumed.first_batch if self.resumed is not None and self.resumed.epoch == epoch else 0

    def earlier(self, epoch: int) -> list[dict]:
        """The parts of the epoch read before its planner's (as a checkpoint records them)."""
        if self.resumed is None or self.resumed.epoch != epoch:
            return []
        return [part.as_dict() for part in self.resumed.earlier]
