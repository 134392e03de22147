"""extract_frames --add: a store takes the clips it lacks, with its own clip rule, and is read as one set."""

import json
import shutil

from data_prep.extract_frames import main as extract_frames
from data_prep.merge_shards import main as merge_shards
from llavaction.data.shards import iter_samples, read_index, read_sizes, shard_urls
from llavaction.data.store import check_clips
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import extract_args, one_line_exit


def add_args(questions, videos, store, *extra):
    """The tests' shards' clip rule (8 frames of 32 px, q90, squash), adding to `store`."""
    return extract_args(questions, videos, store, "--num-frames", "8", "--add", *extra)


def test_a_store_takes_the_clips_it_lacks_and_reads_as_one_set(demo_dir, demo_questions, demo_shards, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(demo_shards["validation_mqa"], store)  # the validation clips; the training ones are lacking
    train = demo_questions["train_mqa"]
    assert extract_frames(add_args(train, demo_dir / "videos", store)) == 0
    held = {k for entries in read_index(store).values() for k in (e["key"] for e in entries)}
    train_keys = {q["narration_id"] for q in read_jsonl(train)}
    assert held == train_keys | {q["narration_id"] for q in read_jsonl(demo_questions["validation_mqa"])}
    assert sum(read_sizes(store).values()) == len(held)
    check_clips({"train": read_jsonl(train)}, [str(store)])
    # the added frames are the ones the training set's own shards hold, byte for byte
    own = {s["__key__"]: s for s in iter_samples(shard_urls(demo_shards["train_mqa"]))}
    for sample in iter_samples(shard_urls(store)):
        if sample["__key__"] in train_keys:
            assert sample["000.jpg"] == own[sample["__key__"]]["000.jpg"]
            assert sample["007.jpg"] == own[sample["__key__"]]["007.jpg"]
    # the same file again: nothing to add, nothing decoded
    capsys.readouterr()
    assert extract_frames(add_args(train, demo_dir / "videos", store)) == 0
    assert "nothing to add" in capsys.readouterr().err
    # another clip rule, or a key the store holds for another clip: refused, the store unchanged
    before = (store / "sizes.json").read_bytes()
    error = one_line_exit(capsys, lambda: extract_frames(add_args(train, demo_dir / "videos", store, "--size", "16")))
    assert "its clips have size 32, this run asks 16; a store holds one clip rule" in error
    moved = [dict(q) for q in read_jsonl(train)]
    moved[0]["clip_start_sec"] += 0.5
    (tmp_path / "moved.jsonl").write_text("".join(json.dumps(q) + "\n" for q in moved))
    error = one_line_exit(
        capsys, lambda: extract_frames(add_args(tmp_path / "moved.jsonl", demo_dir / "videos", store))
    )
    assert "1 questions ask about another clip than" in error
    assert (store / "sizes.json").read_bytes() == before
    error = one_line_exit(capsys, lambda: extract_frames(add_args(train, demo_dir / "videos", tmp_path / "none")))
    assert "not a frame store" in error


def test_an_addition_by_array_tasks_is_listed_when_merged(demo_dir, demo_questions, demo_shards, tmp_path, capsys):
    """--add by 2 array tasks: the store is unchanged until merge_shards of the addition, which lists it; the store
    then holds what a single --add gives, sample for sample."""
    single, arrayed = tmp_path / "single", tmp_path / "arrayed"
    for store in (single, arrayed):
        shutil.copytree(demo_shards["validation_mqa"], store)
    train, videos = demo_questions["train_mqa"], demo_dir / "videos"
    assert extract_frames(add_args(train, videos, single)) == 0
    before = read_sizes(arrayed)
    for index in ("1", "0"):
        assert extract_frames(add_args(train, videos, arrayed, "--num-tasks", "2", "--task-index", index)) == 0
    assert read_sizes(arrayed) == before  # not listed before the merge
    (addition,) = arrayed.glob("add-*")
    assert "merge_shards --out " + str(addition) in capsys.readouterr().out
    assert merge_shards(["--out", str(addition)]) == 0
    listed = {name.split("/")[0] for name in read_sizes(arrayed)}
    assert addition.name in listed and sum(read_sizes(arrayed).values()) == sum(read_sizes(single).values())

    def samples(store):
        return {s["__key__"]: (s["json"], s["000.jpg"]) for s in iter_samples(shard_urls(store))}

    assert samples(arrayed) == samples(single)
    capsys.readouterr()
    assert extract_frames(add_args(train, videos, arrayed)) == 0
    assert "nothing to add" in capsys.readouterr().err
