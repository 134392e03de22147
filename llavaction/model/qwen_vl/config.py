"""Configuration of the Qwen2.5-VL and Qwen3-VL backbones: transformers' own config of the model, the frame rule of
its checkpoint's video processor, LLaVAction's action supervision (the presets are presets.py's)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from llavaction.model.hf_layout import action_supervision, read_action_settings
from llavaction.model.qwen_vl.frames import FrameRule
from llavaction.model.qwen_vl.prompt import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START, QwenVideo
from llavaction.utils.constants import SYSTEM_MESSAGE

QwenBackbone = Literal["qwen2_5_vl", "qwen3_vl"]
MODEL_TYPES = {"qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}
# config.json's model_type -> backbone
BACKBONE_OF_MODEL_TYPE = {value: key for key, value in MODEL_TYPES.items()}
ACTION_TOKEN_MODES = ("one_token", "three_tokens")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "flex_attention", "eager")
# The published checkpoints' frame rules (their processor configs: Qwen2.5-VL-7B-Instruct's per frame, Qwen3-VL's per
# clip), the presets' own
RULES = {
    "qwen2_5_vl": FrameRule(),
    "qwen3_vl": FrameRule(
        patch_size=16,
        min_pixels=4096,
        max_pixels=25165824,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        per_clip_budget=True,
    ),
}
# What transformers' video processors assume when a checkpoint ships no processor config (Qwen2VLVideoProcessor's
# 128 to 768 merged patches a frame, Qwen3VLVideoProcessor's 128 to 768 a clip): a folder without one reads as they do
PROCESSOR_DEFAULTS = {
    "qwen2_5_vl": replace(RULES["qwen2_5_vl"], min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28),
    "qwen3_vl": replace(RULES["qwen3_vl"], min_pixels=128 * 32 * 32, max_pixels=768 * 32 * 32),
}
# Qwen2.5-VL's template opens with the default system turn; Qwen3-VL's has none unless given.
SYSTEM_TURNS = {"qwen2_5_vl": SYSTEM_MESSAGE, "qwen3_vl": None}
PROCESSOR_FILES = ("video_preprocessor_config.json", "processor_config.json", "preprocessor_config.json")
log = logging.getLogger(__name__)


@dataclass
class QwenVLConfig:
    """A Qwen2.5-VL or Qwen3-VL model.

    Args:
        backbone: 'qwen2_5_vl' or 'qwen3_vl'.
        hf: transformers' config of the model as a dict (Qwen2_5_VLConfig / Qwen3VLConfig fields).
        rule: the frame rule (the checkpoint's video processor config).
        frame_size: the side clips are decoded at for prediction (the shards' size for training and evaluation).
        attn_implementation: 'sdpa', 'flash_attention_2', 'flex_attention' or 'eager'.
        vision_supervision: LLaVAction's action tokens ('one_token', 'three_tokens'), or None.
        action_types: verb, noun and action head sizes, with vision_supervision.
    """

    backbone: QwenBackbone
    hf: dict
    rule: FrameRule = field(default_factory=FrameRule)
    frame_size: int = 384
    attn_implementation: str = "sdpa"
    vision_supervision: str | None = None
    action_types: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.backbone not in MODEL_TYPES:
            raise ValueError(f"backbone {self.backbone!r} not in {tuple(MODEL_TYPES)}")
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} not in {ATTENTION_IMPLEMENTATIONS}")
        if self.vision_supervision == "newline":
            raise ValueError(
                "model.action.mode 'newline' reads LLaVA-Video's newline token, which Qwen backbones do not have: "
                "use 'one_token' or 'three_tokens'"
            )
        if self.vision_supervision is not None and self.vision_supervision not in ACTION_TOKEN_MODES:
            raise ValueError(f"vision_supervision {self.vision_supervision!r} not in {ACTION_TOKEN_MODES}")
        if (self.vision_supervision is None) != (self.action_types is None):
            raise ValueError("vision_supervision and action_types go together")

    @property
    def text(self) -> dict:
        """The language model's dimensions (what FLOP counts and the tokenizer check read)."""
        return self.hf["text_config"]

    @property
    def vision(self) -> dict:
        return self.hf["vision_config"]

    @property
    def action_tokens(self) -> int:
        """Learned action tokens placed after the video."""
        return {"one_token": 1, "three_tokens": 3}.get(self.vision_supervision, 0)

    @property
    def image_size(self) -> int:
        """The side clips are decoded at when a model answers about video files."""
        return self.frame_size

    def chat_format(self) -> QwenVideo:
        return QwenVideo(
            system=SYSTEM_TURNS[self.backbone],
            action_tokens=self.action_tokens,
            rule=self.rule,
            video_token_id=self.hf["video_token_id"],
            vision_start_id=self.hf["vision_start_token_id"],
            vision_end_id=self.hf["vision_end_token_id"],
            timestamps=self.timestamps,
        )

    @property
    def timestamps(self) -> bool:
        """Qwen3-VL: a timestamp and a vision block for each temporal group."""
        return self.backbone == "qwen3_vl"

    def extra_tokens(self, num_frames: int) -> int:
        """Sequence positions the model adds beyond its input ids: none (the prompt holds every visual token)."""
        return 0

    def hf_class(self):
        """transformers' model class of the backbone."""
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration if self.backbone == "qwen2_5_vl" else Qwen3VLForConditionalGeneration

    def to_hf(self):
        """transformers' config object."""
        from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

        cls = Qwen2_5_VLConfig if self.backbone == "qwen2_5_vl" else Qwen3VLConfig
        return cls(**self.hf)

    @classmethod
    def from_dict(cls, fields: dict) -> QwenVLConfig:
        fields = dict(fields)
        fields["rule"] = FrameRule(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields["rule"].items()})
        if fields.get("action_types") is not None:
            fields["action_types"] = tuple(fields["action_types"])
        return cls(**fields)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, directory: Path, source: str | None = None, config: dict | None = None) -> QwenVLConfig:
        """The config of a checkpoint folder: config.json (`config`, when already read), its video processor config
        (video_preprocessor_config.json, else preprocessor_config.json; absent: the processor's defaults) and, for a
        LLaVAction export, its action supervision (action_heads.json)."""
        source = source or str(directory)
        config = config if config is not None else json.loads((directory / "config.json").read_text())
        backbone = BACKBONE_OF_MODEL_TYPE.get(config.get("model_type"))
        if backbone is None:
            raise ValueError(f"{source}: model_type {config.get('model_type')!r} is not a Qwen2.5-VL or Qwen3-VL")
        rule = rule_from_processor(directory, backbone)
        actions = read_action_settings(directory)
        hf = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version", "_name_or_path")}
        return cls(
            backbone=backbone,
            hf=hf,
            rule=rule,
            frame_size=int(actions.get("frame_size", 384)),
            **action_supervision(actions),
        )


def processor_values(directory: Path) -> dict | None:
    """The video processor's values a checkpoint folder ships: video_preprocessor_config.json, else the
    `video_processor` of processor_config.json (as transformers 5.1x saves it), else preprocessor_config.json (the
    image processor's, which transformers' video processors then read); None without any."""
    for name in PROCESSOR_FILES:
        path = directory / name
        if not path.exists():
            continue
        values = json.loads(path.read_text())
        if name == "processor_config.json":
            values = values.get("video_processor") or values.get("image_processor")
            if not values:
                continue
        return values
    return None


def rule_from_processor(directory: Path, backbone: str) -> FrameRule:
    """The frame rule of a checkpoint's processor config; the processor's defaults for what it does not set, and for
    a folder without one (said in a warning naming the folder: its limits are transformers' defaults)."""
    values = processor_values(directory)
    rule = PROCESSOR_DEFAULTS[backbone]
    if values is None:
        log.warning(
            "%s ships no processor config: its frames are read with transformers' defaults for %s (%d to %d pixels "
            "%s), as its processor would read them",
            directory,
            backbone,
            rule.min_pixels,
            rule.max_pixels,
            "a clip" if rule.per_clip_budget else "a frame",
        )
        return rule
    size = values.get("size") or {}
    found = {
        "patch_size": values.get("patch_size"),
        "merge_size": values.get("merge_size"),
        "temporal_patch_size": values.get("temporal_patch_size"),
        "min_pixels": values.get("min_pixels", size.get("shortest_edge")),
        "max_pixels": values.get("max_pixels", size.get("longest_edge")),
        "image_mean": tuple(values["image_mean"]) if values.get("image_mean") else None,
        "image_std": tuple(values["image_std"]) if values.get("image_std") else None,
    }
    return replace(rule, **{k: v for k, v in found.items() if v is not None})


def processor_config(config: QwenVLConfig) -> dict:
    """The video processor config a checkpoint ships (video_preprocessor_config.json), from the frame rule: frames
    taken as given (already sampled), every frame kept."""
    rule = config.rule
    kind = "Qwen3VLVideoProcessor" if config.backbone == "qwen3_vl" else "Qwen2VLVideoProcessor"
    return {
        "video_processor_type": kind,
        "processor_class": processor_class(config),
        "patch_size": rule.patch_size,
        "merge_size": rule.merge_size,
        "temporal_patch_size": rule.temporal_patch_size,
        "size": {"shortest_edge": rule.min_pixels, "longest_edge": rule.max_pixels},
        "image_mean": list(rule.image_mean),
        "image_std": list(rule.image_std),
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_sample_frames": False,
        "resample": 3,
        "rescale_factor": 1 / 255,
    }


def processor_class(config: QwenVLConfig) -> str:
    return "Qwen3VLProcessor" if config.backbone == "qwen3_vl" else "Qwen2_5_VLProcessor"


def processor_files(config: QwenVLConfig) -> dict[str, dict]:
    """Every processor file an export ships: the video processor's, the image processor's (the same rule, per
    image) and the processor's own."""
    video = processor_config(config)
    image = {k: v for k, v in video.items() if k not in ("video_processor_type", "do_sample_frames")}
    image |= {"image_processor_type": "Qwen2VLImageProcessorFast"}
    return {
        "video_preprocessor_config.json": video,
        "preprocessor_config.json": image,
        "processor_config.json": {"processor_class": processor_class(config)},
    }


def with_token_ids(config: QwenVLConfig, tokenizer) -> QwenVLConfig:
    """The config with the vision tokens' ids of the tokenizer (a preset meets its tokenizer); a checkpoint's own
    ids must agree with its tokenizer's."""
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_PAD),
        "video_token_id": tokenizer.convert_tokens_to_ids(VIDEO_PAD),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids(VISION_START),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids(VISION_END),
    }
    return replace(config, hf=config.hf | ids)
