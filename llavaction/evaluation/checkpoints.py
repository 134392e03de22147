"""Checkpoints for evaluation: a Lightning .ckpt or an original LLaVA-Video / LLaVAction directory, and the prompt
settings they were trained with (so evaluation asks what training asked)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llavaction.args import EvaluationOptions
from llavaction.model.hub import is_hub_id, resolve


@dataclass(frozen=True)
class TrainedSettings:
    """What a checkpoint's training asked; None where the checkpoint does not say."""

    time_instruction: bool | None = None
    frame_times: bool | None = None
    num_frames: int | None = None


def is_original(checkpoint: str | Path) -> bool:
    """An original checkpoint: a directory with config.json, or a model-hub id."""
    path = Path(checkpoint)
    if path.exists():
        return path.is_dir() and (path / "config.json").exists()
    return is_hub_id(str(checkpoint))


def trained_settings(checkpoint: str | Path) -> TrainedSettings:
    """An original checkpoint's config.json records `add_time_instruction` (the reference writes it); a Lightning
    checkpoint carries the DataModule's arguments."""
    if is_original(checkpoint):
        config = json.loads((resolve(checkpoint) / "config.json").read_text())
        return TrainedSettings(time_instruction=bool(config.get("add_time_instruction", False)), frame_times=False)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint}: neither a Lightning checkpoint file, a checkpoint directory with "
            "config.json, nor a model-hub id"
        )
    meta = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    data = meta.get("datamodule_hyper_parameters") or {}
    prompt = data.get("prompt")
    return TrainedSettings(
        time_instruction=getattr(prompt, "time_instruction", None),
        frame_times=getattr(prompt, "frame_times", None),
        num_frames=data.get("num_frames"),
    )


def load_module(checkpoint: str, tokenizer: str | None, evaluation: EvaluationOptions):
    """The LightningModule of a Lightning .ckpt or of an original checkpoint directory, with these evaluation
    options."""
    from llavaction.module import LlavaActionModule

    path = Path(checkpoint)
    if is_original(path):
        return LlavaActionModule(checkpoint=str(path), tokenizer=tokenizer, evaluation=evaluation)
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint}: neither a Lightning checkpoint file nor a checkpoint directory with config.json"
        )
    return LlavaActionModule.load_from_checkpoint(
        str(path), map_location="cpu", evaluation=evaluation, **({"tokenizer": tokenizer} if tokenizer else {})
    )
