"""Typed options of validation and evaluation: how MQA questions are answered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llavaction.utils.checks import check_count

ScoringMode = Literal["generate", "letter", "likelihood"]
PriorActionsShown = Literal["none", "oracle", "pseudo"]
MAX_NEW_TOKENS = 4096  # the reference's max_new_tokens; generation stops earlier at the end-of-turn token


@dataclass(frozen=True)
class EvaluationOptions:
    """How validation and test answer the MQA questions.

    Args:
        mqa_scoring: each mode logs val/mqa_accuracy_<mode>, the first also val/mqa_accuracy: 'generate' (greedy
            answer scored by the paper's rule: its text after the last 'X. ' equals the right option's), 'letter'
            (next-token logits of the option letters; free with 'generate') or 'likelihood' (log-likelihood of each
            option's text given the clip).
        max_new_tokens: longest generated answer; generation stops earlier at the end-of-turn token (the reference's
            4096).
    """

    mqa_scoring: tuple[ScoringMode, ...] = ("generate", "letter")
    max_new_tokens: int = MAX_NEW_TOKENS

    def __post_init__(self):
        if not self.mqa_scoring or len(set(self.mqa_scoring)) != len(self.mqa_scoring):
            raise ValueError(f"mqa_scoring must list distinct modes, got {list(self.mqa_scoring)}")
        check_count("model.evaluation.max_new_tokens", self.max_new_tokens, minimum=1)


@dataclass(frozen=True, kw_only=True)
class QuestionOptions:
    """How evaluation questions are asked; what is not given follows the checkpoint's training.

    Args:
        num_frames: frames a question shows (default: the checkpoint's training frames, else all the shards hold).
        time_instruction: state the clip's duration and frame count (default: as the checkpoint was trained).
        frame_times: with the time instruction, also list each frame's time (default: as the checkpoint was trained).
        prior_actions: show the two previous actions: 'none' (the paper's evaluation), 'oracle' (the ground truth) or
            'pseudo' (the model's own earlier answers, from pseudo_predictions).
        pseudo_predictions: predictions.jsonl of an earlier `llavaction evaluate mqa` run, for prior_actions 'pseudo'.
    """

    num_frames: int | None = None
    time_instruction: bool | None = None
    frame_times: bool | None = None
    prior_actions: PriorActionsShown = "none"
    pseudo_predictions: str | None = None

    def __post_init__(self):
        if self.num_frames is not None:
            check_count("num_frames", self.num_frames, minimum=1)
        if (self.prior_actions == "pseudo") != (self.pseudo_predictions is not None):
            raise ValueError("pseudo_predictions goes with prior_actions 'pseudo', and only with it")
