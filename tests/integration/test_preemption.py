"""Preemption: SIGTERM and SIGUSR1 stop a fit with a checkpoint, and the resumed run continues the same curve."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import ROOT, assert_same_curve, csv_logged, demo_args, read_losses


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
    return [sys.executable, "-m", "llavaction.cli.train", *args]


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
