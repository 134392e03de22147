"""Training losses beyond the language-model loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# LLaVAction's weighting of the action-supervision heads.
VERB_WEIGHT, NOUN_WEIGHT, ACTION_WEIGHT = 0.5, 0.5, 0.1


def action_supervision_loss(
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    verb: torch.Tensor,
    noun: torch.Tensor,
    action: torch.Tensor,
    normalization: str = "reference",
) -> torch.Tensor:
    """0.5 CE_verb + 0.5 CE_noun + 0.1 CE_action per head layer, over the samples with class labels (label -1: a task
    without them, or padding), summed over the layers and divided by their number + 1 ('reference', as the released
    code) or averaged over them ('mean'); 0 when the batch has none."""
    labelled = (verb >= 0) & (noun >= 0) & (action >= 0)
    if not labelled.any():
        return sum(v.sum() + n.sum() + a.sum() for v, n, a in action_logits) * 0.0  # keeps every head in the graph
    per_layer = [
        VERB_WEIGHT * F.cross_entropy(v[labelled].float(), verb[labelled])
        + NOUN_WEIGHT * F.cross_entropy(n[labelled].float(), noun[labelled])
        + ACTION_WEIGHT * F.cross_entropy(a[labelled].float(), action[labelled])
        for v, n, a in action_logits
    ]
    if normalization == "reference":
        return torch.stack(per_layer).sum() / (len(per_layer) + 1)
    return torch.stack(per_layer).mean()
