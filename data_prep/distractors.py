"""Where an EK-100-MQA question's wrong options come from (build_mqa's --distractors): random actions, actions sharing
the ground truth's verb or noun in the annotations, or an action model's ranked predictions."""

from __future__ import annotations

import json
import random
from pathlib import Path

from llavaction.ek100.annotations import Segment, parse_action

Action = tuple[int, int]


def random_distractors(gt: Action, vocabulary: list[Action], k: int, rng: random.Random) -> list[Action]:
    """k distinct wrong actions drawn uniformly from the vocabulary."""
    wrong = [a for a in vocabulary if a != gt]
    if len(wrong) < k:
        raise ValueError(f"the action vocabulary holds {len(wrong)} wrong actions, fewer than {k}")
    return rng.sample(wrong, k)


def annotation_distractors(
    gt: Action, vocabulary: list[Action], counts: dict[Action, int], k: int, rng: random.Random
) -> list[Action]:
    """Hard distractors from the annotations alone: actions sharing the verb or the noun with the ground truth, drawn
    without replacement with probability proportional to (training count + 1); topped up uniformly if too few."""
    related = [a for a in vocabulary if a != gt and (a[0] == gt[0] or a[1] == gt[1])]
    chosen: list[Action] = []
    while related and len(chosen) < k:
        pick = rng.choices(range(len(related)), weights=[counts.get(a, 0) + 1 for a in related])[0]
        chosen.append(related.pop(pick))
    if len(chosen) < k:
        rest = [a for a in vocabulary if a != gt and a not in chosen]
        chosen += rng.sample(rest, k - len(chosen))
    return chosen


class ActionPredictions:
    """An action model's ranked predictions: a JSON {key: {"predictions": ["verb:noun", ...]}} keyed by narration_id,
    or like the reference's files by the segment's 0-based data row in the CSV (its own row, so a skipped bad row
    shifts nothing). Errors name the file and the segment."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason})") from None
        if not isinstance(self.entries, dict):
            raise ValueError(f"{path}: expected a JSON object {{key: {{'predictions': [...]}}}}")

    def ranked(self, segment: Segment, classes: tuple[int, int]) -> list[Action]:
        """The distinct actions predicted for a segment, in rank order; `classes`: the verb and noun class counts."""
        key = segment.narration_id if segment.narration_id in self.entries else str(segment.row)
        if key not in self.entries:
            raise KeyError(f"{self.path}: no predictions for {segment.narration_id} (data row {segment.row})")
        entry = self.entries[key]
        if not isinstance(entry, dict) or not isinstance(entry.get("predictions"), list):
            raise ValueError(f"{self.path}: {segment.narration_id}: expected {{'predictions': ['verb:noun', ...]}}")
        ranked: list[Action] = []
        for text in entry["predictions"]:
            try:
                action = parse_action(text)
            except ValueError as err:
                raise ValueError(f"{self.path}: {segment.narration_id}: {err}") from None
            if not (0 <= action[0] < classes[0] and 0 <= action[1] < classes[1]):
                raise ValueError(f"{self.path}: {segment.narration_id}: {text} names a class the class lists lack")
            if action not in ranked:
                ranked.append(action)
        return ranked


def prediction_options(
    gt: Action, ranked: list[Action], k: int, train: bool, benchmark: bool, rng: random.Random, key: str
) -> list[Action]:
    """Train: k-1 wrong actions sampled from the top-2k plus the ground truth. Validation: the top-k in rank order;
    with benchmark the ground truth replaces the k-th when absent; without it the ground truth may be missing."""
    if train:
        pool = [a for a in ranked[: 2 * k] if a != gt]
        if len(pool) < k - 1:
            raise ValueError(f"predictions for {key}: only {len(pool)} wrong actions in the top {2 * k}, need {k - 1}")
        return [gt] + rng.sample(pool, k - 1)
    top = ranked[:k]
    if len(top) < k:
        raise ValueError(f"predictions for {key}: {len(top)} distinct actions, need {k}")
    if benchmark and gt not in top:
        top[-1] = gt
    return top
