"""Tiny-model training step on the CPU: step time and peak resident memory, the figures that must not regress.

The model and batches are the demo's (tiny preset, 8 frames of 32 px, the MQA + narration mixture, batch 16): each
step is forward, backward, gradient clipping and an AdamW step through LlavaActionModule, as Lightning runs it.
Compare with the previous rows of benchmarks/RESULTS.md (evaluation questions/s: benchmarks/eval.py).

    python benchmarks/cpu_step.py [--steps 20] [--batch-size 16] [--pack]
"""

from __future__ import annotations

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from synthetic import demo_questions, frame_shards  # noqa: E402

from llavaction.data.datamodule import EpicDataModule  # noqa: E402
from llavaction.data.options import (
    LoaderOptions,
    TaskSource,  # noqa: E402
)
from llavaction.model.options import ComputeOptions
from llavaction.training.module import LlavaActionModule  # noqa: E402
from llavaction.training.options import OptimizerOptions  # noqa: E402

WARMUP_STEPS = 3


def demo_batches(shards: Path, tokenizer: str, count: int, batch_size: int, chat_format: dict) -> list:
    """`count` training batches of the demo mixture (MQA and narration, equal weights)."""
    loader = LoaderOptions(
        batch_size=batch_size, num_workers=0, samples_per_epoch=count * batch_size, shuffle_buffer=50
    )
    dm = EpicDataModule(
        train=[TaskSource(str(shards), "mqa"), TaskSource(str(shards), "narration")],
        tokenizer=tokenizer,
        chat_format=chat_format,
        num_frames=8,
        max_length=1024,
        loader=loader,
    )
    return list(dm.train_dataloader())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pack", action="store_true", help="model.pack_sequences (no compute on padding)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = demo_questions(
            tmp, "train", "annotations", seed=0, train_videos=4, val_videos=1, duration=60.0, fps=24
        )
        shards = frame_shards(tmp, records, num_frames=8, size=32)
        tokenizer = str(tmp / "demo" / "tokenizer")
        module = LlavaActionModule(
            preset_name="tiny",
            tokenizer=tokenizer,
            optimizer=OptimizerOptions(lr=1e-3),
            compute=ComputeOptions(pack_sequences=args.pack),
        )
        module.configure_model()
        batches = demo_batches(shards, tokenizer, args.steps + WARMUP_STEPS, args.batch_size, module.chat_format)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()
    times, tokens = [], 0
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        loss = module.training_step(batch, index)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
            tokens += int(batch.input_ids.numel())
    step = statistics.median(times)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(
        f"tiny model ({sum(p.numel() for p in module.parameters()) / 1e6:.2f} M parameters), batch "
        f"{args.batch_size}{' packed' if args.pack else ''}, 8 frames of 32 px, {len(times)} timed steps, "
        f"CPU threads {torch.get_num_threads()}"
    )
    print(
        f"step time (median): {1000 * step:7.1f} ms   ({args.batch_size / step:.1f} samples/s, "
        f"{tokens / sum(times):.0f} tokens/s incl. padding)"
    )
    print(f"peak RSS:           {peak_rss:7.2f} GiB (whole process, data preparation included)")
    print(
        json.dumps(
            {
                "step_ms": round(1000 * step, 1),
                "samples_per_s": round(args.batch_size / step, 1),
                "peak_rss_gib": round(peak_rss, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
