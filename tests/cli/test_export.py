"""`llavaction export` and `model.export_layout`: LLaVA-Video's grid checkpoints are refused for transformers' layout in
one line before anything is written or trained; the original layout round-trips."""

import torch

from llavaction.cli.export import main as export
from llavaction.cli.train import main as train
from tests.helpers import demo_args, one_line_exit


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
