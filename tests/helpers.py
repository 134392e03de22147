"""Helpers of the tests: a callback for tests that drive `train.py` in a subprocess, shared extraction settings."""

import time

import lightning as L


class AnnounceSteps(L.Callback):
    """Prints `step N` after each training step and waits a little, so a test can signal the run mid-epoch."""

    def __init__(self, delay: float = 0.2):
        self.delay = delay

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"step {trainer.global_step}", flush=True)
        time.sleep(self.delay)


def extract_config(videos, **overrides):
    """extract_frames settings of the tests' shards: 8 frames of 32 px, JPEG q90, 8 samples a shard, raw layout."""
    from data_prep.extract_frames import ExtractConfig

    values = dict(
        videos=str(videos),
        layout="raw",
        num_frames=8,
        size=32,
        resize="squash",
        quality=90,
        chunk_seconds=15.0,
        shard_size=8,
    )
    return ExtractConfig(**(values | overrides))


def extract_args(questions, videos, out, *extra) -> list[str]:
    """The extract_frames command line of the tests: 4 frames of 32 px, one worker."""
    return [
        "--questions",
        str(questions),
        "--videos",
        str(videos),
        "--num-frames",
        "4",
        "--size",
        "32",
        "--workers",
        "1",
        "--out",
        str(out),
        *extra,
    ]


class RecordKeys(L.Callback):
    """Writes, per training batch, the epoch, the batch index and its rows' keys and padding flags to
    `<folder>/keys-rank<R>.jsonl` (what a fit consumed, to compare with the epoch plan)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import json
        from pathlib import Path

        row = {
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "rows": [[k, bool(p)] for k, p in zip(batch["keys"], batch["is_padding"].tolist())],
        }
        with open(Path(self.folder) / f"keys-rank{trainer.global_rank}.jsonl", "a") as out:
            out.write(json.dumps(row) + "\n")
