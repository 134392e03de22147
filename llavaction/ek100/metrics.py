"""EPIC-KITCHENS-100 action-recognition metrics as a torchmetrics Metric (summed over ranks), and EPIC's action
ranking."""

from __future__ import annotations

import torch
from torchmetrics import Metric

TOP_N_ACTION = 100  # EPIC: actions are ranked from the top-100 verbs x top-100 nouns
METRIC_KEYS = (
    "all_verb_accuracy_at_1",
    "all_verb_accuracy_at_5",
    "all_noun_accuracy_at_1",
    "all_noun_accuracy_at_5",
    "all_action_accuracy_at_1",
    "all_action_accuracy_at_5",
    "tail_verb_accuracy_at_1",
    "tail_noun_accuracy_at_1",
    "tail_action_accuracy_at_1",
    "unseen_verb_accuracy_at_1",
    "unseen_noun_accuracy_at_1",
    "unseen_action_accuracy_at_1",
)


def action_topk(verb_scores: torch.Tensor, noun_scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """EPIC's action ranking: softmax over all verbs and all nouns, the outer product of the top-100 of each, the k
    best pairs. Returns verb and noun classes, each [N, k]."""
    verb_p, noun_p = verb_scores.float().softmax(-1), noun_scores.float().softmax(-1)
    top_vp, top_v = verb_p.topk(min(TOP_N_ACTION, verb_p.shape[1]), dim=-1)
    top_np, top_n = noun_p.topk(min(TOP_N_ACTION, noun_p.shape[1]), dim=-1)
    pair = (top_vp[:, :, None] * top_np[:, None, :]).flatten(1)
    best = pair.topk(k, dim=-1).indices
    return top_v.gather(1, best // top_n.shape[1]), top_n.gather(1, best % top_n.shape[1])


def top5_hits(verb_scores: torch.Tensor, noun_scores: torch.Tensor, verb: torch.Tensor, noun: torch.Tensor) -> dict:
    """Per segment and rank 1-5: are the verb, the noun and the action (EPIC's ranking) right? {kind: [N, 5]}."""
    top_v, top_n = action_topk(verb_scores, noun_scores, 5)
    return {
        "verb": verb_scores.topk(5, dim=-1).indices == verb[:, None],
        "noun": noun_scores.topk(5, dim=-1).indices == noun[:, None],
        "action": (top_v == verb[:, None]) & (top_n == noun[:, None]),
    }


def segment_group(key: str) -> str:
    """The segments a metric is counted over: 'all', 'unseen', or the tail of its kind ('tail_verb', ...)."""
    group, kind = key.split("_")[:2]
    return group if group in ("all", "unseen") else f"tail_{kind}"


def segment_groups(verb_tail: torch.Tensor, noun_tail: torch.Tensor, unseen: torch.Tensor) -> dict[str, torch.Tensor]:
    """The segments each figure is over: all, tail verbs, tail nouns, tail actions (either is tail), unseen people."""
    return {
        "all": torch.ones_like(verb_tail, dtype=torch.bool),
        "tail_verb": verb_tail,
        "tail_noun": noun_tail,
        "tail_action": verb_tail | noun_tail,
        "unseen": unseen,
    }


class EpicActionMetrics(Metric):
    """Top-1/top-5 verb, noun and action accuracy, and top-1 on tail classes and unseen participants (percent).
    A segment is tail for verbs if its verb is tail, for nouns if its noun is, and for actions if either is."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for key in METRIC_KEYS:
            self.add_state(f"correct_{key}", default=torch.tensor(0.0), dist_reduce_fx="sum")
        for group in ("all", "tail_verb", "tail_noun", "tail_action", "unseen"):
            self.add_state(f"count_{group}", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(
        self,
        verb_scores: torch.Tensor,
        noun_scores: torch.Tensor,
        verb: torch.Tensor,
        noun: torch.Tensor,
        verb_tail: torch.Tensor,
        noun_tail: torch.Tensor,
        unseen: torch.Tensor,
    ) -> None:
        hits = top5_hits(verb_scores, noun_scores, verb, noun)
        groups = segment_groups(verb_tail, noun_tail, unseen)
        for name, mask in groups.items():
            setattr(self, f"count_{name}", getattr(self, f"count_{name}") + mask.sum())
        for key in METRIC_KEYS:
            kind, k = key.split("_")[1], int(key[-1])
            correct = hits[kind][:, :k].any(-1) & groups[segment_group(key)]
            setattr(self, f"correct_{key}", getattr(self, f"correct_{key}") + correct.sum())

    def update_from_batch(self, verb_scores: torch.Tensor, noun_scores: torch.Tensor, batch: dict) -> None:
        """update() with a collated batch's labels, leaving out padding rows and segments without classes."""
        keep = ~batch.is_padding & (batch.verb_class >= 0)
        self.update(
            verb_scores[keep],
            noun_scores[keep],
            batch.verb_class[keep],
            batch.noun_class[keep],
            batch.verb_tail[keep],
            batch.noun_tail[keep],
            batch.unseen[keep],
        )

    def compute(self) -> dict[str, torch.Tensor]:
        """The figures over segments of their group; a figure whose group holds no segment (annotations without tail
        classes or unseen participants) is not applicable and left out, never a 0."""
        out = {}
        for key in METRIC_KEYS:
            count = getattr(self, f"count_{segment_group(key)}")
            if count > 0:
                out[key] = 100.0 * getattr(self, f"correct_{key}") / count
        return out
