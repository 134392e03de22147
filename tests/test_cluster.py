"""Preemption, shards streamed by URL, and several nodes on one machine."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llavaction.data.stages import TaskSource
from llavaction.shards import ShardError, iter_shard, read_index, read_sizes, shard_urls
from tests.test_datamodule import datamodule
from tests.test_training import ROOT, assert_same_curve, csv_logged, demo_args, read_losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(demo_dir, demo_shards, root: Path, *extra) -> list[str]:
    args = demo_args(
        demo_dir,
        demo_shards,
        root,
        *csv_logged(root),
        "--data.loader.samples_per_epoch=48",
        "--trainer.max_epochs=1",
        "--trainer.check_val_every_n_epoch=10",
        *extra,
    )
    return [sys.executable, "-m", "llavaction.train", *args]


def test_sigterm_writes_a_checkpoint_and_the_resumed_run_continues_the_curve(demo_dir, demo_shards, tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    announce = "--trainer.callbacks+=tests.helpers.AnnounceSteps"
    whole = subprocess.run(
        train_command(demo_dir, demo_shards, tmp_path / "whole"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    root = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(demo_dir, demo_shards, root, announce),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in process.stdout:
        if line.strip() == "step 5":
            process.send_signal(signal.SIGTERM)
            break
    process.stdout.read()
    assert process.wait(timeout=120) == 128 + signal.SIGTERM  # stopped, not finished: `fit && evaluate` stops too
    assert (root / "checkpoints" / "last.ckpt").exists()
    assert not list((root / "checkpoints").glob(".*partial"))
    resumed = subprocess.run(
        train_command(demo_dir, demo_shards, root, "--ckpt_path=last"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    losses = read_losses(root)  # both runs log into root; the resumed run's version is the newest
    versions = sorted((root / "lightning_logs").glob("version_*"))
    resumed_losses = read_losses(versions[-1])
    assert 5 <= min(resumed_losses) <= 7 and losses
    assert_same_curve(read_losses(tmp_path / "whole"), resumed_losses, after=min(resumed_losses))


def test_sigusr1_outside_slurm_stops_with_a_checkpoint(demo_dir, demo_shards, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"PYTHONPATH": str(ROOT)}
    root = tmp_path / "usr1"
    process = subprocess.Popen(
        train_command(demo_dir, demo_shards, root, "--trainer.callbacks+=tests.helpers.AnnounceSteps"),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in process.stdout:
        if line.strip() == "step 3":
            process.send_signal(signal.SIGUSR1)
            break
    process.stdout.read()
    assert process.wait(timeout=120) == 128 + signal.SIGUSR1
    checkpoint = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert 3 <= checkpoint["global_step"] < 12  # stopped at the signal: 48 samples in batches of 4 make 12 steps


@pytest.fixture
def http_shards(demo_shards):
    """The demo shard folders served by `python -m http.server` on 127.0.0.1."""
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
            str(Path(demo_shards["validation_mqa"]).parent),
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
    from tests.test_evaluate import original_checkpoint_at, run_mqa

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
    assert sum(len(b["meta"]) for b in dm.train_dataloader()) == 8
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


def test_ranks_share_an_epoch_without_overlap(demo_dir, demo_shards):
    train = [TaskSource(str(demo_shards["train_mqa"]), "mqa", "size")]
    dm = datamodule(demo_dir, demo_shards, train=train, samples_per_epoch=None)
    seen = {}
    for rank in (0, 1):
        dm._world = lambda rank=rank: (rank, 2)
        batches = list(dm.train_dataloader())
        seen[rank] = [m["narration_id"] for b in batches for m, pad in zip(b["meta"], b["is_padding"]) if not pad]
    assert len(read_sizes(demo_shards["train_mqa"])) >= 2
    assert not set(seen[0]) & set(seen[1]) and abs(len(seen[0]) - len(seen[1])) <= 1
    every = [entry["key"] for entries in read_index(demo_shards["train_mqa"]).values() for entry in entries]
    assert sorted(seen[0] + seen[1]) == sorted(every)


@pytest.mark.slow
def test_two_nodes_of_one_process_on_one_machine(demo_dir, demo_shards, tmp_path):
    """num_nodes=2 x 1 process (NODE_RANK, MASTER_ADDR=127.0.0.1), FSDP2 on gloo: a few steps and a validation where
    every question counts once, and the sharded checkpoint resumes the same curve."""
    port = free_port()

    def two_nodes(root: Path, *extra) -> None:
        args = demo_args(
            demo_dir,
            demo_shards,
            root,
            *csv_logged(root),
            "--trainer.num_nodes=2",
            "--trainer.devices=1",
            "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
            "--trainer.strategy.data_parallel_size=2",
            "--trainer.strategy.tensor_parallel_size=1",
            "--data.loader.samples_per_epoch=24",
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1",
            "--model.evaluation.mqa_scoring=[letter]",
            *extra,
        )
        processes = []
        for node in (0, 1):
            env = os.environ | {
                "PYTHONPATH": str(ROOT),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NODE_RANK": str(node),
                "WORLD_SIZE": "2",
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "llavaction.train", *args],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=600) for p in processes]
        assert all(p.returncode == 0 for p in processes), outputs[0][1][-3000:] + outputs[1][1][-3000:]
        return outputs

    outputs = two_nodes(tmp_path / "whole")
    results = json.loads(next((tmp_path / "whole").rglob("validation_results.json")).read_text())
    assert results["val/questions"] == 8 and "validation MQA accuracy" in outputs[0][0]
    checkpoint = tmp_path / "whole" / "checkpoints" / "epoch=0-step=3.ckpt"
    assert checkpoint.is_dir()
    port = free_port()
    two_nodes(tmp_path / "resumed", f"--ckpt_path={checkpoint}")
    assert_same_curve(read_losses(tmp_path / "whole"), read_losses(tmp_path / "resumed"), after=3)
