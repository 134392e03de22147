"""Verifiable rewards of MQA completions: small named objects in one registry (REWARDS). A reward takes the completions
of a batch (Completions: each question's G completions, its options and answer) and gives one value a completion;
the stage sums them with their weights (RewardOptions.weights). A researcher adds one with `@register("name")` on a
factory taking the RewardOptions.

    @register("brevity")
    def brevity(options):
        return Brevity()   # any object with .name, .shuffled (bool) and __call__(completions) -> list[float]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from llavaction.benchmark.answers import rule_choice
from llavaction.training.grpo.options import RewardOptions

THINK_END = "</think>"
# the reasoning format: reasoning inside <think> ... </think>, then a non-empty answer (Video-R1's format reward reads
# `<think>.*?</think>\s*<answer>.*?</answer>`; the paper's rule reads the answer here, so no answer tags)
REASONING_FORMAT = re.compile(r"\s*<think>.*?</think>\s*\S.*", re.DOTALL)


@dataclass(frozen=True)
class Completions:
    """The completions of Q questions, G a question, question by question (question q's are rows q*G .. q*G+G-1).

    Args:
        texts: the Q x G completions, decoded without special tokens.
        questions: the Q questions' records (options, answer_index).
        group_size: G.
        reasoning: the prompts asked for reasoning first: answers are read after the last </think>.
        shuffled: Q x S completions of the same questions on shuffled frames (temporal rewards), None without.
    """

    texts: list[str]
    questions: list[dict]
    group_size: int
    reasoning: bool = False
    shuffled: list[str] | None = None

    def question_of(self, row: int) -> dict:
        return self.questions[row // self.group_size]

    def choices(self) -> list[int | None]:
        """The option each completion chooses by the paper's rule (None: none matches)."""
        return [self.choice(text, self.question_of(row)) for row, text in enumerate(self.texts)]

    def choice(self, text: str, question: dict) -> int | None:
        return rule_choice(final_answer(text, self.reasoning), question["options"], question["answer_index"])

    def correct(self) -> list[float]:
        return [float(c == self.question_of(r)["answer_index"]) for r, c in enumerate(self.choices())]


def final_answer(text: str, reasoning: bool) -> str:
    """What the paper's rule reads: with the reasoning format, the text after the last </think> (the whole text
    without one); otherwise the text."""
    return text.rsplit(THINK_END, 1)[-1].strip() if reasoning else text


class Accuracy:
    """1 when the paper's rule reads the right option in the completion, else 0 (benchmark.answers.rule_choice)."""

    name, shuffled = "accuracy", False

    def __call__(self, completions: Completions) -> list[float]:
        return completions.correct()


class Format:
    """1 when the completion reasons inside <think> ... </think> and then answers, else 0 (Video-R1's format
    reward, without its answer tags)."""

    name, shuffled = "format", False

    def __call__(self, completions: Completions) -> list[float]:
        return [float(REASONING_FORMAT.fullmatch(text) is not None) for text in completions.texts]


class Temporal:
    """Video-R1's T-GRPO bonus: each question is also answered on its frames shuffled (reward only); where the
    ordered completions' accuracy is at least mu x the shuffled ones', each correct ordered completion gets alpha."""

    name, shuffled = "temporal", True

    def __init__(self, alpha: float, mu: float):
        self.alpha, self.mu = alpha, mu

    def __call__(self, completions: Completions) -> list[float]:
        if completions.shuffled is None:
            raise ValueError("the temporal reward needs the completions on shuffled frames")
        g, correct = completions.group_size, completions.correct()
        s = len(completions.shuffled) // len(completions.questions)
        rewards = []
        for q, question in enumerate(completions.questions):
            ordered = correct[q * g : (q + 1) * g]
            shuffled = completions.shuffled[q * s : (q + 1) * s]
            shuffled_accuracy = sum(completions.choice(t, question) == question["answer_index"] for t in shuffled) / s
            beats = sum(ordered) / g >= self.mu * shuffled_accuracy
            rewards += [self.alpha * c if beats else 0.0 for c in ordered]
        return rewards


REWARDS: dict[str, Callable[[RewardOptions], object]] = {}


def register(name: str):
    """Adds a reward factory (RewardOptions -> reward) under a name the weights can give."""

    def add(factory):
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is registered twice")
        REWARDS[name] = factory
        return factory

    return add


register("accuracy")(lambda options: Accuracy())
register("format")(lambda options: Format())
register("temporal")(lambda options: Temporal(options.temporal_alpha, options.temporal_mu))


def build_rewards(options: RewardOptions, reasoning: bool) -> dict[str, object]:
    """The weighted rewards by name; an unknown name, or the format reward without the reasoning format, refused in
    one line."""
    unknown = sorted(set(options.weights) - set(REWARDS))
    if unknown:
        raise ValueError(f"model.rewards.weights: unknown reward {unknown[0]!r}; known: {', '.join(REWARDS)}")
    if "format" in options.weights and not reasoning:
        raise ValueError("model.rewards.weights: the format reward scores the reasoning format; set model.reasoning")
    return {name: REWARDS[name](options) for name in options.weights}


def score(rewards: dict[str, object], weights: dict[str, float], completions: Completions) -> dict[str, list[float]]:
    """Each reward's values and their weighted sum ('total')."""
    values = {name: list(reward(completions)) for name, reward in rewards.items()}
    for name, row in values.items():
        if len(row) != len(completions.texts):
            raise ValueError(f"reward {name!r} gave {len(row)} values for {len(completions.texts)} completions")
    values["total"] = [sum(weights[n] * values[n][i] for n in rewards) for i in range(len(completions.texts))]
    return values
