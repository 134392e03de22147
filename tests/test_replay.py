"""Replay of LLaVA-Video-178K as the reference trains it: every turn, records told apart by (file, index), the
reference's data YAML as input, one set of frames per video."""

import json
from pathlib import Path

import pytest

from data_prep.build_replay import main as build_replay
from data_prep.extract_frames import extract
from llavaction.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llavaction.data.stages import TaskSource
from llavaction.jsonl import read_jsonl
from llavaction.prompts import PromptEncoder, PromptOptions, prompt_turns
from llavaction.tokenizer import build_tokenizer
from tests.helpers import extract_config
from tests.test_datamodule import datamodule

CONVERSATION = [
    {"from": "human", "value": "<image>\nWhat moves first?"},
    {"from": "gpt", "value": "The plate."},
    {"from": "human", "value": "And then?"},
    {"from": "gpt", "value": "The cup grows."},
    {"from": "human", "value": "Unanswered?"},
]


def test_every_assistant_turn_and_only_them_carry_labels():
    tokenizer = build_tokenizer(["The plate.", "The cup grows.", "What moves first?", "And then?"])
    record = {
        "narration_id": "v",
        "replay": True,
        "conversation": CONVERSATION,
        "clip_start_sec": 0.0,
        "clip_stop_sec": 12.0,
    }
    turns = prompt_turns(record, "qa", 8, PromptOptions())
    assert turns == [("What moves first?", "The plate."), ("And then?", "The cup grows.")]
    encoded = PromptEncoder(tokenizer).encode_turns(turns, num_visual_tokens=10)
    place = encoded.input_ids.index(IMAGE_TOKEN_INDEX)
    text = tokenizer.decode(encoded.input_ids[:place]) + "<image>" + tokenizer.decode(encoded.input_ids[place + 1 :])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nWhat moves "
        "first?<|im_end|>\n<|im_start|>assistant\nThe plate.<|im_end|>\n<|im_start|>user\nAnd then?"
        "<|im_end|>\n<|im_start|>assistant\nThe cup grows.<|im_end|>"
    )
    spans, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    spans.append(tokenizer.decode(current))
    assert spans == ["The plate.<|im_end|>", "The cup grows.<|im_end|>"]
    # the reference trainer's time sentence for replayed videos, the question's own text kept after it
    timed = prompt_turns(record, "qa", 64, PromptOptions(time_instruction=True))[0][0]
    assert timed == (
        "The video lasts for 12.00 seconds, and 64 frames are uniformly sampled from it. Please answer "
        "the following questions related to this video.\n\nWhat moves first?"
    )
    # too long: whole trailing exchanges go, never the visual tokens or the first question
    full = len(encoded.input_ids) + 9
    cut = PromptEncoder(tokenizer, max_length=full - 3, overflow="truncate").encode_turns(turns, 10)
    assert (
        cut.truncated
        and tokenizer.decode([t for t, label in zip(cut.input_ids, cut.labels) if label != IGNORE_INDEX])
        == "The plate.<|im_end|>"
    )


def write_bucket(root: Path, videos: Path) -> tuple[Path, Path]:
    """Two files of one bucket sharing ids, as LLaVA-Video-178K's caption and QA files do."""
    bucket = root / "0_30_s_demo"
    bucket.mkdir(parents=True)
    clips = ["D01/D01_101.MP4", "D02/D02_101.MP4"]
    captions = [
        {"id": f"v{i}", "video": clips[i % 2], "data_source": "0_30_s_demo", "conversations": CONVERSATION[:2]}
        for i in range(4)
    ]
    qa = [{"id": f"v{i}", "video": clips[i % 2], "conversations": CONVERSATION} for i in range(4)]
    qa.append({"id": "gone", "video": "D01/missing.MP4", "conversations": CONVERSATION[:2]})
    (bucket / "0_30_s_demo_cap_processed.json").write_text(json.dumps(captions))
    (bucket / "0_30_s_demo_oe_qa_processed.json").write_text(json.dumps(qa))
    for clip in clips:  # the reference layout: <root>/<data_source>/<video>
        (bucket / clip).parent.mkdir(parents=True, exist_ok=True)
        (bucket / clip).write_bytes((videos / clip).read_bytes())
    return bucket / "0_30_s_demo_cap_processed.json", bucket / "0_30_s_demo_oe_qa_processed.json"


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
    keys = {m["narration_id"] for b in batches for m in b["meta"]}
    assert keys and all(b["frames"].shape[1:] == (8, 32, 32, 3) for b in batches)
    labelled = {
        dm.tokenizer.decode([t for t, label in zip(ids, labels) if label >= 0])
        for b in batches
        for ids, labels in zip(b["input_ids"].tolist(), b["labels"].tolist())
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


@pytest.mark.parametrize("line, message", [({"narration_id": "x"}, "needs narration_id and an answer")])
def test_descriptions_may_be_conversations(tmp_path, line, message):
    from llavaction.data.stages import Descriptions

    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"narration_id": "a", "conversation": CONVERSATION[:4]})
        + "\n"
        + json.dumps({"narration_id": "b", "answer": "I rinse."})
        + "\n"
    )
    found = Descriptions(path).by_id
    assert found["a"] == {"conversation": CONVERSATION[:4]} and found["b"]["qa_question"] is None
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=message):
        Descriptions(path)
