"""AdamW parameter groups (one learning rate per model part, no weight decay on norms, biases and lone vectors) and
the length of the learning-rate schedule."""

from __future__ import annotations

import math

import torch


def trainable(*parts: torch.nn.Module | torch.nn.Parameter) -> list[torch.nn.Parameter]:
    """The parameters of modules (or lone parameters) that require gradients."""
    params = [p for part in parts for p in ([part] if isinstance(part, torch.nn.Parameter) else part.parameters())]
    return [p for p in params if p.requires_grad]


def param_groups(parts: dict[str, tuple[list[torch.nn.Parameter], float]], weight_decay: float) -> list[dict]:
    """parts: name -> (parameters, learning rate). Two groups a part (named, for the learning-rate monitor): matrices
    with weight decay, and the rest (norms, biases, the newline vector) without; empty groups are left out."""
    groups = []
    for name, (params, lr) in parts.items():
        groups += [
            {"name": name, "params": [p for p in params if p.ndim >= 2], "lr": lr, "weight_decay": weight_decay},
            {"name": f"{name}_no_decay", "params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0},
        ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("nothing to train: every part is frozen")
    return groups


def optimizer_steps(trainer, batches_per_epoch: int | None) -> int:
    """Optimizer steps of the whole fit, from the training loader's length: Lightning's estimated_stepping_batches
    would build and start iterating the training loader before a checkpoint's data position is restored."""
    if batches_per_epoch is None:
        return max(1, int(trainer.estimated_stepping_batches))
    per_epoch = math.ceil(batches_per_epoch / trainer.accumulate_grad_batches)
    by_epochs = per_epoch * trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
    if trainer.max_steps not in (None, -1):
        return max(1, trainer.max_steps if by_epochs is None else min(trainer.max_steps, by_epochs))
    return max(1, by_epochs or per_epoch)


def warmup_steps(total: int, ratio: float) -> int:
    """The warmup's optimizer steps as the reference's trainer takes them (transformers' TrainingArguments:
    ceil(total x warmup_ratio); 158, not 157, at 5,235 steps and 0.03)."""
    return math.ceil(total * ratio)
