"""Shards streamed from a URL: training and evaluation over HTTP, a server that stops answering."""

import subprocess
import sys
import time

import pytest

from llavaction.data.options import TaskSource
from llavaction.data.shards import ShardError, iter_shard, read_sizes, shard_urls
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import datamodule, eval_keys, free_port


@pytest.fixture
def http_shards(demo_shards, demo_store, tmp_path):
    """The demo shard folders and frame store (`mqa`) served by `python -m http.server` on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    for name, folder in [(name, demo_shards[name]) for name in ("validation_mqa", "train_mqa")] + [("mqa", demo_store)]:
        (served / name).symlink_to(folder)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(served),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            read_sizes(f"{base}/validation_mqa")
            break
        except OSError:
            time.sleep(0.1)
    yield base, server
    server.kill()
    server.wait()


@pytest.mark.slow
def test_shards_stream_from_a_url(http_shards, demo_dir, demo_shards, demo_questions, tmp_path):
    """Evaluation and training over a URL, over shard sets and over a frame store."""
    from tests.helpers import original_checkpoint_at, run_mqa

    base, server = http_shards
    checkpoint = original_checkpoint_at(demo_dir, tmp_path / "ckpt")
    local, local_predictions = run_mqa(checkpoint, demo_questions, demo_shards, tmp_path / "local", "--mode", "score")
    remote, remote_predictions = run_mqa(
        checkpoint, demo_questions, {"validation_mqa": f"{base}/validation_mqa"}, tmp_path / "remote", "--mode", "score"
    )
    assert remote["count"] == local["count"] == 8 and remote["accuracy"] == local["accuracy"]
    assert [p["scores"] for p in remote_predictions] == [p["scores"] for p in local_predictions]
    # training reads the URL as well
    dm = datamodule(demo_dir, demo_shards, train=[TaskSource(f"{base}/train_mqa", "mqa")], samples_per_epoch=8)
    assert sum(len(b.meta) for b in dm.train_dataloader()) == 8
    # a frame store by URL: training and validation ask their question files over it
    questions = {split: str(demo_questions[f"{split}_mqa"]) for split in ("train", "validation")}
    source = TaskSource(frames=f"{base}/mqa", questions=questions["train"], task="mqa", weight="size")
    asked = dict(val=[f"{base}/mqa"], questions=[questions["validation"]], samples_per_epoch=None)
    dm = datamodule(demo_dir, demo_shards, train=[source], **asked)
    dm.trainer = None
    dm.setup("fit")
    trained = sorted(k for b in dm.train_dataloader() for k, pad in zip(b.keys, b.is_padding) if not pad)
    assert trained == sorted(q["narration_id"] for q in read_jsonl(questions["train"]))
    assert sorted(eval_keys(dm, 2, 0)[0]) == sorted(q["narration_id"] for q in read_jsonl(questions["validation"]))
    # the server goes away in the middle of a run (after sizes.json, before a shard): a clear error naming the shard
    # once the retries are spent, no hang
    url = shard_urls(f"{base}/validation_mqa")[0]
    stream = iter_shard(url, expected=read_sizes(f"{base}/validation_mqa")["shard-000000.tar"])
    server.kill()
    server.wait()
    start = time.perf_counter()
    with pytest.raises(ShardError, match=f"{url}"):
        list(stream)
    assert time.perf_counter() - start < 30
