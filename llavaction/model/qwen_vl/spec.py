"""The spec of a Qwen backbone (Qwen2.5-VL and Qwen3-VL differ only in the values given here)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from llavaction.model.family import LmmsEvalModel, ModelFamily
from llavaction.model.hf_layout import ServingFiles, save_hf_layout
from llavaction.model.qwen_vl.config import MODEL_TYPES, QwenVLConfig, processor_files, with_token_ids
from llavaction.model.qwen_vl.model import QwenVLModel
from llavaction.model.qwen_vl.presets import QWEN_PRESETS
from llavaction.model.qwen_vl.prompt import IMAGE_BLOCK, VISION_TOKENS, QwenVideo


def vision_flops(config: QwenVLConfig, frames: int, frame_size: int) -> float:
    """The vision encoder and merger(s) on one clip (forward): 2 * N_vit * P over the clip's P patches, attention
    within each temporal group (Qwen2.5-VL: in windows but for its full-attention layers), the merger(s) on the
    P / merge^2 merged tokens."""
    vision, rule = config.vision, config.rule
    groups, rows, columns = rule.grid(frames, frame_size, frame_size)
    per_group, patches = rows * columns, groups * rows * columns
    d, depth, inner = vision["hidden_size"], vision["depth"], vision["intermediate_size"]
    gated = config.backbone == "qwen2_5_vl"  # Qwen2.5-VL's vision MLP is gated (three matrices), Qwen3-VL's is not
    layer = 4 * d * d + (3 if gated else 2) * d * inner
    embed = 3 * rule.temporal_patch_size * rule.patch_size**2 * d
    full_layers = len(vision.get("fullatt_block_indexes") or []) if gated else depth
    window = (vision.get("window_size", 0) // rule.patch_size) ** 2 or per_group
    attention = 4 * d * groups * per_group * (full_layers * per_group + (depth - full_layers) * min(window, per_group))
    merged, wide = patches // rule.merge_size**2, d * rule.merge_size**2
    mergers = 1 + len(vision.get("deepstack_visual_indexes") or [])
    merger = mergers * merged * (wide * wide + wide * vision["out_hidden_size"])
    return 2.0 * patches * (depth * layer + embed) + attention + 2.0 * merger


def load(weights: str | Path, config: QwenVLConfig, new_heads: bool) -> QwenVLModel:
    return QwenVLModel.from_pretrained(weights, config=config, allow_missing_heads=new_heads)


def export(model: QwenVLModel, state: dict, folder: Path, tokenizer, layout: str, chat: QwenVideo) -> None:
    """transformers' own layout in either case (it is the original one), with the processor files and chat template
    serving engines read, the action heads in a file beside it."""
    serving = ServingFiles(processor_files(model.config), chat, IMAGE_BLOCK)
    save_hf_layout(model, folder, state, tokenizer, {"frame_size": model.config.frame_size}, serving)


def qwen_family(
    backbone: str, title: str, blocks: tuple[type[nn.Module], ...], vllm: str, lmms_vllm_extra: str = ""
) -> ModelFamily:
    """A Qwen-VL family; lmms_vllm_extra: what lmms-eval's vllm model needs besides the model and frames."""
    return ModelFamily(
        name=backbone,
        title=title,
        config_class=QwenVLConfig,
        presets={name: make for (owner, name), make in QWEN_PRESETS.items() if owner == backbone},
        model_class=QwenVLModel,
        checkpoint_types=(MODEL_TYPES[backbone],),
        read_checkpoint=lambda folder, config, source: QwenVLConfig.from_checkpoint(folder, source, config),
        load=load,
        block_types=blocks,
        vision_flops=vision_flops,
        export=export,
        export_layouts=("original", "transformers"),
        lmms_eval=LmmsEvalModel(backbone, "pretrained={pretrained},max_num_frames={num_frames}"),
        vllm_architecture=vllm,
        # lmms-eval's vllm model (0.7.x): one GPU by default, the clip's frames as the export's evaluation shows them
        lmms_eval_vllm="model={pretrained},tensor_parallel_size=1,data_parallel_size=1,nframes={num_frames},"
        "max_frame_num={num_frames}" + lmms_vllm_extra,
        special_tokens=VISION_TOKENS,
        meet_tokenizer=with_token_ids,
        frame_size=lambda config: config.frame_size,
    )
