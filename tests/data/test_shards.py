"""Shards cut short: an error naming the shard in evaluation, a counted skip that says so in training; shards replaced
after indexing and questions held twice: errors."""

import logging
from pathlib import Path

import pytest

from llavaction.data.options import TaskSource
from llavaction.data.shards import ShardChanged, ShardError, iter_shard, read_sizes
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


def test_a_shard_replaced_after_indexing_is_an_error_naming_it(demo_dir, demo_shards, tmp_path, capsys):
    """A tar swapped for another of the same size: evaluation and training stop naming it, not score or train on
    samples the index does not list."""
    import shutil

    train = tmp_path / "train"
    shutil.copytree(demo_shards["train_mqa"], train)
    first, second = sorted(train.glob("shard-*.tar"))[:2]
    assert read_sizes(train)[first.name] == read_sizes(train)[second.name]
    second.write_bytes(first.read_bytes())
    with pytest.raises(
        ShardChanged, match=rf"{second}: sample 0 is '.*' where index.json lists '.*': the shard changed"
    ):
        list(datamodule(demo_dir, demo_shards, val=[str(train)]).val_dataloader())
    dm = datamodule(demo_dir, demo_shards, train=[TaskSource(str(train), "mqa")], samples_per_epoch=64)
    with pytest.raises(ShardChanged, match=str(second)):
        list(dm.train_dataloader())


def test_a_question_held_by_two_shard_sets_is_refused(demo_dir, demo_shards, tmp_path):
    """The same questions extracted twice (at 4 and at 8 frames, say) would be scored twice."""
    import shutil

    again = tmp_path / "again"
    shutil.copytree(demo_shards["validation_mqa"], again)
    with pytest.raises(ShardError, match=r"is held twice: in .*validation_mqa.* and in .*again"):
        datamodule(demo_dir, demo_shards, val=[str(demo_shards["validation_mqa"]), str(again)]).setup("validate")
    with pytest.raises(ShardError, match="is held twice"):
        datamodule(demo_dir, demo_shards, val=[str(again), str(again)]).setup("validate")


@pytest.mark.parametrize("sizes", ['{"shard-000000.tar": "8"}', '["shard-000000.tar"]', '{"shard-000000.tar": -1}'])
def test_a_sizes_file_of_other_values_is_refused_naming_it(demo_shards, tmp_path, sizes):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_shards["validation_mqa"], copy)
    (copy / "sizes.json").write_text(sizes)
    with pytest.raises(ShardError, match=r"sizes.json: expected \{shard file name: sample count\}"):
        read_sizes(copy)
