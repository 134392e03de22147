"""Training-step throughput, MFU and the FSDP2 memory plan of the LLaVA-Video and Qwen2.5-VL shapes.

    python benchmarks/gpu_step.py                 # on a GPU: LLaVA-Video 0.5b and 7b, Qwen2.5-VL-7B, 16 and 64 frames
    python benchmarks/gpu_step.py --smoke         # anywhere: tiny shapes on the CPU, to check the script runs
    python benchmarks/gpu_step.py --memory-plan   # the per-GPU memory plan only (no device needed)
    python benchmarks/gpu_step.py --budget-s 480 --out rows.jsonl   # within a lease: most telling rows first

FLOPs per training step: llavaction.training.flops (the count, per sample, is explained there; the same function gives
the perf/mfu that training logs).
MFU = FLOPs per step / (step time * peak dense bf16 FLOP/s of the card, looked up by its name).
When the 7B does not fit one GPU it runs with fewer LLM layers and the FLOPs are those of the layers run (stated).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import replace

import torch
from torch import nn
from transformers.utils import is_flash_attn_2_available

from llavaction.model.families import DEFAULT_BACKBONE
from llavaction.model.family import REGISTRY
from llavaction.model.llava_video import preset, vit_layer_params
from llavaction.prompts.formats import ClipTiming
from llavaction.training.flops import llm_layer_params, peak_bf16_flops, training_flops
from llavaction.training.sharding import checkpoint_blocks, compile_blocks, shard_blocks
from llavaction.utils.constants import IGNORE_INDEX

TEXT_TOKENS, ANSWER_TOKENS = 160, 8  # an MQA prompt with five options, and its answer
CLIP_SECONDS = 3.0


def shape(name: str, attention: str = "sdpa"):
    """(family, preset) by name: `family:preset` ('qwen2_5_vl:7b', 'internvl:3-8b'), or LLaVA-Video's preset alone
    ('tiny', '0.5b', '7b')."""
    backbone, _, size = name.rpartition(":")
    family = REGISTRY.get(backbone or DEFAULT_BACKBONE)
    return family, replace(family.preset(size), attn_implementation=attention)


def visual_ids(family, config, frames: int) -> list[int]:
    """The ids a clip takes in a prompt (LLaVA-Video: its one placeholder), at the family's decode size."""
    size = family.frame_size(config)
    return config.chat_format().visual_ids(ClipTiming.even(frames, CLIP_SECONDS), size, lambda text: [0] * 6)[0]


def sequence_length(family, config, frames: int) -> int:
    return len(visual_ids(family, config, frames)) + config.extra_tokens(frames) + TEXT_TOKENS


def step_flops(family, config, frames: int, batch: int) -> float:
    """Model FLOPs of a step over `batch` equal samples (llavaction.training.flops explains the count)."""
    lengths = [sequence_length(family, config, frames)] * batch
    return training_flops(family, config, frames, lengths, ANSWER_TOKENS * batch)


def memory_plan(gpus: int, frames: int, batch: int, checkpointing: bool, bytes_per_param: int = 8) -> dict[str, float]:
    """Per-GPU GiB for the 7B recipe under FSDP2 full sharding. bf16-true training holds 8 bytes a parameter (bf16
    weight, gradient and both AdamW moments); fp32 master weights with bf16 compute would hold 16. Activations follow
    the usual per-layer estimate for flash attention (no S^2 term): ~34*S*d bytes for a 4d MLP, scaled to Qwen2-7B's
    5.3d MLP (~40*S*d); with checkpointing only each block's input (2*S*d bytes) stays, plus one block recomputed."""
    config = preset("7b")
    text, vision = config.text, config.vision
    d, layers = text["hidden_size"], text["num_hidden_layers"]
    params = (
        text["vocab_size"] * d * 2
        + layers * llm_layer_params(text)
        + config.vision_layers_kept * vit_layer_params(vision)
    )
    s = config.visual_tokens(frames) + TEXT_TOKENS
    dv, p = vision["hidden_size"], (vision["image_size"] // vision["patch_size"]) ** 2
    per_layer_llm, per_layer_vit = 40 * s * d, 34 * frames * p * dv
    if checkpointing:
        acts = layers * 2 * s * d + config.vision_layers_kept * 2 * frames * p * dv + max(per_layer_llm, per_layer_vit)
    else:
        acts = layers * per_layer_llm + config.vision_layers_kept * per_layer_vit
    gib = 2**30
    sharded = params / gpus
    return {
        "params": 2 * sharded / gib,
        "grads": 2 * sharded / gib,
        "adamw": (bytes_per_param - 4) * sharded / gib,
        "activations": batch * acts / gib,
        "gathered_block": 2 * 2 * llm_layer_params(text) / gib,
        "total_params_billion": params / 1e9,
    }


def print_memory_plan() -> None:
    print("7B recipe, FSDP2 full sharding, bf16-true (8 bytes a parameter), batch 1, 64 frames; GiB per GPU")
    print(f"{'GPUs':>5} {'params':>7} {'grads':>6} {'AdamW':>6} {'act+AC':>7} {'act-AC':>7} {'total+AC':>9}")
    for gpus in (8, 16, 128):
        on, off = memory_plan(gpus, 64, 1, True), memory_plan(gpus, 64, 1, False)
        state = on["params"] + on["grads"] + on["adamw"] + on["gathered_block"]
        print(
            f"{gpus:>5} {on['params']:7.1f} {on['grads']:6.1f} {on['adamw']:6.1f} {on['activations']:7.1f} "
            f"{off['activations']:7.1f} {state + on['activations']:9.1f}"
        )
    print("largest frames x batch within 80 GB (8 GPUs, checkpointing on, 10 GiB kept free for the allocator):")
    for frames in (16, 32, 64, 128):
        fits = [
            b
            for b in range(1, 65)
            if sum(v for k, v in memory_plan(8, frames, b, True).items() if k != "total_params_billion") <= 70
        ]
        print(f"  {frames:>3} frames: batch {max(fits) if fits else 0}")


def make_batch(family, config, frames: int, batch: int, device) -> dict:
    visual = visual_ids(family, config, frames)
    length = TEXT_TOKENS + ANSWER_TOKENS + len(visual)
    ids = torch.randint(0, min(config.text["vocab_size"], 1000), (batch, length), device=device)
    ids[:, 8 : 8 + len(visual)] = torch.tensor(visual, device=device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
    size = family.frame_size(config)
    clips = torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, device=device)
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": torch.ones_like(ids),
        "clips": clips,
        "timings": [ClipTiming.even(frames, CLIP_SECONDS)] * batch,
    }


def time_config(
    name: str,
    frames: int,
    batch: int,
    attention: str,
    checkpointing: bool,
    compiled: bool,
    fsdp: bool,
    device,
    steps: int,
    llm_layers: int | None,
) -> dict:
    family, config = shape(name, attention)
    if llm_layers is not None:
        config.text["num_hidden_layers"] = llm_layers
    # The recipe's precision: fp32 master weights and AdamW states, bf16 compute (FSDP2's bf16 parameter gathering
    # when sharded, autocast otherwise).
    cuda = device.type == "cuda"
    with torch.device(device):
        model = family.model_class(config)
    if checkpointing:
        checkpoint_blocks(model, family.block_types)
    if compiled:
        compile_blocks(model, family.block_types)
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh

        shard_blocks(model, init_device_mesh(device.type, (1,)), family.block_types, bf16_compute=cuda)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
    data = make_batch(family, config, frames, batch, device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and not fsdp):
            out = model(
                data["input_ids"],
                model.preprocess(data["clips"], data["timings"]),
                data["attention_mask"],
                data["labels"],
            )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (and compilation)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens = batch * (sequence_length(family, config, frames) + ANSWER_TOKENS)
    peak = peak_bf16_flops(torch.cuda.get_device_name()) if device.type == "cuda" else None
    flops = step_flops(family, config, frames, batch)
    return {
        "preset": name,
        "llm_layers": config.text["num_hidden_layers"],
        "frames": frames,
        "batch": batch,
        "attention": attention,
        "checkpointing": checkpointing,
        "compile": compiled,
        "fsdp": fsdp,
        "step_s": seconds,
        "samples_s": batch / seconds,
        "tokens_s": tokens / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
        "mfu": flops / seconds / peak if peak else float("nan"),
    }


def parameters(member: nn.Module | nn.Parameter) -> list[nn.Parameter]:
    return [member] if isinstance(member, nn.Parameter) else list(member.parameters())


def default_7b_layers(card_bytes: int, name: str = "7b", bytes_per_param: int = 16) -> int:
    """LLM layers of a 7B shape whose fp32 weights, gradients and AdamW moments (16 bytes a parameter, the recipe's
    precision) fill at most half of one card, leaving the rest to 64-frame activations."""
    family, config = shape(name)
    text = config.text
    with torch.device("meta"):  # the tower's parameters counted, not allocated
        parts = family.model_class(config).parts()
    tower = sum(p.numel() for member in parts["vision_tower"] for p in parameters(member))
    fixed = 2 * text["vocab_size"] * text["hidden_size"] + tower
    fitting = (card_bytes / 2 / bytes_per_param - fixed) // llm_layer_params(text)
    return int(max(1, min(text["num_hidden_layers"], fitting)))


def config_grid(cuda: bool, layers_7b: int | None) -> list[tuple]:
    """(preset, LLM layers, frames, attention, checkpointing, compile, fsdp), most telling first, so that a time
    budget keeps the rows that matter: the 7B recipe's shape at 64 frames, then its switches one at a time."""
    if not cuda:
        return [
            (name, None, 8, "sdpa", ac, False, fsdp)
            for name in ("tiny", "qwen2_5_vl:tiny")
            for ac in (False, True)
            for fsdp in (False, True)
        ]
    attentions = (("flash_attention_2",) if is_flash_attn_2_available() else ()) + ("sdpa", "flex_attention")
    grid = [
        (name, layers, frames, attention, ac, compiled, fsdp)
        for name, layers in (("7b", layers_7b), ("qwen2_5_vl:7b", layers_7b), ("0.5b", None))
        for frames in (64, 16)
        for attention in attentions
        for ac in (True, False)
        for compiled in (False, True)
        for fsdp in (True, False)
    ]
    # the recipe's configuration and single-switch changes of it before combinations of changes
    recipe = ("7b", layers_7b, 64, attentions[0], True, False, True)  # the 7B recipe's switches
    order = {"7b": 0, "qwen2_5_vl:7b": 1, "0.5b": 2}
    return sorted(grid, key=lambda row: (row[2] != 64, order[row[0]], sum(a != b for a, b in zip(row[3:], recipe[3:]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--memory-plan", action="store_true", help="print the memory plan and stop")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--llm-layers-7b",
        type=int,
        default=None,
        help="run the 7B with this many LLM layers (default: as many as fit half the card)",
    )
    parser.add_argument("--budget-s", type=float, default=None, help="start no configuration after this many seconds")
    parser.add_argument("--out", help="also write each row as a JSON line to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    print_memory_plan()
    if args.memory_plan:
        return
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if not torch.distributed.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    layers_7b = args.llm_layers_7b
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        layers_7b = layers_7b or default_7b_layers(torch.cuda.get_device_properties(0).total_memory)
        print(
            f"device: {name}, peak bf16 {peak_bf16_flops(name)}; 7B shape with {layers_7b} of 28 LLM layers (FLOPs "
            f"counted for the layers run); flash-attn {'available' if is_flash_attn_2_available() else 'absent'}"
        )
    else:
        print("device: CPU (smoke mode: tiny shapes; MFU needs a GPU)")
    print(
        f"{'preset':>13} {'layers':>6} {'frames':>6} {'attn':>18} {'AC':>4} {'comp':>4} {'fsdp':>4} "
        f"{'step s':>8} {'samples/s':>9} {'tokens/s':>9} {'peak GiB':>8} {'MFU':>6}",
        flush=True,
    )
    sink = open(args.out, "a") if args.out else None
    for name, layers, frames, attention, checkpointing, compiled, fsdp in config_grid(device.type == "cuda", layers_7b):
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
            print(f"time budget of {args.budget_s:.0f} s spent: the remaining configurations were not run")
            break
        try:
            row = time_config(name, frames, 1, attention, checkpointing, compiled, fsdp, device, args.steps, layers)
        except (RuntimeError, torch.OutOfMemoryError) as err:
            print(
                f"{name:>6} {frames:>6} {attention:>18} AC={checkpointing} compile={compiled} fsdp={fsdp}: "
                f"{str(err).splitlines()[0][:80]}",
                flush=True,
            )
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
            continue
        mfu = "-" if math.isnan(row["mfu"]) else f"{100 * row['mfu']:.1f}%"
        switches = " ".join(f"{'on' if flag else 'off':>4}" for flag in (checkpointing, compiled, fsdp))
        print(
            f"{row['preset']:>13} {row['llm_layers']:>6} {frames:>6} {attention:>18} {switches} {row['step_s']:8.3f} "
            f"{row['samples_s']:9.2f} {row['tokens_s']:9.0f} {row['peak_gib']:8.1f} {mfu:>6}",
            flush=True,
        )
        if sink:
            record = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
            sink.write(json.dumps(record | {"device": device_name}) + "\n")
            sink.flush()
    if sink:
        sink.close()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
