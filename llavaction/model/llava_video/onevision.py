"""LLaVA-Video in transformers' own layout, LlavaOnevisionForConditionalGeneration, where that class computes the same
logits; refused, with the reason, where it would not.

transformers' LlavaOnevision video path takes the tower's last hidden state, projects it, pools each frame bilinearly to
half its side and appends ONE newline vector after the whole video. That is LLaVA-Video with `newline_position
one_token` and bilinear pooling of stride 2, without learned action tokens. LLaVA-Video-7B and LLaVAction-7B put a
newline after every row of every frame (`grid`: 210 tokens a frame at 384 px, not 196, and no closing one), so the
same weights in that class read another sequence: exporting them would serve a different model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llavaction.model.llava_video.config import LlavaVideoConfig

ONEVISION_ARCHITECTURE = "LlavaOnevisionForConditionalGeneration"
# The tokens the layout's tokenizer adds: the processor expands `<video>` to the visual tokens of a clip.
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
# our parameter names -> transformers' (prefix replacements, first match)
RENAMES = (
    ("vision_tower.", "model.vision_tower."),
    ("projector.0.", "model.multi_modal_projector.linear_1."),
    ("projector.2.", "model.multi_modal_projector.linear_2."),
    ("image_newline", "model.image_newline"),
    ("llm.model.", "model.language_model."),
    ("llm.lm_head.", "lm_head."),
)
HEADS_FILE, HEADS_CONFIG = "action_heads.safetensors", "action_heads.json"


class ExportRefused(ValueError):
    """The model has no exact equivalent in the asked layout."""


def onevision_refusal(config: LlavaVideoConfig) -> str | None:
    """Why transformers' LlavaOnevisionForConditionalGeneration would compute other logits than this model, or None."""
    reasons = []
    if config.newline_position != "one_token":
        reasons.append(
            f"newline_position {config.newline_position!r}: LlavaOnevision appends one newline per video "
            "(LLaVA-Video's newline_position 'one_token')"
        )
    if config.spatial_pool_mode != "bilinear" or config.spatial_pool_stride != 2:
        reasons.append(
            f"spatial pooling {config.spatial_pool_mode!r} stride {config.spatial_pool_stride}: LlavaOnevision pools "
            "bilinearly to half the side"
        )
    if config.action_tokens:
        reasons.append(
            f"vision_supervision {config.vision_supervision!r}: LlavaOnevision has no place for learned action tokens "
            "in its input"
        )
    return "; ".join(reasons) or None


def check_exportable(config: LlavaVideoConfig) -> None:
    reason = onevision_refusal(config)
    if reason:
        raise ExportRefused(
            f"LLaVA-Video cannot export to transformers' {ONEVISION_ARCHITECTURE} with the same logits: {reason}; "
            "export the original layout (model.export_layout original)"
        )


def onevision_config(config: LlavaVideoConfig, image_token_id: int, video_token_id: int):
    """transformers' config of the same model: the tower cut to the layers LLaVA-Video keeps, its last one read."""
    from transformers import LlavaOnevisionConfig

    check_exportable(config)
    vision = config.vision | {
        "model_type": "siglip_vision_model",
        "num_hidden_layers": config.vision_layers_kept,
        "vision_use_head": False,
    }
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=config.text | {"model_type": "qwen2"},
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_token_index=image_token_id,
        video_token_index=video_token_id,
        multimodal_projector_bias=True,
        projector_hidden_act="gelu",
        tie_word_embeddings=config.text.get("tie_word_embeddings", False),
    )


def onevision_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our weights under transformers' names (the action heads, stored beside, left out)."""
    renamed = {}
    for name, tensor in state.items():
        for ours, theirs in RENAMES:
            if name.startswith(ours):
                renamed[theirs + name[len(ours) :]] = tensor
                break
    return renamed


def with_video_tokens(tokenizer, vocab_size: int) -> tuple[int, int]:
    """Add `<image>` and `<video>` to the tokenizer (when absent) and return their ids, which must index the model's
    embedding rows (the processor's placeholders are replaced by visual tokens, but are embedded first)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, VIDEO_TOKEN]})
    ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, VIDEO_TOKEN])
    if max(ids) >= vocab_size:
        raise ExportRefused(
            f"the tokenizer's {IMAGE_TOKEN}/{VIDEO_TOKEN} ids {ids} fall outside the {vocab_size} embedding rows"
        )
    return ids[0], ids[1]


def processor_files(config: LlavaVideoConfig) -> dict[str, dict]:
    """The processor's config files: frames squashed to the tower's size, rescaled and normalised as we do."""
    size = {"height": config.image_size, "width": config.image_size}
    values = dict(
        do_resize=True,
        size=size,
        resample=3,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        do_convert_rgb=True,
    )
    side = config.image_size // config.vision["patch_size"]
    return {
        "video_preprocessor_config.json": values
        | {"video_processor_type": "LlavaOnevisionVideoProcessor", "processor_class": "LlavaOnevisionProcessor"},
        "preprocessor_config.json": values
        | {"image_processor_type": "LlavaOnevisionImageProcessor", "processor_class": "LlavaOnevisionProcessor"},
        "processor_config.json": {
            "processor_class": "LlavaOnevisionProcessor",
            "num_image_tokens": side * side,
            "vision_feature_select_strategy": "full",
            "image_token": IMAGE_TOKEN,
            "video_token": VIDEO_TOKEN,
        },
    }


def save_onevision(model, directory: Path, state: dict[str, torch.Tensor] | None = None, tokenizer=None) -> None:
    """config.json and safetensors that AutoModelForImageTextToText.from_pretrained loads as
    LlavaOnevisionForConditionalGeneration, the processor configs, the tokenizer with its `<video>` token, and the
    action heads (newline mode) in a file beside them."""
    from safetensors.torch import save_file
    from transformers import LlavaOnevisionForConditionalGeneration

    config = model.config
    check_exportable(config)
    state = model.state_dict() if state is None else state
    if tokenizer is None:
        raise ExportRefused("the transformers layout needs the tokenizer (its <video> token id goes into config.json)")
    image_id, video_id = with_video_tokens(tokenizer, config.text["vocab_size"])
    with torch.device("meta"):
        hf_model = LlavaOnevisionForConditionalGeneration(onevision_config(config, image_id, video_id))
    hf_model.load_state_dict(onevision_state(state), strict=True, assign=True)
    directory.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    for name, values in processor_files(config).items():
        (directory / name).write_text(json.dumps(values, indent=2) + "\n")
    if config.action_types is not None:
        heads = {k: v.detach().contiguous().cpu() for k, v in state.items() if k.endswith("_head.weight")}
        save_file(heads, str(directory / HEADS_FILE), metadata={"format": "pt"})
        read_at = {"vision_supervision": config.vision_supervision, "action_types": list(config.action_types)}
        (directory / HEADS_CONFIG).write_text(json.dumps(read_at, indent=2) + "\n")
