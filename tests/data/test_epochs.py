"""Epoch plans (llavaction.data.epochs) on index-only shard sets: each item once an epoch, balanced ranks, counted
padding, seeded orders, weighted sources and the reference's sampling strategies."""

import random
from collections import Counter

import pytest

from llavaction.data.sampling import SamplingStrategy
from llavaction.data.sources import apply_strategy, epoch_quotas, source_items
from tests.helpers import ROOT, planned_rows, planner_for


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_each_item_once_equal_batches_counted_padding(uneven_sets, world, workers):
    planner = planner_for(uneven_sets, world, workers, length_group_window=2 if workers == 1 else 0)
    everything = Counter((s, planner.sources[s].key(i)) for s in range(3) for i in range(len(planner.sources[s])))
    assert sum(everything.values()) == 29 + 10 + 12  # the replay set's 6 videos hold 12 conversations
    for epoch in (0, 1):
        planned = planned_rows(planner, epoch)
        real = Counter((source, key) for *_, source, key, padding in planned if not padding)
        assert real == everything  # every item exactly once across ranks and workers
        for rank in range(world):
            mine = [r for r in planned if r[0] == rank]
            batches = Counter(r[2] for r in mine)
            assert sorted(batches) == list(range(planner.batches_per_rank))  # the same batches on every rank
            assert set(batches.values()) == {3}  # every batch full
            assert sum(r[5] for r in mine) < planner.batch_size + 1  # at most one batch's worth of padding
        for plan in planner.slots(epoch):  # a worker's reads are disjoint from every other worker's
            assert len({*map(tuple, plan.reads[0])}) == len(plan.reads[0])
    assert planned_rows(planner, 0) != planned_rows(planner, 1)  # every epoch its own order
    again = planner_for(uneven_sets, world, workers, 3, **_window(workers))
    assert planned_rows(planner, 0) == planned_rows(again, 0)  # seeded


def _window(workers):
    return {"length_group_window": 2 if workers == 1 else 0}


@pytest.mark.parametrize("open_shards", [1, 3])
def test_shards_are_read_whole_by_one_worker_but_at_the_cuts(uneven_sets, open_shards):
    planner = planner_for(uneven_sets[:1], 2, 2, batch=2, open_shards=open_shards)
    readers = Counter()
    for plan in planner.slots(0):
        readers.update({shard for shard, _ in plan.reads[0]})
        for shard in {shard for shard, _ in plan.reads[0]}:  # each shard's samples read in stored order
            samples = [sample for s, sample in plan.reads[0] if s == shard]
            assert samples == sorted(samples)
    # 4 shards over 4 workers: a shard is shared only where a worker's share ends inside it (3 cuts)
    assert sum(readers.values()) <= len(readers) + 3


def test_sources_interleave_through_the_epoch(uneven_sets):
    planner = planner_for(uneven_sets[:2], 1, 0, batch=1, shuffle_buffer=1)
    order = [source for *_, source, _, padding in planned_rows(planner, 0) if not padding]
    first_half = order[: len(order) // 2]
    assert 0.4 < first_half.count(1) / order.count(1) < 0.8  # source 1 is not saved for the end


def test_weighted_sources_draw_without_replacement_across_epochs(uneven_sets):
    size = 29
    for quota in (10, 29, 40, 70):
        planner = planner_for(uneven_sets[:1], 2, 1, quotas=[quota])
        epochs = [Counter(key for *_, key, padding in planned_rows(planner, e) if not padding) for e in range(4)]
        for counts in epochs:
            assert sum(counts.values()) == quota
            full, rest = divmod(quota, size)
            # full passes, then a remainder without replacement
            assert sorted(Counter(counts.values()).items()) == sorted(
                {k: v for k, v in {full: size - rest, full + 1: rest}.items() if v and k}.items()
            )
        if quota < size:  # consecutive epochs continue the pass: two epochs of 10 see 20 different samples
            assert not set(epochs[0]) & set(epochs[1])


def test_epoch_quotas():
    assert epoch_quotas([10, 20], [None, None], None) == [None, None]
    assert epoch_quotas([10, 20, 5], [None, 1.0, 3.0], 50) == [None, 10, 30]
    assert sum(epoch_quotas([7, 7, 7], [1.0, 1.0, 1.0], 10)) == 10
    with pytest.raises(ValueError, match="set samples_per_epoch: null"):
        epoch_quotas([10, 20], [None, None], 100)
    with pytest.raises(ValueError, match="samples_per_epoch, which is null"):
        epoch_quotas([10, 20], [None, 1.0], None)
    with pytest.raises(ValueError, match="leaves nothing"):
        epoch_quotas([10, 20], [None, 1.0], 10)


@pytest.mark.parametrize(
    "text, kept",
    [
        ("all", list(range(10))),
        ("first:3", [0, 1, 2]),
        ("first:25%", [0, 1, 2]),  # ceil(2.5), as the reference rounds a percentage up
        ("end:2", [8, 9]),
        ("end:0", []),  # the reference's [-0:] would keep everything (README, differences)
        ("first:50", list(range(10))),
        ("random:4", None),
        ("random:30%", None),
    ],
)
def test_sampling_strategies_as_the_reference(text, kept):
    strategy = SamplingStrategy.parse(text)
    chosen = strategy.select(10, random.Random(0))
    if kept is not None:
        assert chosen == kept
    else:
        assert len(chosen) == strategy.size(10) and chosen == sorted(set(chosen))
        assert chosen == strategy.select(10, random.Random(0)) != strategy.select(10, random.Random(1))


@pytest.mark.parametrize("text", ["first:-1", "end:-3", "random:101%", "first:-5%", "first:x", "last:3", "all:3"])
def test_bad_sampling_strategies(text):
    with pytest.raises(ValueError, match="sampling strategy"):
        SamplingStrategy.parse(text)


def test_strategies_count_in_question_file_order(uneven_sets):
    items = source_items(uneven_sets[0])
    first = apply_strategy(items, SamplingStrategy.parse("first:4"), random.Random(0))
    # the index lists question lines backwards, so the first four questions are the last four samples
    assert sorted(first.key(i) for i in range(len(first))) == ["a25", "a26", "a27", "a28"]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 2])
def test_the_reference_megabatch_grouping_plans_each_item_once(uneven_sets, world, workers):
    """loader.megabatch_steps: each item once, the same batches on every rank, each megabatch's chunks balanced by
    length across the ranks of a step; reads go forward through each shard."""
    planner = planner_for(uneven_sets, world, workers, batch=2, megabatch_steps=2)
    everything = Counter((s, planner.sources[s].key(i)) for s in range(3) for i in range(len(planner.sources[s])))
    for epoch in (0, 1):
        planned = planned_rows(planner, epoch)
        assert Counter((source, key) for *_, source, key, padding in planned if not padding) == everything
        for rank in range(world):
            batches = Counter(r[2] for r in planned if r[0] == rank)
            assert sorted(batches) == list(range(planner.batches_per_rank)) and set(batches.values()) == {2}
        for plan in planner.slots(epoch):  # each shard's samples read forward, each once (sources taken whole)
            for reads in plan.reads:
                for shard in {shard for shard, _ in reads}:
                    samples = [sample for s, sample in reads if s == shard]
                    assert samples == sorted(set(samples))
    assert planner.batches_per_rank == 2 * -(-51 // (world * 2 * 2))
    with pytest.raises(ValueError, match="two length groupings"):
        planner_for(uneven_sets, world, workers, megabatch_steps=2, length_group_window=2)


def test_megabatch_chunks_are_the_references_on_hand_made_lengths():
    """The split of one megabatch as the reference's split_to_even_chunks: longest first, each to the chunk with the
    least length so far (the first of equals), a full chunk closed; round robin when it does not divide."""
    import numpy as np

    from llavaction.data.megabatch import balanced_chunks, megabatch_groups

    lengths = np.array([5, 9, 1, 9, 3, 7, 2, 8])
    # sorted: 9(1) 9(3) 8(7) 7(5) 5(0) 3(4) 2(6) 1(2); 5 joins 7 (the least), 3 joins 8, 2 joins the first 9
    assert balanced_chunks(lengths, 4) == [[1, 6], [3, 2], [7, 4], [5, 0]]
    assert balanced_chunks(lengths[:7], 2) == [[1, 5, 4, 2], [3, 0, 6]]  # 7 into 2: round robin
    groups = megabatch_groups(lengths, batch=2, world=2, steps=2)  # chunk j -> step j // 2, rank j % 2
    assert groups[:, 0].tolist() == [1, 0, 1, 1, 0, 1, 0, 0]  # rank of each item
    assert groups[:, 1].tolist() == [1, 0, 0, 0, 1, 1, 0, 1]  # its batch number on that rank
    # and on random lengths, the split of benchmarks/padding.py, transcribed from the reference's code
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from padding import even_chunks

    rng = np.random.default_rng(0)
    for size, count in ((256, 8), (64, 64), (100, 8)):
        random_lengths = rng.integers(1, 50, size)
        order = np.argsort(-random_lengths, kind="stable").tolist()
        assert balanced_chunks(random_lengths, count) == even_chunks(order, random_lengths.tolist(), count)


def test_a_partial_megabatch_is_dealt_as_the_references_loader_deals_it():
    """The reference's sampler yields each megabatch's chunks as one flat list, which its data loader cuts into
    per-device batches, batch j going to rank j mod world: for a megabatch short of world x steps x batch items (the
    last), with a per-device batch above 1, its batches are those cuts, not its chunks."""
    import sys

    import numpy as np

    from llavaction.data.megabatch import megabatch_groups

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from padding import even_chunks

    world, steps, batch = 2, 3, 2
    size = world * steps * batch
    lengths = np.random.default_rng(1).integers(1, 50, 2 * size + 7)  # two full megabatches and one of 7
    flat = []
    for begin in range(0, len(lengths), size):
        order = (np.argsort(-lengths[begin : begin + size], kind="stable") + begin).tolist()
        flat += [index for chunk in even_chunks(order, lengths.tolist(), world * steps) for index in chunk]
    expected = np.empty((len(lengths), 3), dtype=np.int64)
    for cut, index in enumerate(flat):  # the loader's batch j of the flat list: rank j % world, its batch j // world
        expected[index] = [(cut // batch) % world, (cut // batch) // world, cut % batch]
    assert (megabatch_groups(lengths, batch, world, steps) == expected).all()
    last = expected[2 * size :]  # 7 items cut into 4 batches: two full for rank 0; for rank 1 one, then one item
    assert sorted(map(tuple, last[:, :2].tolist())) == [(0, 6), (0, 6), (0, 7), (0, 7), (1, 6), (1, 6), (1, 7)]
