"""LLaVA-Video (SigLIP + mlp2x_gelu projector + Qwen2, the reference's model) as a model family: its spec."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from llavaction.model.family import REGISTRY, LmmsEvalModel, ModelFamily
from llavaction.model.llava_video.checkpoint import ACTION_SUPERVISION_NAMES, check_original, save_original
from llavaction.model.llava_video.config import PRESETS, LlavaVideoConfig, preset
from llavaction.model.llava_video.model import LlavaVideoModel
from llavaction.model.llava_video.onevision import check_exportable, save_onevision


def read_checkpoint(folder: Path, config: dict, source: str) -> LlavaVideoConfig:
    check_original(config, folder / "config.json")
    return LlavaVideoConfig.from_original(config, source=str(folder / "config.json"))


def load(weights: str | Path, config: LlavaVideoConfig, new_heads: bool) -> LlavaVideoModel:
    allow = ACTION_SUPERVISION_NAMES if new_heads else ()
    return LlavaVideoModel.from_pretrained(weights, config=config, allow_missing=allow)


def vit_layer_params(vision: dict) -> int:
    """One SigLIP encoder layer: q, k, v and output projections, the two-matrix MLP."""
    d = vision["hidden_size"]
    return 4 * d * d + 2 * d * vision["intermediate_size"]


def vision_flops(config: LlavaVideoConfig, frames: int, frame_size: int) -> float:
    """The tower on every frame of P patches (full attention), the projector on every patch token (forward); frames
    are resized to the tower's size, so frame_size does not count."""
    vision, d = config.vision, config.text["hidden_size"]
    dv, layers = vision["hidden_size"], config.vision_layers_kept
    p = (vision["image_size"] // vision["patch_size"]) ** 2
    return frames * (2 * layers * vit_layer_params(vision) * p + 4 * layers * p * p * dv + 2 * (dv * d + d * d) * p)


def export(model: LlavaVideoModel, state: dict, folder: Path, tokenizer, layout: str, chat=None) -> None:
    """'original': the lmms-lab layout (LlavaQwenForCausalLM) and the tokenizer; 'transformers':
    LlavaOnevisionForConditionalGeneration where it computes the same logits."""
    if layout == "transformers":
        save_onevision(model, folder, state=state, tokenizer=tokenizer)
    else:
        save_original(model, folder, state=state)
        tokenizer.save_pretrained(folder)


def check_export(config: LlavaVideoConfig, layout: str) -> None:
    if layout == "transformers":
        check_exportable(config)


__all__ = ["LLAVA_VIDEO", "LlavaVideoConfig", "LlavaVideoModel", "preset"]

LLAVA_VIDEO = REGISTRY.register(
    ModelFamily(
        name="llava_video",
        title="LLaVA-Video: SigLIP (last layer removed) + mlp2x_gelu projector + Qwen2, the reference's model",
        config_class=LlavaVideoConfig,
        presets=PRESETS,
        model_class=LlavaVideoModel,
        checkpoint_types=("llava", "llava_qwen"),
        read_checkpoint=read_checkpoint,
        load=load,
        block_types=(SiglipEncoderLayer, Qwen2DecoderLayer),
        vision_flops=vision_flops,
        export=export,
        export_layouts=("original", "transformers"),
        check_export=check_export,
        options=("spatial_pool_mode", "newline_position"),
        with_options=lambda config, options: replace(config, **options),
        lmms_eval=LmmsEvalModel(
            "llava_vid",
            "pretrained={pretrained},conv_template=qwen_1_5,max_frames_num={num_frames},force_sample=True,"
            "mm_spatial_pool_mode=bilinear",
        ),
        vllm_architecture="LlavaOnevisionForConditionalGeneration",
        template_from_checkpoint=False,
    )
)
