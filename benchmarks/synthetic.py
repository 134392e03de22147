"""The benchmarks' small datasets: the demo's synthetic EPIC-format videos and annotations, their MQA questions, and
shards of their frames (make_demo -> build_mqa -> extract_frames, as `make demo-data` runs them)."""

from __future__ import annotations

from pathlib import Path

from data_prep.build_mqa import main as build_mqa
from data_prep.extract_frames import ExtractConfig, extract
from data_prep.make_demo import make_demo
from llavaction.utils.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def epic_annotations() -> Path:
    """The real EK-100 annotations beside the checkout (../shared) when present, else the tests' small copy."""
    shared = ROOT.parent / "shared" / "data" / "epic-kitchens-100-annotations"
    if (shared / "EPIC_100_validation.csv").exists():
        return shared
    return ROOT / "tests" / "fixtures" / "epic-kitchens-100-annotations"


def epic_validation_questions(out: Path, *extra: str) -> None:
    """build_mqa's questions of the EK-100 validation split (epic_annotations; the annotation-model distractors)."""
    build_mqa(
        [
            "--annotations",
            str(epic_annotations()),
            "--split",
            "validation",
            "--distractors",
            "annotations",
            "--out",
            str(out),
            *extra,
        ]
    )


def demo_questions(
    root: Path,
    split: str,
    distractors: str,
    *,
    seed: int,
    train_videos: int,
    val_videos: int,
    duration: float,
    fps: int,
    video_size: int = 64,
) -> list[dict]:
    """Videos and annotations under root/demo (tokenizer in root/demo/tokenizer), and the split's questions."""
    make_demo(
        root / "demo",
        seed=seed,
        train_videos=train_videos,
        val_videos=val_videos,
        duration=duration,
        fps=fps,
        size=video_size,
    )
    build_mqa(
        [
            "--annotations",
            str(root / "demo" / "annotations"),
            "--split",
            split,
            "--distractors",
            distractors,
            "--out",
            str(root / "q.jsonl"),
        ]
    )
    return read_jsonl(root / "q.jsonl")


def frame_shards(
    root: Path, records: list[dict], num_frames: int, size: int, shard_size: int = 64, videos: Path | None = None
) -> Path:
    """Shards of the questions' frames from `videos` (default root/demo/videos; JPEG q90, squashed to size):
    root/shards."""
    config = ExtractConfig(
        videos=str(videos or root / "demo" / "videos"),
        layout="raw",
        num_frames=num_frames,
        size=size,
        resize="squash",
        quality=90,
        chunk_seconds=15.0,
        shard_size=shard_size,
    )
    extract(records, root / "shards", config)
    return root / "shards"
