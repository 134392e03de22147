"""Training-step performance: FLOPs per sample and the throughput StepPerformance logs."""

import pytest

from tests.helpers import make_batch


def test_training_flops_add_up_per_sample():
    from llavaction.model.llava_video import LLAVA_VIDEO, preset
    from llavaction.training.flops import peak_bf16_flops, training_flops

    config = preset("0.5b")
    one, other = training_flops(LLAVA_VIDEO, config, 16, [3000], 5), training_flops(LLAVA_VIDEO, config, 16, [4000], 7)
    assert training_flops(LLAVA_VIDEO, config, 16, [3000, 4000], 12) == pytest.approx(one + other)
    assert training_flops(LLAVA_VIDEO, config, 16, [3000], 5, vision_trained=False) < one
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12 and peak_bf16_flops("NVIDIA H200") == 989e12


def test_step_performance_logs_throughput(demo_dir):
    from types import SimpleNamespace

    import torch

    from llavaction.model.llava_video import LLAVA_VIDEO, preset
    from llavaction.training.performance import StepPerformance

    logged = {}
    module = SimpleNamespace(
        family=LLAVA_VIDEO,
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


@pytest.mark.parametrize("backbone", ["llava_video", "qwen2_5_vl", "qwen3_vl", "internvl"])
def test_vision_flops_match_torchs_count_of_the_encoder(backbone):
    """Each family's vision term of the MFU figure against torch's FLOP counter over its real encoder and projector
    (Qwen: windows, mergers, DeepStack) at three clip shapes; the formulas leave out norms, rotary embeddings and
    pooling, a few per cent."""
    from dataclasses import replace

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from llavaction.model.family import REGISTRY

    family = REGISTRY.get(backbone)
    config = replace(family.preset("tiny"), attn_implementation="eager")  # torch counts eager attention's matmuls
    model = family.model_class(config).eval()
    for frames, size in ((4, 32), (8, 64), (6, 96)):
        pixels = model.preprocess(torch.randint(0, 256, (1, frames, size, size, 3), dtype=torch.uint8))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.encode_video(pixels)
        assert family.vision_flops(config, frames, size) == pytest.approx(counter.get_total_flops(), rel=0.08)
