"""InternVL3 / InternVL3.5 (InternViT + pixel-shuffle projector + Qwen2 / Qwen3, transformers' own layout) as a model
family: its spec."""

from __future__ import annotations

from pathlib import Path

from transformers.models.internvl.modeling_internvl import InternVLVisionLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

from llavaction.model.family import REGISTRY, LmmsEvalModel, ModelFamily
from llavaction.model.hf_layout import ServingFiles, save_hf_layout
from llavaction.model.internvl.config import MODEL_TYPE, PRESETS, InternVLConfig, square, with_token_ids
from llavaction.model.internvl.model import InternVLModel
from llavaction.model.internvl.processor import processor_files
from llavaction.model.internvl.prompt import CONTEXT_IMAGE, SPECIAL_TOKENS, InternVLVideo


def vision_flops(config: InternVLConfig, frames: int, frame_size: int) -> float:
    """Every frame through InternViT (P patches and the class token, full attention), the patch embedding, and the
    projector on the pixel-shuffled tokens (forward); frames are resized to the tower's side."""
    vision, width = config.vision, config.text["hidden_size"]
    d, inner, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    patch = square(vision["patch_size"])
    patches = (config.image_size // patch) ** 2
    tokens = patches + 1
    tower = layers * (2 * (4 * d * d + 2 * d * inner) * tokens + 4 * tokens * tokens * d)
    embed = 2 * 3 * patch**2 * d * patches
    shuffled = 4 * d  # the pixel shuffle's width (downsample ratio 0.5: 2 x 2 patches a token)
    projector = 2 * (shuffled * width + width * width) * config.tokens_per_frame
    return float(frames * (tower + embed + projector))


def load(weights: str | Path, config: InternVLConfig, new_heads: bool) -> InternVLModel:
    return InternVLModel.from_pretrained(weights, config=config, allow_missing_heads=new_heads)


def export(model: InternVLModel, state: dict, folder: Path, tokenizer, layout: str, chat: InternVLVideo) -> None:
    """transformers' layout with the processor files AutoProcessor reads (its frame rule written out) and a chat
    template that writes a video as `<video>\n`, the action heads beside it."""
    serving = ServingFiles(processor_files(model.config), chat, f"{CONTEXT_IMAGE}\n")
    save_hf_layout(model, folder, state, tokenizer, {}, serving)


INTERNVL = REGISTRY.register(
    ModelFamily(
        name="internvl",
        title="InternVL3 / InternVL3.5: InternViT + pixel-shuffle projector + Qwen2 / Qwen3 (transformers' classes)",
        config_class=InternVLConfig,
        presets=PRESETS,
        model_class=InternVLModel,
        checkpoint_types=(MODEL_TYPE,),
        read_checkpoint=lambda folder, config, source: InternVLConfig.from_checkpoint(folder, source, config),
        load=load,
        block_types=(InternVLVisionLayer, Qwen2DecoderLayer, Qwen3DecoderLayer),
        vision_flops=vision_flops,
        export=export,
        export_layouts=("original", "transformers"),
        lmms_eval=LmmsEvalModel("internvl_hf", "pretrained={pretrained},num_frames={num_frames}"),
        vllm_architecture="InternVLForConditionalGeneration",
        special_tokens=SPECIAL_TOKENS,
        meet_tokenizer=with_token_ids,
    )
)
