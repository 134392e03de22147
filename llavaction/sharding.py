"""FSDP2 wrapping, activation checkpointing and torch.compile by transformer block class; configs only switch them on.
Order, as FSDP2 expects: checkpoint_blocks, then compile_blocks, then shard_blocks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

BLOCK_CLASSES = (SiglipEncoderLayer, Qwen2DecoderLayer)


def is_block(module: nn.Module) -> bool:
    return isinstance(module, BLOCK_CLASSES)


def checkpoint_blocks(model: nn.Module) -> None:
    """Recompute each vision and LLM block in the backward pass instead of keeping its activations."""
    apply_activation_checkpointing(
        model, checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=is_block,
    )


def compile_blocks(model: nn.Module, backend: str | Callable = "inductor") -> None:
    """torch.compile each vision and LLM block in place (inside its checkpoint wrapper, if any): norms, activations and
    rotary embeddings fuse, while the Python between blocks (splicing, FSDP2's hooks) stays eager."""
    for module in model.modules():
        if is_block(module):
            module.compile(backend=backend)


def shard_blocks(model: nn.Module, mesh, mp_policy: MixedPrecisionPolicy | None = None,
                 forward_methods: tuple[str, ...] = ("encode_video",)) -> None:
    """fully_shard every vision and LLM block, then the root (embeddings, projector, newline, head). Root methods
    called from outside forward (encode_video, to reuse a clip's visual tokens) gather the root's parameters too."""
    kwargs = {"mesh": mesh} | ({"mp_policy": mp_policy} if mp_policy is not None else {})
    for module in model.modules():
        if is_block(module):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    for name in forward_methods:
        register_fsdp_forward_method(model, name)
