"""Model FLOPs of a training step and the peak dense bf16 FLOP/s of known GPUs: MFU = FLOPs / (step time x peak).

Counted per sample, forward + backward = 3 x forward (1 x for a frozen vision tower, whose backward is skipped):
  LLM     2 * N_llm * S            dense matmuls over the S tokens of the sample (N_llm: decoder-layer parameters)
        + 2 * L * S^2 * d          causal attention (QK^T and AV, each S^2/2 * d multiply-adds)
        + 2 * d * V * S_answer     the vocabulary projection, computed only where there are labels
  vision  LLaVA-Video: F * (2 * N_vit * P + 4 * L_vit * P^2 * d_vit)   F frames of P patches, full attention
        + F * 2 * N_proj * P       the projector on every patch token
          Qwen: 2 * N_vit * P + attention within each temporal group (Qwen2.5-VL: in windows but for its full-attention
          layers) + the merger(s) on the P / merge^2 merged tokens; P = the clip's groups x patch rows x columns
Padding is not counted: it costs time but is no model work, so it lowers MFU.
"""

from __future__ import annotations

from collections.abc import Sequence

from llavaction.model.config import LlavaVideoConfig

# Dense (not sparse) bf16 tensor-core peaks from the vendors' data sheets, matched against the CUDA device name.
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "B200": 2250e12,
}


def peak_bf16_flops(device_name: str) -> float | None:
    """The card's peak for a device name such as 'NVIDIA H100 80GB HBM3'; None for a card not in the table."""
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_BF16_FLOPS[key]
    return None


def llm_layer_params(text: dict) -> int:
    """One Qwen2 decoder layer: q and o projections, grouped k and v projections, the gated MLP."""
    d = text["hidden_size"]
    kv = d * text["num_key_value_heads"] // text["num_attention_heads"]
    return 2 * d * d + 2 * d * kv + 3 * d * text["intermediate_size"]


def vit_layer_params(vision: dict) -> int:
    """One SigLIP encoder layer: q, k, v and output projections, the two-matrix MLP."""
    d = vision["hidden_size"]
    return 4 * d * d + 2 * d * vision["intermediate_size"]


def training_flops(
    config,
    frames: int,
    sequence_lengths: Sequence[int],
    supervised_tokens: int,
    vision_trained: bool = True,
    frame_size: int | None = None,
) -> float:
    """Model FLOPs of one training step: one sample per LLM sequence length (visual tokens included), `frames` frames
    of `frame_size` pixels each (a Qwen backbone's grid follows it; default its decode size), `supervised_tokens`
    labelled tokens in all."""
    text = config.text
    d, layers = text["hidden_size"], text["num_hidden_layers"]
    n_llm = layers * llm_layer_params(text)
    llm = sum(2 * n_llm * s + 2 * layers * s * s * d for s in sequence_lengths)
    llm += 2 * d * text["vocab_size"] * supervised_tokens
    if isinstance(config, LlavaVideoConfig):
        vision = config.vision
        dv, lv = vision["hidden_size"], config.vision_layers_kept
        p = (vision["image_size"] // vision["patch_size"]) ** 2
        per_clip = frames * (2 * lv * vit_layer_params(vision) * p + 4 * lv * p * p * dv + 2 * (dv * d + d * d) * p)
    else:
        per_clip = qwen_vision_flops(config, frames, frame_size or config.frame_size)
    vit = len(sequence_lengths) * per_clip
    return 3.0 * llm + (3.0 if vision_trained else 1.0) * vit


def qwen_vision_flops(config, frames: int, frame_size: int) -> float:
    """A Qwen backbone's vision encoder and merger(s) on one clip (forward)."""
    vision, rule = config.vision, config.rule
    groups, rows, columns = rule.grid(frames, frame_size, frame_size)
    per_group, patches = rows * columns, groups * rows * columns
    d, depth, inner = vision["hidden_size"], vision["depth"], vision["intermediate_size"]
    gated = config.backbone == "qwen2_5_vl"  # Qwen2.5-VL's vision MLP is gated (three matrices), Qwen3-VL's is not
    layer = 4 * d * d + (3 if gated else 2) * d * inner
    embed = 3 * rule.temporal_patch_size * rule.patch_size**2 * d
    full_layers = len(vision.get("fullatt_block_indexes") or []) if gated else depth
    window = (vision.get("window_size", 0) // rule.patch_size) ** 2 or per_group
    attention = 4 * d * groups * per_group * (full_layers * per_group + (depth - full_layers) * min(window, per_group))
    merged, wide = patches // rule.merge_size**2, d * rule.merge_size**2
    mergers = 1 + len(vision.get("deepstack_visual_indexes") or [])
    merger = mergers * merged * (wide * wide + wide * vision["out_hidden_size"])
    return 2.0 * patches * (depth * layer + embed) + attention + 2.0 * merger
