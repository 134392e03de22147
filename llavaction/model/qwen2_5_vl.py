"""Qwen2.5-VL as a model family (transformers' Qwen2_5_VLForConditionalGeneration)."""

from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer, Qwen2_5_VLVisionBlock

from llavaction.model.family import REGISTRY
from llavaction.model.qwen_vl.spec import qwen_family

QWEN2_5_VL = REGISTRY.register(
    qwen_family(
        "qwen2_5_vl",
        "Qwen2.5-VL: its windowed ViT, merger and Qwen2.5 LLM with M-RoPE (transformers' own classes)",
        (Qwen2_5_VLVisionBlock, Qwen2_5_VLDecoderLayer),
        vllm="Qwen2_5_VLForConditionalGeneration",
    )
)
