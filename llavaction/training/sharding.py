"""Which parameters train, FSDP2 wrapping, activation checkpointing and torch.compile by transformer block class;
configs only switch them on. Order, as FSDP2 expects: checkpoint_blocks, then compile_blocks, then shard_blocks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer, Qwen2_5_VLVisionBlock
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextDecoderLayer, Qwen3VLVisionBlock
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from llavaction.training.options import TrainableParts

# The transformer blocks of every backbone: LLaVA-Video's SigLIP layers and Qwen2 decoder layers, Qwen2.5-VL's and
# Qwen3-VL's vision blocks and decoder layers.
BLOCK_CLASSES = (
    SiglipEncoderLayer,
    Qwen2DecoderLayer,
    Qwen2_5_VLVisionBlock,
    Qwen2_5_VLDecoderLayer,
    Qwen3VLVisionBlock,
    Qwen3VLTextDecoderLayer,
)


def set_trainable(model: nn.Module, parts: TrainableParts, heads: bool) -> None:
    """requires_grad by part (the model's parts(), named the same for every backbone): the vision tower, the
    projector, the LLM, and the action token(s) and heads only when the action loss is on. LLaVA-Video's
    post-layernorm never trains (its features are taken before it)."""
    train = {"vision_tower": parts.vision_tower, "projector": parts.projector, "llm": parts.llm, "action_heads": heads}
    for name, members in model.parts().items():
        for member in members:
            member.requires_grad_(train[name])
    tower = getattr(model, "vision_tower", None)
    if tower is not None:
        tower.post_layernorm.requires_grad_(False)


def is_block(module: nn.Module) -> bool:
    return isinstance(module, BLOCK_CLASSES)


def checkpoint_blocks(model: nn.Module) -> None:
    """Recompute each vision and LLM block in the backward pass instead of keeping its activations."""
    apply_activation_checkpointing(
        model,
        checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=is_block,
    )


def compile_blocks(model: nn.Module, backend: str | Callable = "inductor") -> None:
    """torch.compile each vision and LLM block in place (inside its checkpoint wrapper, if any): norms, activations and
    rotary embeddings fuse, while the Python between blocks (splicing, FSDP2's hooks) stays eager."""
    for module in model.modules():
        if is_block(module):
            module.compile(backend=backend)


def shard_blocks(
    model: nn.Module, mesh, bf16_compute: bool = False, forward_methods: tuple[str, ...] = ("encode_video", "generate")
) -> None:
    """fully_shard every vision and LLM block, then the root (embeddings, projector, newline, head). bf16_compute: the
    recipe's precision, fp32 master weights and optimizer states with parameters gathered and computed in bf16 and
    gradients reduced in fp32. Root methods called from outside forward (encode_video, to reuse a clip's visual
    tokens; generate) gather the root's parameters too."""
    kwargs = {"mesh": mesh}
    if bf16_compute:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in model.modules():
        if is_block(module):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    for name in forward_methods:
        register_fsdp_forward_method(model, name)
