"""Training-step performance: FLOPs per sample and the throughput StepPerformance logs."""

import pytest

from tests.helpers import make_batch


def test_training_flops_add_up_per_sample():
    from llavaction.model import preset
    from llavaction.training.flops import peak_bf16_flops, training_flops

    config = preset("0.5b")
    one, other = training_flops(config, 16, [3000], 5), training_flops(config, 16, [4000], 7)
    assert training_flops(config, 16, [3000, 4000], 12) == pytest.approx(one + other)
    assert training_flops(config, 16, [3000], 5, vision_trained=False) < one
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12 and peak_bf16_flops("NVIDIA H200") == 989e12


def test_step_performance_logs_throughput(demo_dir):
    from types import SimpleNamespace

    import torch

    from llavaction.model import preset
    from llavaction.training.performance import StepPerformance

    logged = {}
    module = SimpleNamespace(
        config=preset("tiny"),
        hparams=SimpleNamespace(train_vision_tower=True),
        log_dict=lambda metrics, batch_size: logged.update(metrics),
    )
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    batch = make_batch(2, attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    callback = StepPerformance()
    callback.on_train_start(trainer, module)
    callback.on_train_batch_start(trainer, module, batch, 0)
    callback.on_train_batch_end(trainer, module, None, batch, 0)
    visual = preset("tiny").visual_tokens(4)
    assert logged["perf/tokens_per_s"] / logged["perf/samples_per_s"] == pytest.approx((7 + 2 * (visual - 1)) / 2)
    assert "perf/mfu" not in logged  # a CPU has no entry in the peak table


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_vision_flops_match_torchs_count_of_the_encoder(backbone):
    """The MFU figure's vision term against torch's FLOP counter over the real encoder (windows, mergers, DeepStack)
    at three clip shapes; the formula leaves out norms and rotary embeddings, a few per cent."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from llavaction.model.qwen_config import qwen_preset
    from llavaction.model.qwen_vl import QwenVLModel
    from llavaction.training.flops import qwen_vision_flops

    config = qwen_preset(backbone, "tiny")
    model = QwenVLModel(config).eval()
    for frames, size in ((4, 32), (8, 64), (6, 96)):
        pixels = model.preprocess(torch.randint(0, 256, (1, frames, size, size, 3), dtype=torch.uint8))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.encode_video(pixels)
        assert qwen_vision_flops(config, frames, size) == pytest.approx(counter.get_total_flops(), rel=0.08)
