"""Families built on one transformers model (`self.hf`): their checkpoints in transformers' own layout, with
LLaVAction's action token(s) and heads in files of their own beside it (action_heads.safetensors, and
action_heads.json naming the action supervision and the family's other settings), so that transformers, its processors
and serving engines load the folder as they load the base model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llavaction.model.base import ACTION_PARAMETERS

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


def save_hf_layout(model, folder: Path, state: dict[str, torch.Tensor] | None, tokenizer, settings: dict) -> None:
    """transformers' layout of model.hf (config.json, safetensors), the tokenizer, and the action heads beside it;
    settings: the family's own values action_heads.json carries."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state is None else state
    model.hf.save_pretrained(
        str(folder), state_dict={k[len("hf.") :]: v for k, v in state.items() if k.startswith("hf.")}
    )
    extra = dict(settings)
    config = model.config
    if config.action_types is not None:
        heads = {k: v.detach().contiguous().cpu() for k, v in state.items() if k.startswith(ACTION_PARAMETERS)}
        save_file(heads, str(folder / ACTION_HEADS_FILE), metadata={"format": "pt"})
        extra |= {"vision_supervision": config.vision_supervision, "action_types": list(config.action_types)}
    (folder / ACTION_HEADS_CONFIG).write_text(json.dumps(extra, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
