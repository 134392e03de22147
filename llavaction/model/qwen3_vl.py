"""Qwen3-VL as a model family (transformers' Qwen3VLForConditionalGeneration)."""

from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextDecoderLayer, Qwen3VLVisionBlock

from llavaction.model.family import REGISTRY
from llavaction.model.qwen_vl.spec import qwen_family

QWEN3_VL = REGISTRY.register(
    qwen_family(
        "qwen3_vl",
        "Qwen3-VL: its ViT with deepstack mergers, timestamps a temporal group and Qwen3 LLM with interleaved M-RoPE",
        (Qwen3VLVisionBlock, Qwen3VLTextDecoderLayer),
        vllm="Qwen3VLForConditionalGeneration",
        lmms_vllm_extra=",is_qwen3_vl=True",  # its video metadata (timestamps) passed to vLLM
    )
)
