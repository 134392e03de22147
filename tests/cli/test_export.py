"""`llavaction export` and `model.export_layout`: LLaVA-Video's grid checkpoints are refused for transformers' layout in
one line before anything is written or trained; the original layout round-trips; an export replaces only an earlier
export."""

import os
import stat

import torch

from llavaction.cli.export import main as export
from llavaction.cli.train import main as train
from tests.fit_helpers import demo_args
from tests.helpers import one_line_exit


def test_a_grid_checkpoint_is_refused_for_transformers_layout(original_checkpoint, tmp_path, capsys):
    out = tmp_path / "export"
    args = ["--checkpoint", str(original_checkpoint), "--layout", "transformers", "--out", str(out)]
    error = one_line_exit(capsys, lambda: export(args))
    assert "LlavaOnevisionForConditionalGeneration" in error and "newline_position 'grid'" in error
    assert not out.exists()


def test_the_original_layout_round_trips(original_checkpoint, tmp_path, capsys):
    from llavaction.model.llava_video import LlavaVideoModel

    out = tmp_path / "export"
    assert export(["--checkpoint", str(original_checkpoint), "--out", str(out)]) == 0
    assert "original layout, backbone llava_video" in capsys.readouterr().out
    before, after = LlavaVideoModel.from_pretrained(original_checkpoint), LlavaVideoModel.from_pretrained(out)
    for (name, ours), theirs in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert (out / "tokenizer.json").is_file()


def test_training_refuses_an_export_layout_it_could_not_write_before_it_trains(demo_dir, demo_shards, tmp_path, capsys):
    args = demo_args(demo_dir, demo_shards, tmp_path / "run", f"--model.export_dir={tmp_path / 'export'}")
    error = one_line_exit(capsys, lambda: train([*args, "--model.export_layout=transformers"]))
    assert "newline_position 'grid'" in error and "model.export_layout original" in error
    assert not (tmp_path / "run").exists()


def test_an_export_replaces_only_an_earlier_export(original_checkpoint, tmp_path, capsys):
    """`--out` a folder holding a thesis, a run folder, another command's output, or the checkpoint itself: refused in
    one line, nothing touched; an earlier export is replaced whole, its files with one mode (model.safetensors too)."""
    checkpoint = str(original_checkpoint)
    thesis = tmp_path / "d"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("x\n")
    error = one_line_exit(capsys, lambda: export(["--checkpoint", checkpoint, "--out", str(thesis)]))
    assert "holds 'thesis.tex', which llavaction export did not write" in error
    assert [p.name for p in thesis.iterdir()] == ["thesis.tex"] and (thesis / "thesis.tex").read_text() == "x\n"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run / "lightning_logs").mkdir()
    error = one_line_exit(capsys, lambda: export(["--checkpoint", checkpoint, "--out", str(run)]))
    assert "holds 'checkpoints'" in error and (run / "checkpoints" / "last.ckpt").read_bytes() == b"weights"
    # the checkpoint itself, or a folder holding it
    error = one_line_exit(capsys, lambda: export(["--checkpoint", checkpoint, "--out", checkpoint]))
    assert "is also this command's input --checkpoint" in error
    error = one_line_exit(
        capsys, lambda: export(["--checkpoint", checkpoint, "--out", str(original_checkpoint.parent)])
    )
    assert "holds this command's input --checkpoint" in error and (original_checkpoint / "config.json").is_file()
    # an earlier export: replaced whole; every file with the mode the umask gives
    out = tmp_path / "export"
    for _ in range(2):
        assert export(["--checkpoint", checkpoint, "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes
    # a note added to it since: no longer only the export's, refused
    (out / "notes.txt").write_text("mine")
    error = one_line_exit(capsys, lambda: export(["--checkpoint", checkpoint, "--out", str(out)]))
    assert "holds 'notes.txt', which llavaction export did not write" in error and (out / "notes.txt").exists()


def test_a_full_disk_during_an_export_is_one_line_and_leaves_nothing(
    original_checkpoint, tmp_path, capsys, monkeypatch
):
    from safetensors import SafetensorError

    from llavaction.model.llava_video import checkpoint

    def full_disk(*args, **kwargs):  # what safetensors raises when the disk fills (measured on a 64 kB tmpfs)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    out = tmp_path / "export"
    error = one_line_exit(capsys, lambda: export(["--checkpoint", str(original_checkpoint), "--out", str(out)]))
    assert error == f"error: {out}: no space left on device; nothing written"
    assert list(tmp_path.iterdir()) == []
