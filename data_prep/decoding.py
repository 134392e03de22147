"""One video's clips decoded into samples: the frames of each question's clip (the clip rule of llavaction.data.video),
resized and encoded as JPEG, with the frame metadata a sample carries; a video that cannot be decoded skips its
samples with the reason."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import simplejpeg

from llavaction.data.shards import make_sample
from llavaction.data.video import VideoError, open_video


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides the content of the shards (a resumed run must use the same)."""

    videos: str
    layout: str
    num_frames: int
    size: int
    resize: str
    quality: int
    chunk_seconds: float
    shard_size: int


@dataclass(frozen=True)
class VideoJob:
    video_id: str
    participant_id: str
    records: list[dict]
    config: ExtractConfig
    decoder_threads: int


@dataclass(frozen=True)
class SampleResult:
    key: str
    sample: dict | None  # the webdataset sample, or None when skipped
    reason: str | None = None  # why it was skipped
    clamped: bool = False
    conversations: int = 1  # a replayed video's sample carries several


def decode_video(job: VideoJob) -> list[SampleResult]:
    """Decode every sample of one video (opened once); a failure skips the samples it touches, with the reason.
    JPEG encoding of one clip overlaps the decoding of the next (both release the GIL); at most two clips in memory."""
    cfg = job.config
    try:
        video = open_video(
            cfg.layout,
            Path(cfg.videos),
            job.participant_id,
            job.video_id,
            size=cfg.size,
            mode=cfg.resize,
            chunk_seconds=cfg.chunk_seconds,
            fps=job.records[0].get("fps"),
            threads=job.decoder_threads,
            path=job.records[0].get("video_path"),
        )
    except VideoError as err:
        return [SampleResult(r["narration_id"], None, str(err)) for r in job.records]
    results: list[SampleResult] = []
    pending = None  # the previous clip, whose JPEGs encode in a thread while the next clip decodes
    with ThreadPoolExecutor(max_workers=1) as encoder:
        for record in job.records:
            key = record["narration_id"]
            try:
                clip = video.clip(
                    record["clip_start_sec"], record["clip_stop_sec"], cfg.num_frames, frames=segment_frames(record)
                )
            except VideoError as err:
                clip = None
                failure = SampleResult(key, None, f"{key}: {err}")
            if clip is not None and clip.clamped and 2 * len(set(clip.frame_ids)) < cfg.num_frames:
                distinct = len(set(clip.frame_ids))  # mostly past the video's end: repeats of its last frames
                clip, failure = (
                    None,
                    SampleResult(key, None, f"{key}: past the video's end ({distinct} distinct frames)"),
                )
            if pending is not None:
                results.append(finish_sample(*pending))
                pending = None
            if clip is None:
                results.append(failure)
            else:
                pending = (record, clip, cfg.num_frames, encoder.submit(encode_frames, clip.frames, cfg.quality))
        if pending is not None:
            results.append(finish_sample(*pending))
    return results


def segment_frames(record: dict) -> tuple[int, int] | None:
    """The segment's EPIC start and stop frames when the clip is the segment itself (the frames layout samples between
    them, as the reference's frame loader does); None for a window around it or a replayed video."""
    clip = (record.get("clip_start_sec"), record.get("clip_stop_sec"))
    whole = clip == (record.get("start_sec"), record.get("stop_sec"))
    if whole and record.get("start_frame") is not None and record.get("stop_frame") is not None:
        return int(record["start_frame"]), int(record["stop_frame"])
    return None


def encode_frames(frames, quality: int) -> list[bytes]:
    return [simplejpeg.encode_jpeg(frame, quality=quality, colorspace="RGB") for frame in frames]


def finish_sample(record: dict, clip, num_frames: int, encoded) -> SampleResult:
    meta = record | {
        "frame_ids": clip.frame_ids,
        "frame_times_sec": [round(i / clip.fps, 4) for i in clip.frame_ids],
        "video_fps": clip.fps,
        "num_frames": num_frames,
        "frame_size": clip.frames.shape[1],
        "clamped": clip.clamped,
    }
    sample = make_sample(record["narration_id"], meta, encoded.result())
    conversations = len(record.get("conversations") or [None])
    return SampleResult(record["narration_id"], sample, clamped=clip.clamped, conversations=conversations)


def video_jobs(records: list[dict], config: ExtractConfig, decoder_threads: int) -> Iterator[VideoJob]:
    for video_id, group in itertools.groupby(records, key=lambda r: r["video_id"]):
        group = list(group)
        yield VideoJob(video_id, group[0]["participant_id"], group, config, decoder_threads)
