"""Training losses beyond the language-model loss, and the language-model loss of each task of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llavaction.utils.constants import IGNORE_INDEX

# LLaVAction's weighting of the action-supervision heads.
VERB_WEIGHT, NOUN_WEIGHT, ACTION_WEIGHT = 0.5, 0.5, 0.1


def action_supervision_loss(
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    verb: torch.Tensor,
    noun: torch.Tensor,
    action: torch.Tensor,
    normalization: str = "reference",
) -> torch.Tensor:
    """0.5 CE_verb + 0.5 CE_noun + 0.1 CE_action per head layer over the samples with a verb label, as the reference
    selects them (label -1: a task without classes, or padding); a sample with a verb but without a noun or action
    label (data of one's own with a verb vocabulary alone) leaves out those terms, where the reference's cross-entropy
    would fail on the -1. Summed over the layers and divided by their number + 1 ('reference', as the released code)
    or averaged over them ('mean'); 0 when the batch has no verb label."""
    labelled = verb >= 0
    if not labelled.any():
        return sum(v.sum() + n.sum() + a.sum() for v, n, a in action_logits) * 0.0  # keeps every head in the graph
    per_layer = [
        VERB_WEIGHT * _cross_entropy(v, verb, labelled, "verb")
        + NOUN_WEIGHT * _cross_entropy(n, noun, labelled, "noun")
        + ACTION_WEIGHT * _cross_entropy(a, action, labelled, "action")
        for v, n, a in action_logits
    ]
    if normalization == "reference":
        return torch.stack(per_layer).sum() / (len(per_layer) + 1)
    return torch.stack(per_layer).mean()


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, head: str) -> torch.Tensor:
    """Mean cross-entropy over `rows` whose label is known; 0 (in the graph) when none is. A label beyond the head's
    classes (a vocabulary of one's own larger than model.action.types) is one line, not a device assert."""
    keep = rows & (labels >= 0)
    if not keep.any():
        return logits.sum() * 0.0
    largest = int(labels[keep].max())
    if largest >= logits.shape[1]:
        raise ValueError(
            f"a training sample's {head} class is {largest}, beyond the {head} head's {logits.shape[1]} classes: set "
            "model.action.types to the class counts build_mqa prints for these annotations"
        )
    return F.cross_entropy(logits[keep].float(), labels[keep])


@torch.no_grad()
def task_losses(logits: torch.Tensor, labels: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
    """The language-model loss of each task in a batch: the mean cross-entropy over that task's supervised tokens
    (logits [N, V] at the N supervised positions of labels [B, S] in row order, as the models' forward gives them;
    tasks: each row's). {} where the rows cannot be told apart (packed sequences)."""
    targets = labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    if labels.shape[0] != len(tasks) or int(supervised.sum()) != logits.shape[0]:
        return {}
    token_loss = F.cross_entropy(logits.float(), targets[supervised], reduction="none")
    rows = supervised.nonzero()[:, 0]
    losses = {}
    for task in sorted(set(tasks) - {"padding"}):
        mine = torch.tensor([tasks[row] == task for row in rows.tolist()], device=token_loss.device)
        if mine.any():
            losses[task] = token_loss[mine].mean()
    return losses
