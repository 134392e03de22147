"""LLaVA-Video-178K (or any LLaVA-style video instruction data) -> replay records for extract_frames, trained beside the
EK-100 tasks as the reference does.

    python -m data_prep.build_replay --data-yaml avion_tim_top5_gpt4o_detection_direct_178K_100percent.yaml \
        --videos LLaVA-Video-178K --seed 0 --out replay.jsonl
    python -m data_prep.build_replay --conversations 0_30_s_youtube_v0_1/0_30_s_youtube_oe_v0_1_qa_processed.json \
        --videos LLaVA-Video-178K --out replay.jsonl
    python -m data_prep.extract_frames --questions replay.jsonl --videos LLaVA-Video-178K --num-frames 64 ...

Input: the reference's data YAML (`datasets:` entries of `json_path` and `sampling_strategy`: all, first:N, end:N or
random:N, N a count or a percentage; entries whose file is not a video instruction file, e.g. the EK-100 ones, are
left out with a note), or JSON / JSONL files given with --conversations (all their records). A record is {"id",
"video", "conversations": [{"from": "human" | "gpt", "value"}, ...], "data_source"?}; every turn is kept. Records are
told apart by (file, index), never by id (the caption, open-ended and multiple-choice files of a bucket share ids).
Videos are found as the reference trainer finds them: ROOT/<data_source>/<video>, then ROOT/<video>, then next to the
JSON file. All records of one video become one record holding their conversations, so extract_frames stores its frames
once. A record whose video is missing or unreadable is a counted skip, listed in OUT.skipped.jsonl. As a task of an
array (--num-tasks, --task-index, or a SLURM job array) it writes its share of the videos to
OUT.parts/part-IIII-of-NNNN.jsonl; data_prep.merge_shards --out OUT completes OUT.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from data_prep.job_array import ArrayJob
from llavaction.data.sampling import SamplingStrategy
from llavaction.data.video import VideoError, video_duration
from llavaction.utils.checks import check_count
from llavaction.utils.files import check_apart, exclusive_output, safe_name
from llavaction.utils.jsonl import read_jsonl, write_json, write_jsonl
from llavaction.utils.options import main_of


def read_records(path: Path) -> list[dict]:
    """The records of a JSON list or a JSONL file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such conversation file")
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records")
    return records


def data_yaml_entries(path: Path) -> list[tuple[Path, SamplingStrategy]]:
    """(json_path, sampling strategy) of each `datasets:` entry of a data YAML; a bad entry or strategy is an error
    naming the YAML's line."""
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    entries = None
    if isinstance(root, yaml.MappingNode):
        entries = next((value for key, value in root.value if key.value == "datasets"), None)
    if not isinstance(entries, yaml.SequenceNode):
        raise ValueError(f"{path}: expected `datasets:` with a list of json_path entries")
    out = []
    for entry in entries.value:
        line = entry.start_mark.line + 1
        fields = {key.value: value for key, value in entry.value} if isinstance(entry, yaml.MappingNode) else {}
        if "json_path" not in fields:
            raise ValueError(f"{path}:{line}: a datasets entry without json_path")
        strategy = fields.get("sampling_strategy")
        try:
            parsed = SamplingStrategy.parse(strategy.value if strategy is not None else "all")
        except ValueError as err:
            raise ValueError(f"{path}:{strategy.start_mark.line + 1}: {err}") from None
        out.append((Path(fields["json_path"].value), parsed))
    return out


def find_video(record: dict, videos: Path, json_path: Path) -> Path | None:
    name = record["video"]
    candidates = [videos / record["data_source"] / name] if record.get("data_source") else []
    candidates += [videos / name, json_path.parent / name]
    return next((c for c in candidates if c.is_file()), None)


def video_key(record) -> str:
    """What names a record's video before it is looked for: its video path, normalised (a bucket's caption and QA
    files name the same video with and without data_source, so that is left out)."""
    return os.path.normpath(str(record.get("video") or "")) if isinstance(record, dict) else ""


def build(
    entries: list[tuple[Path, SamplingStrategy]], videos: Path, seed: int, task: ArrayJob | None = None
) -> tuple[list[dict], list[dict]]:
    """Replay records (one per video, holding its conversations in file order) and the skipped records. As an array
    task, only the records of its contiguous share of the videos (in order of first appearance; each video's
    duration is probed by one task)."""
    selected = []
    for file_number, (path, strategy) in enumerate(entries):
        records = read_records(path)
        rng = random.Random(f"{seed}:{file_number}:{path.name}")
        selected += [(path, index, records[index]) for index in strategy.select(len(records), rng)]
    if task is not None:
        keys = list(dict.fromkeys(video_key(record) for _, _, record in selected))
        owned = set(keys[i] for i in task.share([1.0] * len(keys)))
        selected = [item for item in selected if video_key(item[2]) in owned]
    by_video: dict[Path, dict] = {}
    skipped = []
    durations: dict[Path, float] = {}
    for path, index, record in tqdm(selected, desc="records", unit="record", mininterval=1):
        where = f"{path}:{index}"
        try:
            if not isinstance(record, dict) or not all(k in record for k in ("video", "conversations")):
                raise ValueError("needs video and conversations")
            video = find_video(record, videos, path)
            if video is None:
                raise ValueError(f"video not found: {record['video']} (under {videos} or {path.parent})")
            if video not in durations:
                durations[video] = video_duration(video)
        except (ValueError, VideoError) as err:
            skipped.append(
                {"record": where, "id": record.get("id") if isinstance(record, dict) else None, "reason": str(err)}
            )
            continue
        merged = by_video.setdefault(video, replay_record(video, videos, durations[video]))
        merged["conversations"].append(record["conversations"])
        merged["sources"].append(where)
    return list(by_video.values()), skipped


def replay_record(video: Path, videos: Path, duration: float) -> dict:
    """One `qa` record over a whole video; its conversations are added by build()."""
    try:
        relative = str(video.relative_to(videos))
    except ValueError:
        relative = str(video)
    key = safe_name(relative)  # a WebDataset key: no dots, no slashes
    return {
        "task": "qa",
        "replay": True,
        "narration_id": key,
        "video_id": key,
        "participant_id": "replay",
        "video_path": relative,
        "start_sec": 0.0,
        "stop_sec": round(duration, 3),
        "clip_start_sec": 0.0,
        "clip_stop_sec": round(duration, 3),
        "conversations": [],
        "sources": [],
    }


def run(args: ReplayOptions) -> int:
    if args.data_yaml:
        entries = data_yaml_entries(args.data_yaml)
        usable = []
        for path, strategy in entries:
            if not path.is_file() and (args.data_yaml.parent / path).is_file():
                path = args.data_yaml.parent / path
            if path.suffix == ".json":
                usable.append((path, strategy))
            else:  # the reference's EK-100 task files (.jsonl): built here by build_mqa, not replayed
                print(f"note: {path} left out (not a video instruction .json file)", file=sys.stderr)
    else:
        usable = [(path, SamplingStrategy("all")) for path in args.conversations]
    task = ArrayJob.from_args(args.num_tasks, args.task_index)
    out = output_of(args.out, task)
    written = [out, out.with_suffix(".skipped.jsonl")] + ([out.with_suffix(".json")] if task is not None else [])
    inputs = {"--data_yaml": args.data_yaml, "--conversations": [path for path, _ in usable], "--videos": args.videos}
    check_apart({"--out": written}, inputs)
    records, skipped = build(usable, args.videos, args.seed, task)
    write_jsonl(out.with_suffix(".skipped.jsonl"), skipped)  # first: an error below points to it
    if task is not None:  # a part: its records, even none, and a manifest the merge checks
        write_jsonl(out, records)
        manifest = {
            "files": [str(path) for path, _ in usable],
            "settings": {"seed": args.seed, "videos": str(args.videos), "strategies": [str(s) for _, s in usable]},
            "task": {"index": task.index, "count": task.count},
        }
        write_json(out.with_suffix(".json"), manifest)
        print(
            f"{len(records)} videos -> {out}; when all {task.count} tasks have finished: python -m "
            f"data_prep.merge_shards --out {args.out}"
        )
        return 0
    if not records:
        raise ValueError(
            f"no replay record: all {len(skipped)} were skipped (reasons in {out.with_suffix('.skipped.jsonl')})"
        )
    write_jsonl(out, records)
    conversations = sum(len(r["conversations"]) for r in records)
    print(
        f"{conversations} conversations of {len(records)} videos -> {out}; {len(skipped)} records skipped "
        f"(see {out.with_suffix('.skipped.jsonl')})",
        file=sys.stderr,
    )
    return 0


def output_of(out: Path, task: ArrayJob | None) -> Path:
    """Where a run writes its records: --out, or as an array task its part, OUT.parts/part-IIII-of-NNNN.jsonl."""
    return out if task is None else out.with_name(out.name + ".parts") / f"{task.part_name}.jsonl"


@dataclass(frozen=True)
class ReplayOptions:
    """Replayed general video data (the reference's LLaVA-Video-178K entries) -> question records, one per video.

    Args:
        videos: the root the records' video paths are relative to.
        out: the records (JSON lines) for data_prep.extract_frames.
        data_yaml: the reference's data YAML (datasets: json_path, sampling_strategy).
        conversations: LLaVA-style JSON or JSONL files (instead of data_yaml).
        seed: seed of random:N sampling.
        num_tasks: array tasks sharing out (default: SLURM_ARRAY_TASK_COUNT when set).
        task_index: this task, from 0 (default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN).
    """

    videos: Path
    out: Path
    data_yaml: Path | None = None
    conversations: list[Path] | None = None
    seed: int = 0
    num_tasks: int | None = None
    task_index: int | None = None

    def __post_init__(self):
        if (self.data_yaml is None) == (not self.conversations):
            raise ValueError("give one of --data_yaml and --conversations")
        if self.num_tasks is not None:
            check_count("num_tasks", self.num_tasks, minimum=1)
        if self.task_index is not None:
            check_count("task_index", self.task_index, minimum=0)


def locked(options: ReplayOptions) -> int:
    task = ArrayJob.from_args(options.num_tasks, options.task_index)
    with exclusive_output(output_of(options.out, task)):  # one writer of these records at a time
        return run(options)


main = main_of(ReplayOptions, locked, "python -m data_prep.build_replay", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
