"""Model FLOPs of a training step and the peak dense bf16 FLOP/s of known GPUs: MFU = FLOPs / (step time x peak).

Counted per sample, forward + backward = 3 x forward (1 x for a frozen vision tower, whose backward is skipped):
  LLM     2 * N_llm * S            dense matmuls over the S tokens of the sample (N_llm: decoder-layer parameters)
        + 2 * L * S^2 * d          causal attention (QK^T and AV, each S^2/2 * d multiply-adds)
        + 2 * d * V * S_answer     the vocabulary projection, computed only where there are labels
  vision  F * (2 * N_vit * P + 4 * L_vit * P^2 * d_vit)   F frames of P patches, bidirectional attention
        + F * 2 * N_proj * P       the projector on every patch token
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
    config: LlavaVideoConfig,
    frames: int,
    sequence_lengths: Sequence[int],
    supervised_tokens: int,
    vision_trained: bool = True,
) -> float:
    """Model FLOPs of one training step: one sample per LLM sequence length (visual tokens included), `frames` frames
    each, `supervised_tokens` labelled tokens in all."""
    text, vision = config.text, config.vision
    d, layers = text["hidden_size"], text["num_hidden_layers"]
    n_llm = layers * llm_layer_params(text)
    llm = sum(2 * n_llm * s + 2 * layers * s * s * d for s in sequence_lengths)
    llm += 2 * d * text["vocab_size"] * supervised_tokens
    dv, lv = vision["hidden_size"], config.vision_layers_kept
    p = (vision["image_size"] // vision["patch_size"]) ** 2
    per_frame = 2 * lv * vit_layer_params(vision) * p + 4 * lv * p * p * dv + 2 * (dv * d + d * d) * p
    vit = len(sequence_lengths) * frames * per_frame
    return 3.0 * llm + (3.0 if vision_trained else 1.0) * vit
