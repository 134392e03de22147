"""One loaded checkpoint: read once, and answering by the options it was last given."""

import pytest


def test_an_original_checkpoint_is_read_once(original_checkpoint, demo_shards, monkeypatch):
    """One config.json read for its settings, its architecture and its weights; one DataModule linked as train.py."""
    from pathlib import Path

    from llavaction.data.options import LoaderOptions
    from llavaction.data.shards import stored_frames
    from llavaction.evaluation.checkpoints import LoadedCheckpoint
    from llavaction.evaluation.options import EvaluationOptions, QuestionOptions

    reads, real = [], Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self.name) or real(self, *a, **k))
    loaded = LoadedCheckpoint.open(original_checkpoint)
    module = loaded.module(EvaluationOptions(("letter",)))
    settings = loaded.question_settings(QuestionOptions(), stored_frames([str(demo_shards["validation_mqa"])]))
    data = loaded.datamodule([str(demo_shards["validation_mqa"])], settings, LoaderOptions(num_workers=0))
    assert reads.count("config.json") == 1 and module.model is not None
    assert data.chat_format.as_dict() == module.chat_format and data.tokenizer_path == module.tokenizer_path
    assert loaded.precision == "32-true" and settings.num_frames == 8


def test_a_module_answers_by_the_options_it_was_last_given(original_checkpoint, demo_shards):
    """Building the DataModule does not reset the answering options (a long generation budget would)."""
    from llavaction.data.options import LoaderOptions
    from llavaction.data.shards import stored_frames
    from llavaction.evaluation.checkpoints import LoadedCheckpoint
    from llavaction.evaluation.options import EvaluationOptions, QuestionOptions

    loaded = LoadedCheckpoint.open(original_checkpoint)
    module = loaded.module(EvaluationOptions(("generate", "letter"), max_new_tokens=12))
    settings = loaded.question_settings(QuestionOptions(), stored_frames([str(demo_shards["validation_mqa"])]))
    loaded.datamodule([str(demo_shards["validation_mqa"])], settings, LoaderOptions(num_workers=0))
    assert loaded.module() is module and module.answerer.max_new_tokens == 12
    assert loaded.module(EvaluationOptions(("letter",))) is module and module.evaluation.mqa_scoring == ("letter",)
    assert module.answerer.max_new_tokens == 4096 and list(module.val_records) == ["letter"]


def test_an_export_keeps_the_earlier_weights_until_the_new_ones_are_complete(demo_dir, tmp_path, monkeypatch):
    import torch

    from llavaction.evaluation.checkpoint_format import export_model
    from llavaction.model import llava_video as layout
    from llavaction.model.llava_video import LLAVA_VIDEO, LlavaVideoModel, preset
    from llavaction.prompts.tokenizer import load_tokenizer

    model, tokenizer = LlavaVideoModel(preset("tiny")), load_tokenizer(demo_dir / "tokenizer")
    out = tmp_path / "export"
    export_model(LLAVA_VIDEO, model, tokenizer, None, out, is_writer=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_save = layout.save_original

    def fail_after_the_weights(model, directory, **kwargs):
        real_save(model, directory, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout, "save_original", fail_after_the_weights)
    with torch.no_grad():
        model.image_newline.add_(1.0)
    with pytest.raises(OSError, match="(?i)no space left"):
        export_model(LLAVA_VIDEO, model, tokenizer, None, out, is_writer=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    monkeypatch.setattr(layout, "save_original", real_save)
    export_model(LLAVA_VIDEO, model, tokenizer, None, out, is_writer=True)
    assert (LlavaVideoModel.from_pretrained(out).image_newline == model.image_newline).all()


def test_shards_with_fewer_frames_than_the_training_are_refused_unless_asked():
    from llavaction.evaluation.checkpoints import TrainedSettings, question_settings
    from llavaction.evaluation.options import QuestionOptions

    trained = TrainedSettings(num_frames=16)
    with pytest.raises(ValueError, match=r"trained on 16 frames a clip and the shards hold 8: .*--num-frames 8"):
        question_settings(trained, QuestionOptions(), stored_frames=8)
    assert question_settings(trained, QuestionOptions(num_frames=8), stored_frames=8).num_frames == 8  # on purpose
    assert question_settings(trained, QuestionOptions(), stored_frames=32).num_frames == 16  # as trained
    assert question_settings(TrainedSettings(), QuestionOptions(), stored_frames=8).num_frames == 8  # all it holds
