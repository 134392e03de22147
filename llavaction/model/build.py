"""The architecture a run resolves (a preset, a starting checkpoint's config.json, or the architecture a training
checkpoint recorded, with the run's overrides) and the model built from it; training and evaluation resolve it the same
way, so a checkpoint rebuilds exactly the model that was trained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llavaction.model.checkpoint import ACTION_SUPERVISION_NAMES, read_config
from llavaction.model.config import LlavaVideoConfig, preset
from llavaction.model.llava_video import LlavaVideoModel
from llavaction.model.options import ActionSupervision, ComputeOptions


def resolve_architecture(
    preset_name: str = "tiny",
    checkpoint: str | None = None,
    architecture: dict | None = None,
    compute: ComputeOptions = ComputeOptions(),
    action: ActionSupervision = ActionSupervision(),
    spatial_pool_mode: str | None = None,
    newline_position: str | None = None,
) -> LlavaVideoConfig:
    """The model's config: a recorded architecture first, else the starting checkpoint's, else the preset; then the
    run's attention, pooling, newline and action-supervision settings (validated by the config)."""
    if architecture is not None:
        base = LlavaVideoConfig.from_dict(architecture)
    elif checkpoint is None:
        base = preset(preset_name)
    else:
        base = LlavaVideoConfig.from_original(read_config(Path(checkpoint)), source=checkpoint)
    overrides = {
        key: value
        for key, value in dict(
            attn_implementation=compute.attn_implementation,
            spatial_pool_mode=spatial_pool_mode,
            newline_position=newline_position,
        ).items()
        if value is not None
    }
    if action.mode is not None:
        overrides |= {"vision_supervision": action.mode, "action_types": tuple(action.types)}
    return dataclasses.replace(base, **overrides)


def build_model(config: LlavaVideoConfig, weights: str | None = None, new_heads: bool = False) -> LlavaVideoModel:
    """The model of a config, with the weights of an original checkpoint directory (or hub id) when given (new_heads:
    action tokens and heads the checkpoint lacks start fresh), else freshly initialised."""
    if weights is None:
        return LlavaVideoModel(config)
    allow = ACTION_SUPERVISION_NAMES if new_heads else ()
    return LlavaVideoModel.from_pretrained(weights, config=config, allow_missing=allow)
