"""Shards cut short: an error naming the shard in evaluation, a counted skip that says so in training."""

import logging
from pathlib import Path

import pytest

from llavaction.data.options import TaskSource
from llavaction.data.shards import ShardError, iter_shard, read_sizes
from tests.helpers import datamodule, truncated_copy


def test_truncated_shards(demo_dir, demo_shards, tmp_path, caplog):
    truncated_copy(demo_shards["validation_mqa"], tmp_path / "val", keep_samples=2)
    url = sorted((tmp_path / "val").glob("shard-*.tar"))[0]
    with pytest.raises(ShardError, match=f"{url}: 2 samples, sizes.json lists 8; the shard is truncated"):
        list(iter_shard(str(url), expected=8))
    dm = datamodule(demo_dir, demo_shards, val=[str(tmp_path / "val")])
    with pytest.raises(ShardError, match="truncated"):
        list(dm.val_dataloader())  # evaluation: an error, not fewer questions
    # training: a shard cut inside a sample is a counted skip that says so
    truncated_copy(demo_shards["train_mqa"], tmp_path / "train", keep_samples=8)
    first = sorted((tmp_path / "train").glob("shard-*.tar"))[0]
    first.write_bytes(first.read_bytes()[: len(first.read_bytes()) // 2 + 7])
    dm = datamodule(
        demo_dir,
        demo_shards,
        train=[TaskSource(str(tmp_path / "train"), "mqa")],
        samples_per_epoch=40,
        shuffle_buffer=2,
    )
    with caplog.at_level(logging.WARNING):
        batches = list(dm.train_dataloader())
    assert len(batches) == 10
    assert any("the shard is truncated" in r.message and "skipped so far" in r.message for r in caplog.records)
    # every planned sample the cut shard could not give is counted, not the one event
    readable = 0
    with pytest.raises(ShardError):
        for _ in iter_shard(str(first), expected=read_sizes(tmp_path / "train")[first.name]):
            readable += 1
    planner = dm.epoch_planner(world_size=1, num_workers=0)
    plan = planner.slot(0, 0, 0)
    shard = [Path(u).name for u in planner.sources[0].urls].index(first.name)
    lost = sum(
        1
        for batch in plan.batches
        for p in batch
        if not p.padding and planner.item_of(plan, p)[:2] >= (shard, readable) and planner.item_of(plan, p)[0] == shard
    )
    assert lost > 1 and sum(b.skipped_samples["unreadable_shard"] for b in batches) == lost
