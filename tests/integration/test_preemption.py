"""Preemption: SIGTERM and SIGUSR1 stop a fit with a checkpoint, and the resumed run continues the same curve; the SLURM
script resumes on the nodes it is given."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from tests.fit_helpers import assert_same_curve, csv_logged, demo_args, read_losses
from tests.helpers import ROOT


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
    announce = "--trainer.callbacks+=tests.fit_helpers.AnnounceSteps"
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
        train_command(demo_dir, demo_shards, root, "--trainer.callbacks+=tests.fit_helpers.AnnounceSteps"),
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


def test_the_slurm_script_follows_the_nodes_it_is_given_and_resumes(tmp_path):
    """experiments/slurm/train.sbatch with stand-ins for srun and scontrol: the fit's ranks, accumulation and
    megabatch follow the allocation (global batch 256), a run with a checkpoint is resumed, a fit stopped by SIGUSR1
    before the time limit requeues the job, and a node count that cannot keep the global batch is refused naming
    those that can; the fit's arguments are ones train.py accepts."""
    from llavaction.cli.train import config_problem

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).write_text(f'#!/bin/bash\necho "$@" >> {tmp_path / tool}.log\nexit "${{FAKE_STATUS:-0}}"\n')
        (bin_dir / tool).chmod(0o755)
    run = tmp_path / "run"

    def sbatch(nodes: int, status: int = 0) -> subprocess.CompletedProcess:
        env = os.environ | {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SLURM_JOB_NUM_NODES": str(nodes),
            "SLURM_NTASKS_PER_NODE": "8",
            "SLURM_JOB_ID": "42",
            "RUN": str(run),
            "FAKE_STATUS": str(status),
        }
        script = ROOT / "experiments" / "slurm" / "train.sbatch"
        return subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True)

    assert sbatch(2).returncode == 0
    fit = (tmp_path / "srun.log").read_text().split()
    expected = ["--trainer.num_nodes=2", "--trainer.strategy.data_parallel_size=16"]
    expected += ["--trainer.accumulate_grad_batches=16", "--data.loader.megabatch_steps=16"]
    assert set(expected) <= set(fit) and "--ckpt_path" not in fit
    configs = [ROOT / fit[fit.index("--config") + 1]]
    extra = fit[fit.index("--config") + 2 :]
    assert config_problem(configs, extra) is None
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "srun.log").unlink()
    assert sbatch(1, status=138).returncode == 138  # stopped before the time limit: requeued, resumed next time
    assert (tmp_path / "srun.log").read_text().split()[-2:] == ["--ckpt_path", "last"]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "42"]
    refused = sbatch(3)
    assert refused.returncode == 2 and "ask for one of 1, 2, 4, 8, 16, 32 nodes" in refused.stderr
