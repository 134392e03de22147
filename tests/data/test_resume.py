"""An epoch continued under another layout (llavaction.data.resume), on index-only shard sets: what the ranks read
before the resume and what the new ranks read after are the epoch's items, each exactly once."""

from collections import Counter

import numpy as np
import pytest

from llavaction.data.resume import EpochPart, ResumedEpoch
from tests.helpers import planner_for

GROUPINGS = {
    "streamed": {},
    "length windows": {"length_group_window": 2},
    "megabatch": {"megabatch_steps": 2},
}


def read_rows(planner, epoch, below=None):
    """(source, key, place) of the real rows of every rank's batches numbered below `below` (all: None)."""
    rows = []
    for plan in planner.slots(epoch):
        for number, batch in zip(planner.worker_batches(plan.worker), plan.batches):
            if below is None or number < below:
                rows += [(p.source, planner.key_of(plan, p), p.place) for p in batch if not p.padding]
    return rows


def assert_each_item_once(whole, epoch, *parts):
    everything = read_rows(whole, epoch)
    read = [row for part in parts for row in part]
    assert Counter(row[:2] for row in read) == Counter(row[:2] for row in everything)  # the epoch's items
    assert sorted(row[2] for row in read) == list(range(whole.epoch_items))  # each place of the epoch once


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("worlds", [(4, 2), (4, 3), (4, 1), (2, 4)])
def test_an_epoch_resumed_on_another_world_reads_each_item_once(uneven_sets, grouping, workers, worlds):
    before, after = worlds
    quotas = [None, 13, 20]  # a source taken whole and two weighted ones (one drawn past a full pass)
    whole = planner_for(uneven_sets, before, workers, batch=2, quotas=quotas, **GROUPINGS[grouping])
    relaid = whole.relaid(world_size=after)
    for epoch in (0, 1):
        for finished in range(1, whole.batches_per_rank):
            read = read_rows(whole, epoch, below=finished)
            resumed = ResumedEpoch.plan(relaid, epoch, [EpochPart(whole.describe(), finished)])
            assert_each_item_once(whole, epoch, read, read_rows(resumed.planner, epoch))
            # the epoch keeps its length under the new layout: its remainder's batches come after first_batch
            assert resumed.first_batch + resumed.planner.batches_per_rank == relaid.batches_per_rank
            if grouping == "streamed" and finished * before % after == 0:  # no padding read before: aligned
                assert resumed.first_batch == finished * before // after
            for plan in resumed.planner.slots(epoch):  # every new rank serves full batches, the same number
                assert len(plan.batches) == len(resumed.planner.worker_batches(plan.worker))
                assert all(len(batch) == 2 for batch in plan.batches)


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_a_second_resume_continues_the_remainder(uneven_sets, grouping):
    """4 ranks read 2 batches, then 2 ranks with 2 workers 3 batches of what was left, then 3 ranks the rest."""
    first = planner_for(uneven_sets, 4, 0, batch=2, **GROUPINGS[grouping])
    second = first.relaid(world_size=2, num_workers=2)
    parts = [EpochPart(first.describe(), 2)]
    middle = ResumedEpoch.plan(second, 0, parts)
    parts.append(EpochPart(middle.planner.describe(), 3))
    last = ResumedEpoch.plan(first.relaid(world_size=3), 0, parts)
    read = [read_rows(first, 0, below=2), read_rows(middle.planner, 0, below=3), read_rows(last.planner, 0)]
    assert_each_item_once(first, 0, *read)
    assert all(read)


def test_fewer_items_left_than_ranks(uneven_sets):
    """A resume near the epoch's end: ranks left without an item of their own serve padding only."""
    whole = planner_for(uneven_sets[:1], 1, 0, batch=4)  # 29 items: 8 batches, the last holding one
    resumed = ResumedEpoch.plan(whole.relaid(world_size=3), 0, [EpochPart(whole.describe(), 7)])
    assert resumed.planner.total == 1 and resumed.planner.batches_per_rank == 1
    rows = [(plan.rank, p.padding) for plan in resumed.planner.slots(0) for batch in plan.batches for p in batch]
    assert Counter(rows) == {(0, False): 1, (0, True): 3, (1, True): 4, (2, True): 4}
    assert_each_item_once(whole, 0, read_rows(whole, 0, below=7), read_rows(resumed.planner, 0))


def test_a_remainder_planner_plans_only_its_epoch(uneven_sets):
    whole = planner_for(uneven_sets, 2, 0)
    part = whole.relaid(remaining=(1, np.arange(5)))
    with pytest.raises(ValueError, match="what is left of epoch 1, not epoch 0"):
        part.slot(0, 0, 0)
