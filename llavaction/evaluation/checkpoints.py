"""Checkpoints for evaluation: a Lightning .ckpt or an original LLaVA-Video / LLaVAction directory, and the prompt
settings they were trained with (so evaluation asks what training asked)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from llavaction.args import EvaluationOptions
from llavaction.model.hub import is_hub_id, resolve
from llavaction.shards import first_sample, sample_meta


@dataclass(frozen=True)
class TrainedSettings:
    """What a checkpoint's training asked; None where the checkpoint does not say."""

    time_instruction: bool | None = None
    frame_times: bool | None = None
    num_frames: int | None = None


@dataclass(frozen=True)
class QuestionSettings:
    """How the questions are asked: frames shown, time instruction, per-frame times."""

    num_frames: int
    time_instruction: bool
    frame_times: bool


def question_settings(
    checkpoint: str | None,
    shards: list[str],
    num_frames: int | None = None,
    time_instruction: bool | None = None,
    frame_times: bool | None = None,
) -> QuestionSettings:
    """Each value given wins; the others follow the checkpoint's training (without a checkpoint: off), the frames no
    more than every shard set holds (all of them where the checkpoint does not say)."""
    trained = trained_settings(checkpoint) if checkpoint else TrainedSettings()
    stored = min(sample_meta(first_sample(location))["num_frames"] for location in shards)
    if num_frames is None:
        num_frames = trained.num_frames if trained.num_frames and trained.num_frames <= stored else stored
    return QuestionSettings(
        num_frames=num_frames,
        time_instruction=time_instruction if time_instruction is not None else bool(trained.time_instruction),
        frame_times=frame_times if frame_times is not None else bool(trained.frame_times),
    )


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
    prompt = prompt if isinstance(prompt, dict) else vars(prompt) if prompt is not None else {}
    return TrainedSettings(
        time_instruction=prompt.get("time_instruction"),
        frame_times=prompt.get("frame_times"),
        num_frames=data.get("num_frames"),
    )


def load_module(checkpoint: str, tokenizer: str | None, evaluation: EvaluationOptions):
    """The LightningModule of a Lightning .ckpt, an original checkpoint directory or a hub id, with these evaluation
    options."""
    from llavaction.module import LlavaActionModule

    if is_original(checkpoint):
        return LlavaActionModule(checkpoint=str(checkpoint), tokenizer=tokenizer, evaluation=evaluation)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"{checkpoint}: neither a Lightning checkpoint file, a checkpoint directory with config.json, nor a "
            "model-hub id"
        )
    # the options as a dict: LightningCLI's checkpoints rebuild their arguments through jsonargparse (mappings)
    extra = {"tokenizer": tokenizer} if tokenizer else {}
    return LlavaActionModule.load_from_checkpoint(
        str(checkpoint), map_location="cpu", evaluation=asdict(evaluation), **extra
    )
