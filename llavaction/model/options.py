"""Typed options of the model: how it is computed and LLaVAction's action supervision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llavaction.utils.checks import check_range


@dataclass(frozen=True)
class ComputeOptions:
    """How the model is computed; none of these changes the results beyond numerical noise.

    Args:
        attn_implementation: 'sdpa', 'flash_attention_2' (GPU with flash-attn), 'flex_attention' (PyTorch's; trains on a
            GPU only, and keeps packed samples apart without a dense mask) or 'eager'.
        activation_checkpointing: recompute vision and LLM blocks in the backward pass.
        compile_blocks: torch.compile each vision and LLM block (the first steps then take longer).
        pack_sequences: run the LLM on a batch's samples packed into one sequence, attention kept within each sample
            (no compute on padding; with sdpa the mask is dense, so meant for flash_attention_2 or flex_attention on a
            GPU).
    """

    attn_implementation: Literal["sdpa", "flash_attention_2", "flex_attention", "eager"] = "sdpa"
    activation_checkpointing: bool = False
    compile_blocks: bool = False
    pack_sequences: bool = False


@dataclass(frozen=True)
class ActionSupervision:
    """LLaVAction's action token(s) with verb, noun and action heads, trained beside the LM loss.

    Args:
        mode: 'one_token' (one learned token after the visual tokens), 'three_tokens' (verb, noun, action) or
            'newline' (the last newline token); None: off (a checkpoint's own heads are then kept frozen and exported
            unchanged).
        types: verb, noun and action head sizes (the action head indexes the dense action vocabulary).
        head_layers: LLM layers the heads read: 'last', 'first' (after the first decoder layer) or 'all'.
        loss_weight: w in loss = LM + w * head loss.
        normalization: head loss over the layers read: 'reference' sums (0.5 CE_verb + 0.5 CE_noun + 0.1 CE_action)
            over them and divides by their number + 1, as the released code (0.05 a unit of CE with one layer: the
            published model); 'mean' takes their mean.
    """

    mode: Literal["one_token", "three_tokens", "newline"] | None = None
    types: tuple[int, int, int] = (97, 300, 3806)
    head_layers: Literal["last", "first", "all"] = "last"
    loss_weight: float = 0.1
    normalization: Literal["reference", "mean"] = "reference"

    def __post_init__(self):
        check_range("model.action.loss_weight", self.loss_weight, 0.0)
