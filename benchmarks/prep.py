"""Data-prep throughput, from one run.

(1) extract_frames frames/s against the bare decoder's get_batch over the same frame ids of the same videos
    (ratio; goal >= 0.8), both in one process with one decoder thread (extract_frames also encodes JPEGs in a
    second thread while the next clip decodes);
(2) build_mqa questions/s on the full EK-100 validation CSV when ../shared/data/epic-kitchens-100-annotations exists
    (else on tests/data).

    python benchmarks/prep.py [--videos N] [--size 384] [--num-frames 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import decord
from synthetic import demo_questions, epic_annotations, epic_validation_questions, frame_shards

from llavaction.data.video import clip_frame_ids


def bare_decode(records: list[dict], videos: Path, num_frames: int) -> tuple[int, float]:
    """The decoder alone: open each video once, get_batch the same sorted frame ids, nothing else."""
    start, frames = time.perf_counter(), 0
    by_video: dict[str, list[dict]] = {}
    for r in records:
        by_video.setdefault(r["video_id"], []).append(r)
    for video_id, group in by_video.items():
        reader = decord.VideoReader(str(videos / group[0]["participant_id"] / f"{video_id}.MP4"), num_threads=1)
        fps = reader.get_avg_fps()
        for r in group:
            ids = sorted(
                set(clip_frame_ids(r["clip_start_sec"], r["clip_stop_sec"], num_frames, fps, len(reader) - 1)[0])
            )
            frames += len(reader.get_batch(ids).asnumpy())
    return frames, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="synthetic videos to decode")
    parser.add_argument("--video-size", type=int, default=384, help="side of the synthetic videos")
    parser.add_argument("--size", type=int, default=384, help="side of the stored frames")
    parser.add_argument("--num-frames", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = demo_questions(
            tmp,
            "train",
            "random",
            seed=0,
            train_videos=args.videos,
            val_videos=1,
            duration=30.0,
            fps=30,
            video_size=args.video_size,
        )
        videos = tmp / "demo" / "videos"
        bare_decode(records[:4], videos, args.num_frames)  # warm the page cache for both
        frames, bare_s = bare_decode(records, videos, args.num_frames)
        start = time.perf_counter()
        frame_shards(tmp, records, args.num_frames, args.size, videos=videos)
        extract_s = time.perf_counter() - start
    print(
        f"videos: {args.videos} synthetic {args.video_size}x{args.video_size} H.264, {len(records)} segments, "
        f"{args.num_frames} frames each, stored at {args.size} px, one process"
    )
    print(f"bare decord get_batch:  {frames / bare_s:8.1f} frames/s")
    print(
        f"extract_frames:         {len(records) * args.num_frames / extract_s:8.1f} frames/s "
        f"(decode + resize + JPEG + tar)"
    )
    print(f"ratio extract/bare:     {bare_s / extract_s:8.2f}  (goal >= 0.8)")

    annotations = epic_annotations()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        epic_validation_questions(Path(tmp) / "val.jsonl", "--benchmark")
        seconds = time.perf_counter() - start
        count = sum(1 for _ in open(Path(tmp) / "val.jsonl"))
    print(
        f"build_mqa:              {count / seconds:8.1f} questions/s ({count} questions from {annotations.name}, "
        f"annotation distractors, CSV reading included)"
    )
    print(
        json.dumps(
            {"extract_over_bare": round(bare_s / extract_s, 3), "build_mqa_questions_per_s": round(count / seconds, 1)}
        )
    )


if __name__ == "__main__":
    main()
