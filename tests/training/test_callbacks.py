"""The fit's small callbacks: TensorBoard's layout, plain progress lines where no bar can be seen, float32 matmuls."""

from types import SimpleNamespace

import torch


def fake_trainer(**fields):
    values = dict(
        is_global_zero=True,
        global_step=0,
        current_epoch=0,
        max_epochs=2,
        max_steps=-1,
        accumulate_grad_batches=1,
        num_training_batches=10,
        callback_metrics={},
        loggers=[],
    )
    return SimpleNamespace(**(values | fields))


def test_the_tensorboard_layout_puts_the_headline_with_its_interval_first(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from llavaction.training.callbacks import TensorBoardLayout

    logger = TensorBoardLogger(str(tmp_path))
    TensorBoardLayout().on_fit_start(fake_trainer(loggers=[logger]), None)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    (tag,) = events.Tags()["tensors"]
    layout = layout_pb2.Layout.FromString(events.Tensors(tag)[0].tensor_proto.string_val[0])
    first = layout.category[0]
    assert first.title == "1. validation"
    margin = first.chart[0].margin.series[0]
    assert (margin.value, margin.lower, margin.upper) == (
        "val/mqa_accuracy",
        "val/mqa_accuracy_low",
        "val/mqa_accuracy_high",
    )
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["language-model loss by task"] == [r"train/loss_.*"]


def test_plain_progress_lines_when_stdout_is_not_a_terminal(capsys, monkeypatch):
    from llavaction.training.callbacks import PlainProgress

    progress = PlainProgress(every_n_steps=2)
    trainer = fake_trainer()
    progress.on_train_start(trainer, None)  # pytest's stdout is not a terminal
    # the loss of this process's last batch (reading trainer.callback_metrics would wait for the other ranks)
    outputs = {"loss": torch.tensor(2.5)}
    for step in range(1, 6):
        trainer.global_step = step
        progress.on_train_batch_end(trainer, None, outputs, None, step)
        progress.on_train_batch_end(trainer, None, outputs, None, step)  # accumulation: one line a step
    trainer.global_step = 10
    progress.on_train_epoch_end(trainer, None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training from step 0 of 20 (a line every 2 steps)"
    assert [line.split(",")[1].strip() for line in lines[1:3]] == ["step 2/20", "step 4/20"]
    assert "loss 2.5000" in lines[1] and "s a step" in lines[1] and "left" in lines[1]
    assert lines[-1].startswith("epoch 1/2, step 10/20") and lines[-1].endswith("epoch 1 done") and len(lines) == 4
    # at a terminal the bar shows progress: no lines
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    terminal = PlainProgress(every_n_steps=1)
    terminal.on_train_start(fake_trainer(), None)
    terminal.on_train_epoch_end(fake_trainer(), None)
    assert capsys.readouterr().out == ""


def test_float32_matmul_precision_is_the_recipes():
    from llavaction.training.callbacks import Float32Matmul

    before = torch.get_float32_matmul_precision()
    try:
        Float32Matmul("high").setup(None, None, "fit")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
