"""Loader throughput, from one run on the same segments (16 frames, 384x384, JPEG q90), one process (one core):

(a) the JPEG-decode limit: simplejpeg decoding of the same stored frames, nothing else;
(b) the DataModule's training pipeline up to collated tensors (read, decode, prompt, tokenise, collate), which is
    what loader workers do; the model's per-batch conversion and normalisation (on the GPU in training) is timed
    separately and also shown added to (b);
(c) online decoding as the original code does: open an AVION-style 15 s chunk (320p H.264), get_batch, resize.
Goals: (b) >= 70% of (a); (b) >= 5x (c).

    python benchmarks/loader.py [--videos 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import simplejpeg
import torch
import webdataset as wds

from data_prep.build_mqa import main as build_mqa
from data_prep.extract_frames import ExtractConfig, extract
from data_prep.make_demo import make_demo
from data_prep.video import RawVideo, sample_times
from llavaction.data.datamodule import EpicDataModule
from llavaction.data.pipeline import TaskSource, shard_urls
from llavaction.jsonl import read_jsonl
from llavaction.model import LlavaVideoModel, preset

FRAMES, SIZE = 16, 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="synthetic 15 s chunks of 320x320")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 15 s videos: each one is what an AVION-style chunk holds
        make_demo(tmp / "demo", seed=0, train_videos=args.videos, val_videos=1, duration=15.0, fps=30, size=320)
        build_mqa(["--annotations", str(tmp / "demo" / "annotations"), "--split", "train", "--distractors", "random",
                   "--out", str(tmp / "q.jsonl")])
        records = read_jsonl(tmp / "q.jsonl")
        config = ExtractConfig(videos=str(tmp / "demo" / "videos"), layout="raw", num_frames=FRAMES, size=SIZE,
                               resize="squash", quality=90, chunk_seconds=15.0, shard_size=32)
        extract(records, tmp / "shards", config)
        samples = list(wds.WebDataset(shard_urls(tmp / "shards"), shardshuffle=False))
        n = len(samples)

        start = time.perf_counter()
        buffer = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
        for sample in samples:
            for i in range(FRAMES):
                simplejpeg.decode_jpeg(sample[f"{i:03d}.jpg"], colorspace="RGB", buffer=buffer[i])
        decode_rate = n / (time.perf_counter() - start)

        model = LlavaVideoModel(preset("tiny", vision=preset("tiny").vision | {"image_size": SIZE, "patch_size": 32}))
        batch_size = 8
        dm = EpicDataModule(train=[TaskSource(str(tmp / "shards"), "mqa")], tokenizer=str(tmp / "demo" / "tokenizer"),
                            tokens_per_frame=model.config.tokens_per_frame, num_frames=FRAMES, batch_size=batch_size,
                            num_workers=0, samples_per_epoch=n, shuffle_buffer=1, max_length=8192)
        loader = dm.train_dataloader()
        next(iter(loader))  # open the tokenizer and the files once
        start, count, batches = time.perf_counter(), 0, []
        for batch in loader:
            batches.append(batch["frames"])
            count += batch["frames"].shape[0]
        pipeline_s = time.perf_counter() - start
        start = time.perf_counter()
        for frames in batches:
            model.preprocess(frames)
        normalise_s = time.perf_counter() - start
        pipeline_rate = count / pipeline_s

        start = time.perf_counter()
        for record in records:
            video = RawVideo(tmp / "demo" / "videos", record["participant_id"], record["video_id"], SIZE, "squash")
            video.clip(sample_times(record["clip_start_sec"], record["clip_stop_sec"], FRAMES))
        online_rate = len(records) / (time.perf_counter() - start)
    print(f"{n} segments, {FRAMES} frames of {SIZE}x{SIZE} (JPEG q90), one process, torch threads 1")
    print(f"(a) JPEG decode limit:       {decode_rate:8.1f} samples/s")
    print(f"(b) DataModule to tensors:   {pipeline_rate:8.1f} samples/s  = {100 * pipeline_rate / decode_rate:.0f}% of (a)"
          f" (goal >= 70%)")
    print(f"    + normalising on the CPU: {count / (pipeline_s + normalise_s):8.1f} samples/s (the model does this per"
          f" batch on its device; on a GPU it is negligible)")
    print(f"(c) online chunk decoding:   {online_rate:8.1f} samples/s;  (b)/(c) = {pipeline_rate / online_rate:.1f}x"
          f" (goal >= 5x)")
    print(json.dumps({"decode_limit": round(decode_rate, 1), "datamodule": round(pipeline_rate, 1),
                      "datamodule_cpu_normalised": round(count / (pipeline_s + normalise_s), 1),
                      "online": round(online_rate, 1)}))


if __name__ == "__main__":
    main()
