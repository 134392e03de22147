"""The training command line: one-line errors for bad configs, and the demo's checkpoint every epoch."""

import os
import subprocess
import sys
import time

from tests.fit_helpers import demo_args
from tests.helpers import ROOT


def test_train_cli_errors_are_one_line_and_the_demo_checkpoints_every_epoch(demo_dir, demo_shards, tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    args = demo_args(demo_dir, demo_shards, tmp_path / "bad", '--data.val=["/no/such/shards"]')
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: /no/such/shards/sizes.json not found; build the shards with: python -m data_prep.extract_frames "
        "--questions Q.jsonl --videos DIR --out /no/such/shards"
    )
    assert "Traceback" not in result.stderr
    start = time.perf_counter()
    args = demo_args(demo_dir, demo_shards, tmp_path / "tok", "--model.tokenizer=/no/such/tokenizer")
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "tokenizer /no/such/tokenizer: no such file or directory" in result.stderr
    assert time.perf_counter() - start < 60  # no hub retries
    # a config validating every 4 epochs still leaves a checkpoint after the first one (to resume a killed demo)
    from llavaction.cli.train import cli

    cli(
        demo_args(
            demo_dir, demo_shards, tmp_path / "demo", "--trainer.max_epochs=1", "--data.loader.samples_per_epoch=8"
        )
    )
    assert (tmp_path / "demo" / "checkpoints" / "last.ckpt").exists()
