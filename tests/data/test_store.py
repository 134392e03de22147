"""A shard set as a frame store: another question file over its frames gives the same frames with that file's
questions, decodes no video, and a question about another clip, or without one in the store, is refused."""

import json
import shutil

import pytest

from data_prep.build_mqa import main as build_mqa
from llavaction.data.shards import INDEX_FILE
from llavaction.data.store import check_clips
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import datamodule


def variant(demo_dir, out, *extra):
    """Another build of the demo validation questions (3 random options unless told)."""
    build_mqa(
        ["--annotations", str(demo_dir / "annotations"), "--split", "validation", "--out", str(out)]
        + (list(extra) or ["--distractors", "random", "--num-options", "3"])
    )
    return out


def eval_rows(module) -> dict[str, tuple]:
    """{key: (options, frames)} of every real row the module's test loader gives."""
    module.setup("test")
    rows = {}
    for batch in module.test_dataloader():
        for row, (key, meta) in enumerate(zip(batch.keys, batch.meta)):
            if not batch.is_padding[row]:
                rows[key] = (meta["options"], batch.frames[row].clone())
    return rows


def test_a_question_file_over_a_store_keeps_the_frames_and_asks_its_questions(
    demo_dir, demo_shards, tmp_path, monkeypatch
):
    import av
    import decord

    def no_decoding(*args, **kwargs):
        raise AssertionError("a question file over a store decoded video")

    k3 = variant(demo_dir, tmp_path / "k3.jsonl")
    monkeypatch.setattr(decord, "VideoReader", no_decoding)
    monkeypatch.setattr(av, "open", no_decoding)
    stored = eval_rows(datamodule(demo_dir, demo_shards))
    asked = eval_rows(datamodule(demo_dir, demo_shards, questions=[str(k3)]))
    questions = {q["narration_id"]: q for q in read_jsonl(k3)}
    assert set(asked) == set(stored) == set(questions)
    for key, (options, frames) in asked.items():
        assert options == questions[key]["options"] and len(options) == 3
        assert stored[key][1].equal(frames) and len(stored[key][0]) == 5
    # a part of the segments: only those are asked
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(q) + "\n" for q in list(questions.values())[:3]))
    assert set(eval_rows(datamodule(demo_dir, demo_shards, questions=[str(part)]))) == set(list(questions)[:3])


def test_questions_about_other_clips_or_none_in_the_store_are_refused(demo_dir, demo_shards, tmp_path):
    store = str(demo_shards["validation_mqa"])
    records = read_jsonl(variant(demo_dir, tmp_path / "k3.jsonl"))
    check_clips({"k3.jsonl": records}, [store])
    moved = [dict(q) for q in records]
    moved[2]["clip_start_sec"] += 1.0
    with pytest.raises(ValueError, match=r"k3.jsonl: 1 of its 8 questions ask about another clip .* clip_start_sec"):
        check_clips({"k3.jsonl": moved}, [store])
    with pytest.raises(ValueError, match=r"k3.jsonl: 1 questions have no clip in the frame store .*\['NOPE_1'\]"):
        check_clips({"k3.jsonl": records + [records[0] | {"narration_id": "NOPE_1"}]}, [store])
    with pytest.raises(ValueError, match=r"ask about another clip"):  # checked before any step
        datamodule(demo_dir, demo_shards, questions=[str(_written(tmp_path / "moved.jsonl", moved))]).setup("test")
    # a store indexed before clip digests: its samples' JSON read for them, the same verdicts
    old = tmp_path / "old_store"
    shutil.copytree(store, old)
    index = json.loads((old / INDEX_FILE).read_text())
    (old / INDEX_FILE).write_text(
        json.dumps({n: [{k: v for k, v in e.items() if k != "clip"} for e in es] for n, es in index.items()})
    )
    check_clips({"k3.jsonl": records}, [str(old)])
    with pytest.raises(ValueError, match=r"another clip"):
        check_clips({"k3.jsonl": moved}, [str(old)])
    # an index whose clip digest was edited (the sample's clip is the question's): said so, naming the shard
    edited = tmp_path / "edited_store"
    shutil.copytree(store, edited)
    index = json.loads((edited / INDEX_FILE).read_text())
    shard, entries = next(iter(index.items()))
    entries[0]["clip"] = "0" * len(entries[0]["clip"])
    (edited / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"{shard}: index.json records another clip digest for {entries[0]['key']}"):
        check_clips({"k3.jsonl": records}, [str(edited)])


def _written(path, records):
    path.write_text("".join(json.dumps(q) + "\n" for q in records))
    return path


def test_training_over_a_store_gives_what_the_files_own_shards_give(demo_dir, demo_questions, demo_shards, tmp_path):
    """A training source {frames: store, questions: file}: batch for batch the keys, frames and prompts of the file's
    own shards (same layout, same plan); only the file's questions, in its order for sampling strategies."""
    from data_prep.extract_frames import extract
    from llavaction.data.options import TaskSource
    from tests.helpers import extract_config

    k3 = tmp_path / "train_k3.jsonl"
    build_mqa(
        [
            "--annotations",
            str(demo_dir / "annotations"),
            "--split",
            "train",
            "--distractors",
            "random",
            "--num-options",
            "3",
            "--out",
            str(k3),
        ]
    )
    own = tmp_path / "own"
    extract(read_jsonl(k3), own, extract_config(demo_dir / "videos"))
    store = str(demo_shards["train_mqa"])

    def batches(source):
        module = datamodule(demo_dir, demo_shards, train=[source], samples_per_epoch=None)
        module.setup("fit")
        return list(module.train_dataloader())

    ours = batches(TaskSource(frames=store, task="mqa", weight="size", questions=str(k3)))
    theirs = batches(TaskSource(str(own), "mqa", "size"))
    assert len(ours) == len(theirs) > 1
    for a, b in zip(ours, theirs):
        assert a.keys == b.keys and a.input_ids.equal(b.input_ids) and a.frames.equal(b.frames)
    # a sampling strategy counts in the question file's order
    first = batches(TaskSource(frames=store, task="mqa", weight="first:5", questions=str(k3)))
    assert sorted(k for b in first for k, pad in zip(b.keys, b.is_padding) if not pad) == sorted(
        q["narration_id"] for q in read_jsonl(k3)[:5]
    )
    # a question about another clip is refused before the first step
    moved = [dict(q) for q in read_jsonl(k3)]
    moved[0]["clip_stop_sec"] += 0.5
    with pytest.raises(ValueError, match="ask about another clip"):
        moved_file = str(_written(tmp_path / "moved.jsonl", moved))
        batches(TaskSource(frames=store, task="mqa", weight="size", questions=moved_file))
