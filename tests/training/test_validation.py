"""The error-analysis report of an evaluation, and the TensorBoard figures' names."""

from tests.helpers import make_batch


def test_tensorboard_figures_carry_verb_names():
    import torch

    from llavaction.training.validation import MQAFigures

    callback = MQAFigures(top_verbs=5, examples=1)
    meta = {
        "verb_class": 3,
        "verb_text": "put-down",
        "option_actions": ["3:1", "4:1"],
        "options": ["a", "b"],
        "answer_index": 0,
        "narration_id": "P01_01_1",
    }
    batch = make_batch(2, meta=[meta, meta | {"verb_class": 4, "verb_text": "wash"}])
    from types import SimpleNamespace

    from llavaction.evaluation.options import EvaluationOptions

    module = SimpleNamespace(evaluation=EvaluationOptions())
    callback.on_validation_batch_end(None, module, {"chosen": torch.tensor([0, -1])}, batch, 0)
    figure = callback.verb_accuracy_figure()
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["put-down (1)", "wash (1)"] and "paper's rule" in figure.axes[0].get_title()
    assert [bar.get_height() for bar in figure.axes[0].patches] == [100.0, 0.0]  # the questions right, by the rule
    confusion = callback.confusion_figure()
    assert [t.get_text() for t in confusion.axes[0].get_xticklabels()][-1] == "none"
    example = MQAFigures.example_figure(callback.samples[0])
    image = example.axes[0].get_images()[0].get_array()
    assert image.shape[0] >= 128  # 32 px frames upscaled to a readable size
