"""Families built on one transformers model (`self.hf`): their checkpoints in transformers' own layout, with
LLaVAction's action token(s) and heads in files of their own beside it (action_heads.safetensors, and
action_heads.json naming the action supervision and the family's other settings), so that transformers, its processors
and serving engines load the folder as they load the base model."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llavaction.model.base import ACTION_PARAMETERS
from llavaction.prompts.formats import VideoFormat
from llavaction.prompts.templates import chatml_template
from llavaction.prompts.tokenizer import add_special_tokens
from llavaction.utils.constants import EOS_TOKEN

ACTION_HEADS_FILE, ACTION_HEADS_CONFIG = "action_heads.safetensors", "action_heads.json"


def read_action_settings(folder: Path) -> dict:
    """action_heads.json's settings ({} when the folder has none: a base model)."""
    path = folder / ACTION_HEADS_CONFIG
    return json.loads(path.read_text()) if path.exists() else {}


def action_supervision(settings: dict) -> dict:
    """The config fields of the action supervision action_heads.json names."""
    types = settings.get("action_types")
    return {"vision_supervision": settings.get("vision_supervision"), "action_types": tuple(types) if types else None}


def load_hf_layout(cls, folder: Path, config, hf_class, allow_missing_heads: bool):
    """The model of a folder by transformers' own loader (fp32), with the action heads of action_heads.safetensors
    where its config has action supervision (allow_missing_heads: heads the run adds start fresh)."""
    from safetensors.torch import load_file

    hf_model = hf_class.from_pretrained(
        str(folder), attn_implementation=config.attn_implementation, dtype=torch.float32
    )
    model = cls(config, hf_model)
    heads = folder / ACTION_HEADS_FILE
    if config.action_types is not None:
        if heads.exists():
            missing = model.load_state_dict(load_file(str(heads)), strict=False).missing_keys
            absent = [k for k in missing if k.startswith(ACTION_PARAMETERS)]
            if absent:
                raise ValueError(f"{heads}: missing {absent}")
        elif not allow_missing_heads:
            raise ValueError(f"{folder}: no {ACTION_HEADS_FILE} for the action supervision its config names")
    return model


@dataclass(frozen=True)
class ServingFiles:
    """What an export carries beside the weights so that transformers' AutoProcessor and serving engines (vLLM) read
    a sample as this codebase does.

    Args:
        processors: file name -> the processor configs (the frame rule written out).
        video: how the model reads a sample: the chat template writes its video marker for a video part (the
            processor expands the marker's placeholder; learned action tokens follow it) and its system turn.
        image_marker: what the chat template writes for an image part.
    """

    processors: dict[str, dict]
    video: VideoFormat
    image_marker: str


def save_hf_layout(
    model, folder: Path, state: dict[str, torch.Tensor] | None, tokenizer, settings: dict, serving: ServingFiles
) -> None:
    """transformers' layout of model.hf (config.json, safetensors, generation_config.json with the end-of-turn id as
    eos), the tokenizer and a chat template that writes a video as this codebase does, the processor configs, and the
    action heads beside it; settings: the family's own values action_heads.json carries. Learned action tokens
    become tokens of the exported vocabulary (`<|action_0|>`, ...), their vectors in unused embedding rows, written
    by the chat template right after the video: engines that only read token ids place them as the model does."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state is None else state
    tokenizer = copy.deepcopy(tokenizer)
    action_tokens = action_vocabulary(model, state, tokenizer)
    hf_state = {k[len("hf.") :]: v for k, v in state.items() if k.startswith("hf.")}
    model.hf.save_pretrained(str(folder), state_dict=hf_state)
    index_weights(folder)
    generation = folder / "generation_config.json"
    values = json.loads(generation.read_text()) if generation.exists() else {}
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    values |= {"eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}  # answers end at the end of the turn
    generation.write_text(json.dumps(values, indent=2) + "\n")
    extra = dict(settings)
    config = model.config
    if config.action_types is not None:
        heads = {k: v.detach().contiguous().cpu() for k, v in state.items() if k.startswith(ACTION_PARAMETERS)}
        save_file(heads, str(folder / ACTION_HEADS_FILE), metadata={"format": "pt"})
        extra |= {"vision_supervision": config.vision_supervision, "action_types": list(config.action_types)}
        extra |= {"action_tokens": action_tokens}
    (folder / ACTION_HEADS_CONFIG).write_text(json.dumps(extra, indent=2) + "\n")
    video = serving.video
    marker = video.placeholder + "".join(action_tokens) + video.video_marker.removeprefix(video.placeholder)
    tokenizer.chat_template = chatml_template(video.system, marker, serving.image_marker)
    tokenizer.save_pretrained(str(folder))
    for name, values in serving.processors.items():
        (folder / name).write_text(json.dumps(values, indent=2) + "\n")


def index_weights(folder: Path) -> None:
    """model.safetensors.index.json for a single weights file (transformers writes one only for shards): loaders that
    read every *.safetensors of a folder (vLLM) then read only the model's, not the action heads beside it."""
    from safetensors import safe_open

    index, single = folder / "model.safetensors.index.json", folder / "model.safetensors"
    if index.exists() or not single.exists():
        return
    with safe_open(str(single), framework="pt") as weights:
        names = list(weights.keys())
    weight_map = {name: single.name for name in names}
    index.write_text(json.dumps({"metadata": {"total_size": single.stat().st_size}, "weight_map": weight_map}) + "\n")


def action_vocabulary(model, state: dict[str, torch.Tensor], tokenizer) -> list[str]:
    """Append `<|action_k|>` to the tokenizer for each learned action token and put its vector in that row of the
    exported input embeddings (the rows past the tokenizer are the checkpoints' unused padding); the tokens."""
    count = model.config.action_tokens if model.config.action_types is not None else 0
    if not count:
        return []
    tokens = [f"<|action_{k}|>" for k in range(count)]
    add_special_tokens(tokenizer, tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    weight = model.embedding_layer().weight
    name = next(n for n, p in model.named_parameters() if p is weight)
    rows = state[name]
    if max(ids) >= rows.shape[0]:
        raise ValueError(f"the action tokens' ids {ids} fall outside the {rows.shape[0]} embedding rows")
    rows = rows.clone()
    rows[ids] = state["action_supervision"].to(rows.dtype)
    state[name] = rows
    return tokens
