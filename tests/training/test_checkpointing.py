"""Checkpoints written whole or not at all."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fit_helpers import demo_args, step_checkpoint, step_checkpoints
from tests.helpers import ROOT, one_line_exit


def test_a_checkpoint_that_cannot_be_written_leaves_no_checkpoint(demo_dir, demo_shards, tmp_path, monkeypatch):
    import errno

    import lightning as L

    from llavaction.cli.train import cli

    real = L.Trainer.save_checkpoint

    def fail_midway(self, filepath, weights_only=False, storage_options=None):
        real(self, filepath, weights_only, storage_options)
        Path(filepath).write_bytes(Path(filepath).read_bytes()[:1000])  # part of it reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(L.Trainer, "save_checkpoint", fail_midway)
    root = tmp_path / "full"
    with pytest.raises(OSError, match=r"step=2.ckpt: the checkpoint was not written \(No space left on device"):
        cli(demo_args(demo_dir, demo_shards, root, "--trainer.max_epochs=1", "--data.loader.samples_per_epoch=8"))
    assert list((root / "checkpoints").iterdir()) == []  # neither last.ckpt nor its partial file


def test_a_refused_resume_changes_nothing_and_names_the_setting(demo_dir, demo_shards, tmp_path, capsys):
    """A resume inside an epoch under another plan (seed), with a batch that cannot keep the global batch, or with
    model settings the checkpoint's would silently replace: one line before anything is written; every file of the run
    as it was."""
    from llavaction.cli.train import main

    root = tmp_path / "run"
    base = demo_args(demo_dir, demo_shards, root, "--data.loader.samples_per_epoch=32", "--trainer.max_epochs=1")
    assert main([*base, step_checkpoints(root, 3), "--trainer.check_val_every_n_epoch=10"]) == 0
    middle = step_checkpoint(root, 3)  # 3 of the epoch's 8 batches

    def files() -> dict:
        return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    before = files()
    for extra, message in (
        (
            ["--data.loader.batch_size=8"],
            "the run's global batch is 4 (1 rank x batch 4 x accumulation 1); 1 rank x batch 8 cannot keep it",
        ),
        (["--data.seed=1"], "(seed 0 there, 1 here)"),
        (["--model.optimizer.lr=0.5"], "model.optimizer.lr is 0.5 in this run but 0.001 in the checkpoint"),
    ):
        args = [*base, f"--ckpt_path={middle}", *extra]
        assert message in one_line_exit(capsys, lambda args=args: main(args))
        assert files() == before
    # `--ckpt_path last` is checked alike (another architecture, say)
    args = [*base, "--ckpt_path=last", "--model.preset_name=0.5b"]
    assert "model.preset_name is '0.5b' in this run but 'tiny'" in one_line_exit(capsys, lambda: main(args))
    assert files() == before
    # where this run writes is its own: the checkpoint's export folder is not taken over
    (root / "resumed").mkdir()
    args = [*base, f"--ckpt_path={middle}", f"--model.export_dir={root / 'resumed' / 'export'}"]
    assert main(args) == 0 and (root / "resumed" / "export" / "config.json").exists()


def test_two_fits_into_one_run_folder_are_refused_before_either_writes(demo_dir, demo_shards, tmp_path, capsys):
    from llavaction.cli.train import main

    root = tmp_path / "run"
    args = demo_args(demo_dir, demo_shards, root, "--data.loader.samples_per_epoch=8", "--trainer.max_epochs=1")
    holder = subprocess.Popen(  # another fit writing this run folder right now (a process holding it)
        [
            sys.executable,
            "-c",
            f"from llavaction.utils.files import exclusive_output\nwith exclusive_output({str(root)!r}):"
            "\n    print('held', flush=True)\n    input()",
        ],
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    error = one_line_exit(capsys, lambda: main(args))
    holder.communicate("\n", timeout=60)
    assert f"{root} is being written by pid {holder.pid}" in error and not (root / "checkpoints").exists()
    assert main(args) == 0 and main([*args, "--trainer.max_epochs=2", "--ckpt_path=last"]) == 0  # released each time


def test_a_refused_fit_writes_no_checkpoint_and_a_fresh_fit_keeps_an_earlier_runs(
    demo_dir, demo_shards, tmp_path, capsys
):
    """A fit refused in its setup writes no checkpoint (none for `--ckpt_path last` to pick up); a fit without
    --ckpt_path into a run folder holding checkpoints is refused before it writes anything; Lightning's own
    ModelCheckpoint in a config is refused naming RunCheckpoint."""
    from llavaction.cli.train import main

    root = tmp_path / "run"
    args = demo_args(demo_dir, demo_shards, root, "--data.loader.samples_per_epoch=8", "--trainer.max_epochs=1")
    assert "16 asked for (num_frames)" in one_line_exit(capsys, lambda: main([*args, "--data.num_frames=16"]))
    assert not list(root.rglob("*.ckpt"))
    assert main(args) == 0
    files = {p: p.read_bytes() for p in sorted((root / "checkpoints").iterdir())}
    error = one_line_exit(capsys, lambda: main(args))
    assert f"{root / 'checkpoints'} holds an earlier run's checkpoints (epoch=0-step=2.ckpt, last.ckpt)" in error
    assert "--ckpt_path last" in error
    assert {p: p.read_bytes() for p in sorted((root / "checkpoints").iterdir())} == files
    lightning = [*args, "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"]
    error = one_line_exit(capsys, lambda: main(lightning))
    assert "lightning.pytorch.callbacks.ModelCheckpoint is not used here" in error and "RunCheckpoint" in error
