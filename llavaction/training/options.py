"""Typed options of training: which parts train and how they are optimised."""

from __future__ import annotations

from dataclasses import dataclass

from llavaction.utils.checks import check_range


@dataclass(frozen=True)
class TrainableParts:
    """Which parts of the model are updated.

    Args:
        vision_tower: update the SigLIP tower.
        projector: update the projector and the newline vector.
        llm: update the Qwen2 LLM.
    """

    vision_tower: bool = True
    projector: bool = True
    llm: bool = True


@dataclass(frozen=True)
class OptimizerOptions:
    """AdamW with a learning rate per part and a cosine schedule after linear warmup.

    Args:
        lr: learning rate of the LLM (and of the action heads).
        vision_lr: learning rate of the vision tower.
        projector_lr: learning rate of the projector (default: lr).
        weight_decay: AdamW weight decay (never on norms and biases).
        warmup_ratio: share of the steps with linear warmup before the cosine decay.
    """

    lr: float = 1e-5
    vision_lr: float = 2e-6
    projector_lr: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03

    def __post_init__(self):
        for name in ("lr", "vision_lr", "projector_lr", "weight_decay"):
            if getattr(self, name) is not None:
                check_range(f"model.optimizer.{name}", getattr(self, name), 0.0)
        check_range("model.optimizer.warmup_ratio", self.warmup_ratio, 0.0, 1.0)
