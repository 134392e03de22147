"""What a new question variant costs over an existing frame store, from one run: the store's extraction (what every
variant cost when each question file needed its own shards) against building the variant (build_mqa, another tier
and K) and evaluating it over the store (`evaluate mqa --frames`, a random-init tiny model, greedy answers), with the
video decodes of each phase counted (decord and PyAV openings).

    python benchmarks/new_variant.py [--videos 4] [--frames 16] [--size 64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import av
import decord
import torch
from synthetic import demo_questions, frame_shards

from data_prep.build_mqa import main as build_mqa
from llavaction.evaluation.mqa import MQAEvaluation, evaluate_mqa
from llavaction.model.llava_video import LlavaVideoModel, preset


@contextlib.contextmanager
def counted_decodes(counts: dict):
    """Count the videos opened by decord and PyAV while the block runs."""
    reader, opener = decord.VideoReader, av.open

    def counting_reader(*args, **kwargs):
        counts["decodes"] += 1
        return reader(*args, **kwargs)

    def counting_open(*args, **kwargs):
        counts["decodes"] += 1
        return opener(*args, **kwargs)

    decord.VideoReader, av.open = counting_reader, counting_open
    try:
        yield
    finally:
        decord.VideoReader, av.open = reader, opener


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="synthetic validation videos")
    parser.add_argument("--frames", type=int, default=16, help="frames a clip")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    args = parser.parse_args()
    torch.set_num_threads(2)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = demo_questions(
            tmp, "validation", "annotations", seed=2, train_videos=1, val_videos=args.videos, duration=30.0, fps=24
        )
        extraction = {"decodes": 0}
        started = time.perf_counter()
        with counted_decodes(extraction):
            store = frame_shards(tmp, records, num_frames=args.frames, size=args.size)
        figures["store_seconds"] = time.perf_counter() - started
        figures["store_decodes"] = extraction["decodes"]
        torch.manual_seed(0)
        LlavaVideoModel(preset("tiny")).save_pretrained(tmp / "model")
        variant = {"decodes": 0}
        started = time.perf_counter()
        with counted_decodes(variant):
            build_mqa(
                [
                    *("--annotations", str(tmp / "demo" / "annotations"), "--split", "validation"),
                    *("--distractors", "random", "--num-options", "3", "--out", str(tmp / "k3.jsonl")),
                ]
            )
            figures["variant_build_seconds"] = time.perf_counter() - started
            results = evaluate_mqa(
                MQAEvaluation(
                    questions=[tmp / "k3.jsonl"],
                    frames=[str(store)],
                    checkpoint=str(tmp / "model"),
                    tokenizer=str(tmp / "demo" / "tokenizer"),
                    out=tmp / "eval",
                    max_new_tokens=8,
                    num_workers=0,
                )
            )
        figures["variant_build_and_evaluate_seconds"] = time.perf_counter() - started
        figures["variant_decodes"] = variant["decodes"]
        figures["questions"] = results["count"]
    for name, value in figures.items():
        print(f"{name:>36}: {value:,.3f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
