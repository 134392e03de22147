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

from llavaction.training.options import TrainableParts

Blocks = tuple[type[nn.Module], ...]  # a model family's transformer block classes (ModelFamily.block_types)


def set_trainable(model: nn.Module, parts: TrainableParts, heads: bool) -> None:
    """requires_grad by part (the model's parts(), named the same for every family): the vision tower, the
    projector, the LLM, and the action token(s) and heads only when the action loss is on (what no part lists never
    trains)."""
    train = {"vision_tower": parts.vision_tower, "projector": parts.projector, "llm": parts.llm, "action_heads": heads}
    for name, members in model.parts().items():
        for member in members:
            member.requires_grad_(train[name])


def checkpoint_blocks(model: nn.Module, blocks: Blocks) -> None:
    """Recompute each vision and LLM block in the backward pass instead of keeping its activations."""
    apply_activation_checkpointing(
        model,
        checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda module: isinstance(module, blocks),
    )


def compile_blocks(model: nn.Module, blocks: Blocks, backend: str | Callable = "inductor") -> None:
    """torch.compile each vision and LLM block in place (inside its checkpoint wrapper, if any): norms, activations and
    rotary embeddings fuse, while the Python between blocks (splicing, FSDP2's hooks) stays eager."""
    for module in model.modules():
        if isinstance(module, blocks):
            module.compile(backend=backend)


def shard_blocks(
    model: nn.Module,
    mesh,
    blocks: Blocks,
    bf16_compute: bool = False,
    forward_methods: tuple[str, ...] = ("encode_video", "generate"),
) -> None:
    """fully_shard every vision and LLM block, then the root (embeddings, projector, newline, head). bf16_compute: the
    recipe's precision, fp32 master weights and optimizer states with parameters gathered and computed in bf16 and
    gradients reduced in fp32. Root methods called from outside forward (encode_video, to reuse a clip's visual
    tokens; generate) gather the root's parameters too."""
    kwargs = {"mesh": mesh}
    if bf16_compute:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in model.modules():
        if isinstance(module, blocks):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    for name in forward_methods:
        register_fsdp_forward_method(model, name)
