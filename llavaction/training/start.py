"""A fit's starting point when `model.checkpoint` is a training checkpoint (a Lightning `.ckpt`, such as a supervised
run's last.ckpt that a GRPO stage continues): its architecture, recorded video format, tokenizer and weights, read
once by the loader evaluation uses (evaluation.checkpoints.LoadedCheckpoint). A model folder or hub id starts a fit
through its family's loader, as before."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from llavaction.evaluation.checkpoint_format import CheckpointError, is_sharded_training_checkpoint
from llavaction.evaluation.checkpoints import LoadedCheckpoint
from llavaction.model.base import ACTION_PARAMETERS


class StartCheckpoint:
    """A training checkpoint a fit starts from; its family must be the run's model.backbone."""

    def __init__(self, path: str, backbone: str, tokenizer: str | None):
        self.loaded = LoadedCheckpoint.open(path, tokenizer)
        self.source = path
        if self.loaded.backbone != backbone:
            raise ValueError(
                f"model.checkpoint {path} is a {self.loaded.backbone} checkpoint but model.backbone is {backbone}"
            )

    @classmethod
    def of(cls, checkpoint: str | None, backbone: str, tokenizer: str | None) -> StartCheckpoint | None:
        """The training checkpoint `model.checkpoint` names, None for a model folder, a hub id or no checkpoint."""
        if checkpoint is None:
            return None
        path = Path(checkpoint)
        if not (path.is_file() or is_sharded_training_checkpoint(path)):
            return None
        return cls(checkpoint, backbone, tokenizer)

    @property
    def architecture(self) -> dict:
        """The architecture its training resolved (rebuilt from its hyperparameters for an older checkpoint)."""
        from llavaction.model.architecture import resolve_architecture

        return dataclasses.asdict(resolve_architecture(self.loaded.model_settings))

    @property
    def video_format(self) -> dict | None:
        """How its training read a sample (None: resolved from the architecture and tokenizer, as then)."""
        return self.loaded.recorded.get("video_format")

    @property
    def tokenizer(self) -> str:
        """Its tokenizer's folder (the files it carries, written out for the life of this object)."""
        return self.loaded.tokenizer

    def load_into(self, model: torch.nn.Module) -> None:
        """Its weights into the model; only action token(s) and heads it lacks (a run adding them) start fresh."""
        missing, unexpected = model.load_state_dict(self.loaded.weights(), strict=False)
        missing = [key for key in missing if key.split(".")[0] not in ACTION_PARAMETERS]
        if missing or unexpected:
            raise CheckpointError(
                f"{self.source}: its weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
