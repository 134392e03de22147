"""The architecture a run resolves (a backbone's preset, a starting checkpoint's config, or the architecture a training
checkpoint recorded, with the run's overrides) and the model built from it; training and evaluation resolve it the same
way, so a checkpoint rebuilds exactly the model that was trained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from llavaction.model.checkpoint import ACTION_SUPERVISION_NAMES, read_config
from llavaction.model.config import LlavaVideoConfig, preset
from llavaction.model.llava_video import LlavaVideoModel
from llavaction.model.options import ActionSupervision, ComputeOptions
from llavaction.model.qwen_config import BACKBONE_OF_MODEL_TYPE, QwenVLConfig, qwen_preset, with_token_ids
from llavaction.model.qwen_vl import QwenVLModel
from llavaction.prompts.formats import BACKBONES, QWEN_VISION_TOKENS, Backbone
from llavaction.utils.hub import resolve

ModelConfig = LlavaVideoConfig | QwenVLConfig


def config_from_dict(fields: dict) -> ModelConfig:
    """A recorded architecture (a training checkpoint's hyperparameters): a Qwen config names its backbone."""
    if fields.get("backbone") in ("qwen2_5_vl", "qwen3_vl"):
        return QwenVLConfig.from_dict(fields)
    return LlavaVideoConfig.from_dict(fields)


def backbone_of(config: dict) -> Backbone:
    """The backbone of a checkpoint's config.json, by its model_type."""
    return BACKBONE_OF_MODEL_TYPE.get(config.get("model_type"), "llava_video")


def resolve_architecture(
    preset_name: str | None = "tiny",
    checkpoint: str | None = None,
    architecture: dict | None = None,
    compute: ComputeOptions = ComputeOptions(),
    action: ActionSupervision = ActionSupervision(),
    spatial_pool_mode: str | None = None,
    newline_position: str | None = None,
    backbone: Backbone = "llava_video",
) -> ModelConfig:
    """The model's config: a recorded architecture first, else the starting checkpoint's, else the backbone's preset;
    then the run's attention and action-supervision settings, and LLaVA-Video's pooling and newline (validated by the
    config; the ones a backbone does not have are refused naming the option)."""
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone {backbone!r}: expected one of {', '.join(BACKBONES)}")
    if architecture is not None:
        base = config_from_dict(architecture)
    elif checkpoint is not None:
        found = backbone_of(read_config(Path(checkpoint), llava=False))
        if found != backbone:
            raise ValueError(f"model.checkpoint {checkpoint} is a {found} checkpoint but model.backbone is {backbone}")
        if backbone == "llava_video":
            base = LlavaVideoConfig.from_original(read_config(Path(checkpoint)), source=checkpoint)
        else:
            base = QwenVLConfig.from_checkpoint(resolve(checkpoint), source=checkpoint)
    elif preset_name is None:
        raise ValueError("model.preset_name is null and no model.checkpoint is given: name one of the two")
    elif backbone == "llava_video":
        base = preset(preset_name)
    else:
        base = qwen_preset(backbone, preset_name)
    overrides = {"attn_implementation": compute.attn_implementation}
    if isinstance(base, LlavaVideoConfig):
        overrides |= {
            k: v
            for k, v in dict(spatial_pool_mode=spatial_pool_mode, newline_position=newline_position).items()
            if v is not None
        }
    else:
        for name, value in (("spatial_pool_mode", spatial_pool_mode), ("newline_position", newline_position)):
            if value is not None:
                raise ValueError(f"model.{name} is LLaVA-Video's; the {base.backbone} backbone has no such setting")
    if action.mode is not None:
        overrides |= {"vision_supervision": action.mode, "action_types": tuple(action.types)}
    return dataclasses.replace(base, **overrides)


def meet_tokenizer(config: ModelConfig, tokenizer, from_preset: bool) -> ModelConfig:
    """A Qwen config with its tokenizer: a preset takes the tokenizer's vision-token ids; a checkpoint's must agree."""
    if not isinstance(config, QwenVLConfig):
        return config
    missing = [t for t in QWEN_VISION_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"the tokenizer lacks the {config.backbone} vision tokens {missing}")
    matched = with_token_ids(config, tokenizer)
    if not from_preset and matched.hf != config.hf:
        raise ValueError(f"the tokenizer's vision-token ids differ from the {config.backbone} checkpoint's config")
    return matched


def build_model(config: ModelConfig, weights: str | None = None, new_heads: bool = False) -> nn.Module:
    """The model of a config, with the weights of a checkpoint folder (or hub id) when given (new_heads: action
    tokens and heads the checkpoint lacks start fresh), else freshly initialised."""
    if isinstance(config, QwenVLConfig):
        if weights is None:
            return QwenVLModel(config)
        return QwenVLModel.from_pretrained(weights, config=config, allow_missing=("heads",) if new_heads else ())
    if weights is None:
        return LlavaVideoModel(config)
    allow = ACTION_SUPERVISION_NAMES if new_heads else ()
    return LlavaVideoModel.from_pretrained(weights, config=config, allow_missing=allow)
