"""Replay of LLaVA-Video-178K as the reference trains it: the data YAML, sampling strategies, shared frames, faults."""

import json

import pytest

from data_prep.build_replay import main as build_replay
from data_prep.extract_frames import extract
from llavaction.data.options import TaskSource
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import datamodule, extract_config, one_line_exit, write_bucket


def test_build_replay_with_every_record_skipped_writes_its_skip_list(tmp_path, capsys):
    from data_prep.build_replay import main as build_replay

    records = [{"id": "a", "video": "gone.mp4", "conversations": [{"from": "human", "value": "?"}]}]
    (tmp_path / "c.json").write_text(json.dumps(records))
    out = tmp_path / "replay.jsonl"
    args = ["--conversations", str(tmp_path / "c.json"), "--videos", str(tmp_path), "--out", str(out)]
    line = one_line_exit(capsys, lambda: build_replay(args))
    assert "all 1 were skipped" in line and read_jsonl(tmp_path / "replay.skipped.jsonl")[0]["id"] == "a"
    assert not out.exists()


CONVERSATION = [
    {"from": "human", "value": "<image>\nWhat moves first?"},
    {"from": "gpt", "value": "The plate."},
    {"from": "human", "value": "And then?"},
    {"from": "gpt", "value": "The cup grows."},
    {"from": "human", "value": "Unanswered?"},
]


def test_data_yaml_sampling_and_shared_frames(demo_dir, tmp_path):
    captions, qa = write_bucket(tmp_path / "178k", demo_dir / "videos")
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(f"""datasets:
  - json_path: {captions}
    sampling_strategy: first:50%
  - json_path: {qa}
    sampling_strategy: random:60%
  - json_path: /elsewhere/EK100_inst_train/temporal_detection.jsonl
    sampling_strategy: all
""")
    out = tmp_path / "replay.jsonl"
    args = ["--data-yaml", str(data_yaml), "--videos", str(tmp_path / "178k"), "--seed", "3", "--out", str(out)]
    assert build_replay(args) == 0
    records = read_jsonl(out)
    again = tmp_path / "again.jsonl"
    build_replay(args[:-1] + [str(again)])
    assert read_jsonl(again) == records  # seeded
    sources = [s for r in records for s in r["sources"]]
    assert [s for s in sources if "cap" in s] == [f"{captions}:0", f"{captions}:1"]  # first 50% of 4
    skipped = read_jsonl(tmp_path / "replay.skipped.jsonl")
    picked = [s for s in sources if "oe_qa" in s] + [s["record"] for s in skipped]
    assert len(picked) == 3 and len(set(picked)) == 3  # ceil(60% of 5), told apart by index though ids repeat
    assert all(s == {"record": f"{qa}:4", "id": "gone", "reason": s["reason"]} for s in skipped)
    assert all("video not found: D01/missing.MP4" in s["reason"] for s in skipped)
    assert len(records) == 2 and all(r["replay"] and r["task"] == "qa" for r in records)  # one record per video
    assert sum(len(r["conversations"]) for r in records) == len(sources)

    config = extract_config(tmp_path / "178k")
    extract(records, tmp_path / "shards", config)
    counts = json.loads((tmp_path / "shards" / "conversations.json").read_text())
    assert sum(counts.values()) == sum(len(r["conversations"]) for r in records)
    dm = datamodule(
        demo_dir,
        {"train_mqa": tmp_path / "shards", "validation_mqa": tmp_path / "shards"},
        train=[TaskSource(str(tmp_path / "shards"), "qa", weight="size")],
        num_frames=8,
        samples_per_epoch=None,
        batch_size=2,
        shuffle_buffer=1,
    )
    assert len(dm.source_items()[0]) == sum(counts.values())  # weight size: each conversation once an epoch
    batches = list(dm.train_dataloader())
    keys = {m["narration_id"] for b in batches for m in b.meta}
    assert keys and all(b.frames.shape[1:] == (8, 32, 32, 3) for b in batches)
    labelled = {
        dm.tokenizer.decode([t for t, label in zip(ids, labels) if label >= 0])
        for b in batches
        for ids, labels in zip(b.input_ids.tolist(), b.labels.tolist())
    }
    assert labelled <= {"The plate.<|im_end|>", "The plate.<|im_end|>The cup grows.<|im_end|>"}


@pytest.mark.parametrize("strategy", ["sometimes:3", "first:-1", "end:-1", "random:101%", "first:-2%", "end:x"])
def test_bad_sampling_strategies_name_the_yaml_line(tmp_path, capsys, strategy):
    (tmp_path / "bad.yaml").write_text(
        f"datasets:\n  - json_path: a.json\n  - json_path: a.json\n    sampling_strategy: {strategy}\n"
    )
    (tmp_path / "a.json").write_text("[]")
    out = tmp_path / "o.jsonl"
    assert build_replay(["--data-yaml", str(tmp_path / "bad.yaml"), "--videos", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"bad.yaml:4: sampling strategy '{strategy}'" in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_inputs(tmp_path, capsys):
    assert (
        build_replay(
            [
                "--conversations",
                str(tmp_path / "none.json"),
                "--videos",
                str(tmp_path),
                "--out",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 2
    )
    assert "none.json: no such conversation file" in capsys.readouterr().err
