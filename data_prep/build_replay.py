"""LLaVA-style video instruction data -> question records for extract_frames, replayed during EK-100 training.

Input: a JSON list of {"id", "video": path relative to --videos, "conversations": [{"from": "human", "value":
"<image>\\nQ"}, {"from": "gpt", "value": "A"}, ...]}. Each entry becomes one `qa` record over its whole video (its
first human/gpt exchange). Entries that cannot be used are skipped and listed with the reason in OUT.skipped.jsonl.

    python -m data_prep.build_replay --conversations llava_video_subset.json --videos VIDEO_ROOT --out replay.jsonl
    python -m data_prep.extract_frames --questions replay.jsonl --videos VIDEO_ROOT --out shards/replay ...
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tqdm import tqdm

from llavaction.constants import IMAGE_PLACEHOLDER
from llavaction.jsonl import write_jsonl


def safe_key(text: str) -> str:
    """A WebDataset-safe sample key: no dots or slashes."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def video_duration(path: Path) -> float:
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    return len(reader) / reader.get_avg_fps()


def replay_record(entry: dict, videos: Path) -> dict:
    """One `qa` record over the whole video; ValueError names what is wrong."""
    for field in ("id", "video", "conversations"):
        if field not in entry:
            raise ValueError(f"missing {field!r}")
    turns = entry["conversations"]
    human = next((t["value"] for t in turns if t.get("from") == "human"), None)
    answer = next((t["value"] for t in turns if t.get("from") == "gpt"), None)
    if human is None or answer is None:
        raise ValueError("no human/gpt exchange")
    path = videos / entry["video"]
    if not path.is_file():
        raise ValueError(f"video not found: {path}")
    try:
        duration = video_duration(path)
    except Exception as err:  # decord raises its own error types on unreadable files
        raise ValueError(f"cannot read {path}: {err}") from None
    key = safe_key(str(entry["id"]))
    return {
        "task": "qa",
        "narration_id": key,
        "video_id": safe_key(entry["video"]),
        "participant_id": "replay",
        "video_path": entry["video"],
        "start_sec": 0.0,
        "stop_sec": round(duration, 3),
        "clip_start_sec": 0.0,
        "clip_stop_sec": round(duration, 3),
        "qa_question": human.replace(IMAGE_PLACEHOLDER, "").strip(),
        "qa_answer": answer.strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=Path, required=True, help="LLaVA-style JSON list")
    parser.add_argument("--videos", type=Path, required=True, help="root the entries' video paths are relative to")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    records, skipped, seen = [], [], set()
    for index, entry in enumerate(tqdm(json.loads(args.conversations.read_text()), desc="replay", unit="entry")):
        try:
            record = replay_record(entry, args.videos)
            if record["narration_id"] in seen:
                raise ValueError(f"duplicated id {entry['id']!r}")
        except ValueError as err:
            skipped.append({"index": index, "id": entry.get("id"), "reason": str(err)})
            print(f"skipped entry {index} ({entry.get('id')}): {err}", file=sys.stderr)
            continue
        seen.add(record["narration_id"])
        records.append(record)
    write_jsonl(args.out, records)
    write_jsonl(args.out.with_suffix(".skipped.jsonl"), skipped)
    print(f"{len(records)} replay records -> {args.out}; {len(skipped)} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
