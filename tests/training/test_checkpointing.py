"""Checkpoints written whole or not at all."""

from pathlib import Path

import pytest

from tests.helpers import demo_args


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
