"""Model FLOPs of a training step and the peak dense bf16 FLOP/s of known GPUs: MFU = FLOPs / (step time x peak).

Counted per sample, forward + backward = 3 x forward (1 x for a frozen vision tower, whose backward is skipped):
  LLM     2 * N_llm * S            dense matmuls over the S tokens of the sample (N_llm: decoder-layer parameters)
        + 2 * L * S^2 * d          causal attention (QK^T and AV, each S^2/2 * d multiply-adds)
        + 2 * d * V * S_answer     the vocabulary projection, computed only where there are labels
  vision  the family's vision encoder and projector on each clip (ModelFamily.vision_flops: LLaVA-Video and InternVL
          every frame through their tower, Qwen its patches within temporal groups and windows)
Padding is not counted: it costs time but is no model work, so it lowers MFU.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """One decoder layer: q and o projections, grouped k and v projections (heads of head_dim, d / heads unless the
    config says), the gated MLP."""
    d, heads = text["hidden_size"], text["num_attention_heads"]
    head_dim = text.get("head_dim") or d // heads
    kv = text["num_key_value_heads"] * head_dim
    return 2 * d * heads * head_dim + 2 * d * kv + 3 * d * text["intermediate_size"]


def training_flops(
    family,
    config,
    frames: int,
    sequence_lengths: Sequence[int],
    supervised_tokens: int,
    vision_trained: bool = True,
    frame_size: int | None = None,
) -> float:
    """Model FLOPs of one training step: one sample per LLM sequence length (visual tokens included), `frames` frames
    of `frame_size` pixels each (default: the side the family decodes clips at) through the family's vision encoder
    and projector (family.vision_flops), `supervised_tokens` labelled tokens in all."""
    text = config.text
    d, layers = text["hidden_size"], text["num_hidden_layers"]
    n_llm = layers * llm_layer_params(text)
    llm = sum(2 * n_llm * s + 2 * layers * s * s * d for s in sequence_lengths)
    llm += 2 * d * text["vocab_size"] * supervised_tokens
    per_clip = family.vision_flops(config, frames, frame_size or family.frame_size(config))
    vit = len(sequence_lengths) * per_clip
    return 3.0 * llm + (3.0 if vision_trained else 1.0) * vit
