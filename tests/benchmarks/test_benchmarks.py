"""The benchmark scripts run and print their figures; the FLOP count and the memory plan of the GPU grid."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flop_count_and_memory_plan():
    from llavaction.model.llava_video import LLAVA_VIDEO, preset

    gpu_step = load("gpu_step")
    plan = gpu_step.memory_plan(8, 64, 1, checkpointing=True)
    assert 7.5 < plan["total_params_billion"] < 8.5
    assert plan["params"] == pytest.approx(plan["total_params_billion"] * 1e9 * 2 / 8 / 2**30)
    assert gpu_step.memory_plan(8, 64, 1, checkpointing=False)["activations"] > 5 * plan["activations"]
    flops = gpu_step.step_flops(LLAVA_VIDEO, preset("7b"), 64, 1)
    # about 6 x 8e9 parameters x 13,600 tokens, plus attention
    assert 6.0e14 < flops < 1.5e15
    assert gpu_step.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12 and gpu_step.peak_bf16_flops("CPU") is None


def test_the_reference_megabatch_on_hand_made_lengths(monkeypatch):
    """group_by_modality_length as the reference runs it (world 2, accumulation 2, batch 2: megabatches of 8): each
    megabatch sorted longest first and split into 4 chunks of balanced length; chunk c is rank c mod 2's micro-batch
    at micro-step c div 2."""
    import random

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    padding = load("padding")
    lengths = [10, 80, 30, 70, 20, 60, 40, 50]
    # the longest four open the chunks, then each next goes to the least-filled open chunk: 90 tokens in each
    assert padding.even_chunks(sorted(range(8), key=lambda i: -lengths[i]), lengths, 4) == [
        [1, 0],  # 80 + 10
        [3, 4],  # 70 + 20
        [5, 2],  # 60 + 30
        [7, 6],  # 50 + 40
    ]
    no_shuffle = random.Random(0)
    no_shuffle.shuffle = lambda items: None
    steps = padding.reference_micro_batches(lengths, batch=2, world=2, accumulate=2, rng=no_shuffle)
    assert steps == [[[80, 10], [70, 20]], [[60, 30], [50, 40]]]  # [micro-step][rank] -> lengths
    # it balances the ranks' real tokens, not padding: 160 padded tokens for 360 real ones
    assert padding.across_ranks(steps) == pytest.approx((160 / 360, (160 + 120) / (150 + 110) - 1))


@pytest.mark.parametrize(
    "name, args",
    [
        ("cpu_step", ["--steps", "1", "--batch-size", "2"]),
        ("cpu_step", ["--steps", "1", "--batch-size", "2", "--pack"]),
        ("eval", ["--videos", "1", "--batch-size", "4", "--max-new-tokens", "2"]),
        pytest.param("loader", ["--videos", "1", "--samples", "8"], marks=pytest.mark.slow),
        ("replay_extract", ["--videos", "1", "--seconds", "3", "--frames", "4", "--size", "64"]),
        ("plan", ["--scale", "0.01"]),
        ("resume", ["--scale", "0.01"]),
        ("onevision_export", ["--prompts", "2", "--frames", "2"]),
        ("new_variant", ["--videos", "1", "--frames", "4", "--size", "32"]),
        pytest.param("reproduce", ["--segments", "2", "--seconds", "30"], marks=pytest.mark.slow),
    ],
)
def test_cpu_benchmarks_run(name, args):
    """The CPU benchmark scripts run end to end on small settings and end with their JSON figures (in their own
    process: they set torch's threads and grad mode as a benchmark should)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(value > 0 for key, value in figures.items() if not key.endswith("_decodes"))
    if name == "new_variant":  # a question variant over a store opens no video; the store itself did
        assert figures["variant_decodes"] == 0 and figures["store_decodes"] > 0


def test_gpu_grid_puts_the_recipe_first_and_fits_the_7b_to_the_card():
    gpu_step = load("gpu_step")
    # fp32 master weights, gradients and AdamW moments (16 bytes a parameter) in half the card
    assert 1 <= gpu_step.default_7b_layers(80 * 10**9) < gpu_step.default_7b_layers(141 * 10**9) < 28
    assert gpu_step.default_7b_layers(141 * 10**9, bytes_per_param=8) == 28
    assert 1 <= gpu_step.default_7b_layers(80 * 10**9, "qwen2_5_vl:7b") < 28
    grid = gpu_step.config_grid(cuda=True, layers_7b=14)
    first = grid[0]
    assert first[:3] == ("7b", 14, 64) and first[4:] == (True, False, True)
    assert len(grid) == len(set(grid))
    # every 64-frame row before any 16-frame one; at each frame count LLaVA-Video 7B, then Qwen2.5-VL-7B, then 0.5B
    frames = [row[2] for row in grid]
    assert frames == sorted(frames, reverse=True)
    names = [row[0] for row in grid if row[2] == 64]
    assert names == sorted(names, key=["7b", "qwen2_5_vl:7b", "0.5b"].index) and "qwen2_5_vl:7b" in names
    assert {row[2] for row in grid if row[0] == "qwen2_5_vl:7b"} == {16, 64}
