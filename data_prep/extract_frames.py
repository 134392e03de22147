"""Videos -> WebDataset shards of pre-decoded frames, one sample per question (or segment).

A sample is `{narration_id}.json` (the question fields plus frame ids, fps and frame times) and one JPEG per frame,
`{narration_id}.000.jpg` ... Samples are ordered by (video, start, narration_id) and cut into shards of --shard-size, so
shard contents do not depend on --workers. Each shard is written under a temporary name and renamed when complete;
`_progress.json` records the finished shards so that --resume continues where a killed run stopped; `index.json`
lists every shard's samples (llavaction.data.shards) for epoch plans and question checks.

    python -m data_prep.extract_frames --questions val_mqa.jsonl --videos EPIC-KITCHENS --layout raw \
        --num-frames 16 --size 384 --shard-size 256 --workers 8 --out shards/val_mqa --resume
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from data_prep.decoding import ExtractConfig, decode_video, video_jobs
from data_prep.job_array import ArrayJob
from data_prep.shard_writer import (
    INDEX_PARTS_FILE,
    REPORT_FILE,
    ShardWriter,
    load_progress,
    questions_digest,
    shard_index,
)
from data_prep.stores import (
    addition_name,
    check_extraction_folder,
    claim_array_root,
    clips_to_add,
    list_addition,
)
from llavaction.benchmark.card import copy_card_into, read_card
from llavaction.data.shards import CONVERSATIONS_FILE, INDEX_FILE, SIZES_FILE, index_entry
from llavaction.ek100.annotations import EpicAnnotations
from llavaction.utils.checks import check_count
from llavaction.utils.files import check_apart, exclusive_output, remove_stale_temporaries
from llavaction.utils.jsonl import read_jsonl, write_json
from llavaction.utils.options import main_of


def sort_key(record: dict) -> tuple:
    return record["video_id"], record["clip_start_sec"], record["narration_id"]


def segment_records(annotations: Path, split: str) -> list[dict]:
    """Plain segments (no question) when extracting straight from the annotation CSVs."""
    ann = EpicAnnotations.load(annotations, split)
    return [
        {
            "task": "segment",
            "narration_id": s.narration_id,
            "video_id": s.video_id,
            "participant_id": s.participant_id,
            "start_sec": s.start_sec,
            "stop_sec": s.stop_sec,
            "clip_start_sec": s.start_sec,
            "clip_stop_sec": s.stop_sec,
            "narration": s.narration,
            "verb_class": s.verb_class,
            "noun_class": s.noun_class,
            "fps": ann.fps(s.video_id),
        }
        for s in ann.segments
    ]


def check_records(records: list[dict]) -> None:
    seen = set()
    for line, record in enumerate(records, start=1):
        for name in ("narration_id", "video_id", "participant_id", "clip_start_sec", "clip_stop_sec"):
            if name not in record:
                raise ValueError(f"question {line} ({record.get('narration_id', '?')}): missing field {name!r}")
        if "." in record["narration_id"]:
            raise ValueError(f"{record['narration_id']}: a key may not contain '.' (WebDataset splits keys there)")
        if record["narration_id"] in seen:
            raise ValueError(f"{record['narration_id']}: duplicated narration_id")
        if record["clip_stop_sec"] < record["clip_start_sec"]:
            raise ValueError(f"{record['narration_id']}: clip stops before it starts")
        seen.add(record["narration_id"])


def extract(
    records: list[dict],
    out: Path,
    config: ExtractConfig,
    workers: int = 1,
    resume: bool = False,
    task: ArrayJob | None = None,
) -> dict:
    """Write the shards and return the report (written, skipped with reasons, clamped); the output folder is held by
    this process while it writes (llavaction.utils.files.exclusive_output). As an array task, its share of the videos
    (task_videos) goes into its own part folder, out/part-IIII-of-NNNN, and data_prep.merge_shards completes the
    set."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: an existing file; --out is the folder of the shards")
    folder = out
    if task is not None:
        claim_array_root(out)
        folder = out / task.part_name
    with exclusive_output(folder):
        check_extraction_folder(folder, resume)
        return _extract(records, folder, config, workers, resume, task)


def sample_cost(record: dict, num_frames: int) -> float:
    """Frames decoded for a sample: the frames its clip spans (decoding runs through them) or those it stores."""
    seconds = max(0.0, record["clip_stop_sec"] - record["clip_start_sec"])
    return max(float(num_frames), seconds * float(record.get("fps") or 30.0))


def task_videos(records: list[dict], task: ArrayJob, num_frames: int) -> list[dict]:
    """A task's records: a contiguous run of the videos in extraction order (each video whole, opened by one task),
    balanced by the frames they decode."""
    videos = [list(group) for _, group in itertools.groupby(records, key=lambda r: r["video_id"])]
    share = task.share([sum(sample_cost(r, num_frames) for r in video) for video in videos])
    return [record for video in videos[share.start : share.stop] for record in video]


def _extract(
    records: list[dict], out: Path, config: ExtractConfig, workers: int, resume: bool, task: ArrayJob | None
) -> dict:
    check_records(records)
    entries = {record["narration_id"]: index_entry(record, line) for line, record in enumerate(records)}
    records = sorted(records, key=sort_key)
    digest = questions_digest(records)  # of the whole question file: every part of an array records the same
    if task is not None:
        records = task_videos(records, task, config.num_frames)
    progress = load_progress(out, config, resume, digest, task)
    if progress["next_position"] >= len(records) and (out / SIZES_FILE).exists():
        # --resume of a finished run: nothing to do, and its listing (with any additions since) left as it is
        return json.loads((out / REPORT_FILE).read_text())
    remove_stale_temporaries(out)  # a killed run's, safe to remove while this process holds the folder
    # the finished shards' entries only, on whole lines, before this run appends its own
    kept = shard_index(out, progress["shards"])
    (out / INDEX_PARTS_FILE).write_text(
        "".join(json.dumps({"shard": n, "samples": s}, ensure_ascii=False) + "\n" for n, s in kept.items())
    )
    # A killed run is rolled back to its last complete shard: the samples after it are decoded again (the position
    # may fall inside a video; its remaining samples form the first job).
    done = progress["next_position"]
    todo = records[done:]
    writer = ShardWriter(out, config, progress, entries)
    jobs = video_jobs(todo, config, decoder_threads=1)
    position = done
    context = multiprocessing.get_context("spawn")
    with (
        tqdm(total=len(records), initial=done, desc="extract", unit="sample", mininterval=1) as bar,
        context.Pool(workers, initializer=ignore_interrupts) if workers > 1 else _Inline() as pool,
    ):
        for results in pool.imap(decode_video, jobs):
            for result in results:
                writer.add(position, result)
                position += 1
            bar.update(len(results))
    writer.flush()
    sizes = progress["shards"]
    write_json(out / INDEX_FILE, shard_index(out, sizes))
    write_json(out / SIZES_FILE, sizes)
    if any(r.get("conversations") for r in records):  # replayed videos: several conversations a sample
        write_json(out / CONVERSATIONS_FILE, progress.get("conversations", {}))
    report = {
        "samples": len(records),
        "written": sum(sizes.values()),
        "shards": len(sizes),
        "skipped": progress["skipped"],
        "clamped": progress["clamped"],
        "config": config.__dict__,
        "questions_digest": digest,
        "task": progress.get("task"),
    }
    write_json(out / REPORT_FILE, report)
    return report


def ignore_interrupts() -> None:
    """A decoding worker leaves Ctrl-C to the command (which stops the pool and says so in one line)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Inline:
    """A stand-in for a worker pool that runs in this process (workers <= 1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, items):
        return map(fn, items)


@dataclass(frozen=True)
class ExtractOptions:
    """Videos -> WebDataset shards of pre-decoded frames, one sample per question (or segment).

    Args:
        out: the shard set's folder.
        videos: the root of the videos.
        questions: a question file of data_prep.build_mqa (or build_replay).
        annotations: the EPIC annotation folder (with split): plain segments instead of questions.
        split: with annotations, the split.
        layout: 'raw' (P01/P01_01.MP4), 'chunked' (AVION's P01/P01_01.MP4/0.MP4, 15.MP4, ...) or 'frames' (rgb_frames).
        chunk_seconds: the chunk length of the chunked layout.
        num_frames: frames stored per sample (the midpoints of equal parts of the clip).
        size: frames are stored as SIZE x SIZE pixels.
        resize: 'squash' (the aspect ratio not kept, as the paper) or 'crop' (short side, then the centre).
        quality: JPEG quality, 1-100.
        shard_size: samples per shard.
        workers: decoding processes.
        resume: continue an interrupted run in out (refused with other questions or settings).
        num_tasks: array tasks sharing out (default: SLURM_ARRAY_TASK_COUNT when set).
        task_index: this task, from 0 (default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN).
        add: out is an existing frame store: extract only the clips of the questions it lacks, with its clip rule,
            into out/add-<digest>/ and list them in it (data_prep/stores.py).
    """

    out: Path
    videos: Path
    questions: Path | None = None
    annotations: Path | None = None
    split: Literal["train", "validation"] | None = None
    layout: Literal["raw", "chunked", "frames"] = "raw"
    chunk_seconds: float = 15.0
    num_frames: int = 16
    size: int = 384
    resize: Literal["squash", "crop"] = "squash"
    quality: int = 90
    shard_size: int = 256
    workers: int = min(8, os.cpu_count() or 1)
    resume: bool = False
    num_tasks: int | None = None
    task_index: int | None = None
    add: bool = False

    def __post_init__(self):
        if (self.questions is None) == (self.annotations is None):
            raise ValueError("give one of --questions and --annotations (with --split)")
        if self.annotations is not None and self.split is None:
            raise ValueError("--annotations needs --split")
        for name in ("num_frames", "size", "shard_size", "workers"):
            check_count(name, getattr(self, name), minimum=1)
        if self.num_tasks is not None:
            check_count("num_tasks", self.num_tasks, minimum=1)
        if self.task_index is not None:
            check_count("task_index", self.task_index, minimum=0)
        if isinstance(self.quality, bool) or not 1 <= self.quality <= 100:
            raise ValueError(f"--quality must be between 1 and 100, got {self.quality}")
        if not self.chunk_seconds > 0 or self.chunk_seconds == float("inf"):
            raise ValueError(f"--chunk_seconds must be a positive number of seconds, got {self.chunk_seconds}")


def run(args: ExtractOptions) -> int:
    inputs = {"--questions": args.questions, "--annotations": args.annotations, "--videos": args.videos}
    check_apart({"--out": args.out}, inputs, folders=True)
    card = read_card(args.questions) if args.questions else None  # a file changed since its build is refused
    records = read_jsonl(args.questions) if args.questions else segment_records(args.annotations, args.split)
    if not records:
        raise ValueError(f"{args.questions}: holds no question")
    config = ExtractConfig(
        videos=str(args.videos),
        layout=args.layout,
        num_frames=args.num_frames,
        size=args.size,
        resize=args.resize,
        quality=args.quality,
        chunk_seconds=args.chunk_seconds,
        shard_size=args.shard_size,
    )
    task = ArrayJob.from_args(args.num_tasks, args.task_index)
    if args.add:
        return add_clips(records, args, config, task)
    report = extract(records, args.out, config, workers=args.workers, resume=args.resume, task=task)
    if card is not None and (task is None or task.index == 0):  # the shard set says which build it holds
        copy_card_into(args.out, card)
    folder = args.out if task is None else args.out / task.part_name
    print_report(report, folder)
    if task is not None:
        print(f"when all {task.count} tasks have finished: python -m data_prep.merge_shards --out {args.out}")
    return 0


def add_clips(records: list[dict], args: ExtractOptions, config: ExtractConfig, task: ArrayJob | None) -> int:
    """--add: the clips the store lacks, extracted into it (data_prep.stores), the store held from reading its clips
    to listing the addition, so a second writer is refused at once; by an array of tasks, each extracts its share
    into the addition's part folder and merge_shards of the addition lists it in the store (checking, under the
    store's lock, that no other run listed those clips meanwhile)."""
    if task is None:
        with exclusive_output(args.out):
            return _add_clips(records, args, config, task)
    return _add_clips(records, args, config, task)


def _add_clips(records: list[dict], args: ExtractOptions, config: ExtractConfig, task: ArrayJob | None) -> int:
    new = clips_to_add(records, args.out, config)
    if not new:
        print(f"{args.out} holds the clips of every question of {args.questions}: nothing to add", file=sys.stderr)
        return 0
    name = addition_name(new)
    report = extract(new, args.out / name, config, workers=args.workers, resume=args.resume, task=task)
    print_report(report, args.out / name if task is None else args.out / name / task.part_name)
    if task is not None:
        print(f"when all {task.count} tasks have finished: python -m data_prep.merge_shards --out {args.out / name}")
        return 0
    list_addition(args.out, name)
    print(f"{report['written']} clips added to {args.out} ({len(records) - len(new)} it held already)", file=sys.stderr)
    return 0


def print_report(report: dict, folder: Path) -> None:
    """The skips and clamps of an extraction, and its counts; no sample written is an error."""
    for item in report["skipped"]:
        print(f"skipped {item['narration_id']}: {item['reason']}", file=sys.stderr)
    for key in report["clamped"]:
        print(f"clamped {key}: the clip reaches past the video's last frame; its frames end there", file=sys.stderr)
    print(
        f"{report['written']} samples in {report['shards']} shards -> {folder}; "
        f"{len(report['skipped'])} skipped, {len(report['clamped'])} clamped (see {folder / REPORT_FILE})",
        file=sys.stderr,
    )
    if report["samples"] and not report["written"]:
        raise ValueError(
            f"{folder}: no sample written, every one of the {report['samples']} was skipped "
            f"(reasons in {folder / REPORT_FILE})"
        )


main = main_of(ExtractOptions, run, "python -m data_prep.extract_frames", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
