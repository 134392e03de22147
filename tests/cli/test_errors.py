"""Command lines refuse bad values in one line naming the option, and unreadable files in one line naming the file."""

from tests.fit_helpers import demo_args
from tests.helpers import one_line_exit, truncated_copy


def test_counts_are_positive_integers_checked_where_read(demo_dir, demo_shards, demo_questions, tmp_path, capsys):
    from llavaction.cli.evaluate import main as evaluate
    from llavaction.cli.train import main as train

    for override, message in (
        ("--data.loader.batch_size=0", "data.loader.batch_size must be an integer >= 1, got 0"),
        ("--data.loader.batch_size=-1", "data.loader.batch_size must be an integer >= 1, got -1"),
        ("--data.num_frames=0", "data.num_frames must be an integer >= 1, got 0"),
        ("--data.loader.samples_per_epoch=0", "data.loader.samples_per_epoch must be an integer >= 1 or null"),
        ("--model.optimizer.lr=-1e-5", "model.optimizer.lr must be a number >= 0.0, got -1e-05"),
        ("--model.optimizer.vision_lr=-2", "model.optimizer.vision_lr must be a number >= 0.0"),
        ("--model.optimizer.weight_decay=-0.1", "model.optimizer.weight_decay must be a number >= 0.0"),
        ("--model.optimizer.warmup_ratio=1.5", "model.optimizer.warmup_ratio must be a number between 0.0 and 1.0"),
        ("--model.action.loss_weight=-1", "model.action.loss_weight must be a number >= 0.0"),
        ("--trainer.max_epochs=0", "trainer.max_epochs is 0: the fit would train nothing"),
        ("--trainer.max_steps=0", "trainer.max_steps is 0: the fit would train nothing"),
    ):
        args = demo_args(demo_dir, demo_shards, tmp_path / "run", override)
        assert message in one_line_exit(capsys, lambda args=args: train(args))
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    for bad, message in (
        (["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
        (["--num-frames", "-3"], "num_frames must be an integer >= 1, got -3"),
        (["--precision", "bf16"], "--precision: expected one of 32-true, bf16-true, bf16-mixed, 16-true, 16-mixed"),
    ):
        args = ["mqa", *common, "--checkpoint", "x", "--out", str(tmp_path / "o"), *bad]
        assert message in one_line_exit(capsys, lambda args=args: evaluate(args))


def test_unreadable_files_are_one_line_naming_them(demo_dir, demo_shards, demo_questions, tmp_path, capsys):
    import numpy as np
    import torch

    from llavaction.cli.evaluate import main as evaluate
    from llavaction.cli.train import main as train

    text = tmp_path / "text.ckpt"
    text.write_text("not a checkpoint")
    cut = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, cut)
    cut.write_bytes(cut.read_bytes()[:200])
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    for bad in (text, cut):
        args = ["mqa", *common, "--checkpoint", str(bad), "--out", str(tmp_path / "o")]
        assert f"{bad}: not a readable checkpoint" in one_line_exit(capsys, lambda args=args: evaluate(args))
        args = [*demo_args(demo_dir, demo_shards, tmp_path), f"--ckpt_path={bad}"]
        assert f"{bad}: not a readable checkpoint" in one_line_exit(capsys, lambda args=args: train(args))
    # a last.ckpt cut short (a full disk), reached through --ckpt_path last
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(cut.read_bytes())
    args = [*demo_args(demo_dir, demo_shards, run), "--ckpt_path=last"]
    assert "last.ckpt: not a readable checkpoint" in one_line_exit(capsys, lambda: train(args))
    whole = tmp_path / "whole.npz"
    np.savez(whole, verb_output=np.zeros((1, 97)), noun_output=np.zeros((1, 300)), narration_id=np.array(["a"]))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "cut.npz").write_bytes(whole.read_bytes()[:100])
    np.savez(
        tmp_path / "objects.npz",
        verb_output=np.zeros((1, 97)),
        noun_output=np.zeros((1, 300)),
        narration_id=np.array(["a"], dtype=object),
    )
    for name, message in (
        ("empty.npz", "not a readable scores file"),
        ("cut.npz", "not a readable scores file"),
        ("objects.npz", "holds object arrays"),
    ):
        args = ["ek100", "--scores", str(tmp_path / name), "--annotations", str(demo_dir / "annotations")]
        args += ["--out", str(tmp_path / "e.json")]
        assert f"{tmp_path / name}: {message}" in one_line_exit(capsys, lambda args=args: evaluate(args))


def test_a_worker_error_is_one_line(demo_questions, demo_shards, demo_dir, tmp_path, capsys):
    """A validation shard cut at a sample boundary, read in a DataLoader worker: the worker's error, one line."""
    from llavaction.cli.evaluate import main as evaluate
    from tests.helpers import original_checkpoint_at

    truncated_copy(demo_shards["validation_mqa"], tmp_path / "val", keep_samples=2)
    checkpoint = original_checkpoint_at(demo_dir, tmp_path / "ckpt")
    args = ["mqa", "--questions", str(demo_questions["validation_mqa"]), "--shards", str(tmp_path / "val")]
    args += ["--checkpoint", str(checkpoint), "--num-workers", "1", "--mode", "score", "--out", str(tmp_path / "o")]
    line = one_line_exit(capsys, lambda: evaluate(args))
    assert "the shard is truncated" in line and "shard-000000.tar" in line and "Traceback" not in line
