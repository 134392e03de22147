"""The reference's prompt wording, byte for byte: the sentences of the task questions, the time instruction, prior
actions, options and conversations (tasks.py puts them together, a task at a time). The published checkpoints were
trained on it (README, "Differences from the reference code", lists where we deliberately depart); the chat template
and tokenisation around it are encoding.py's.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

MAX_OPTIONS = 26

# The reference's sentences (format_task_related_prompt, format_time_instruction, the temporal-detection data).
PERSPECTIVE = (
    "You are seeing this video from egocentric view and you are the person. Your hands are sometimes interacting "
    "with objects. What action are you doing? "
)
MQA_ANSWER_FORMAT = "Given multiple choices, format your answer briefly such as 'A. move knife'. "
MQA_OPTIONS_HEADER = "Here are the options of actions you are selecting:\n"
PRIOR_ACTIONS = (
    "{offset2} seconds ago, you started an action {action2}. {offset1} seconds ago, you started an action {action1}. "
    "What action are you currently performing? Here are the options of actions you can select:\n"
)
NARRATION_QUESTION = " What action are you performing? Give a short sentence such as 'move knife'."
CAPTION_QUESTION = (
    " Describe in details what you see from the video frames. You must talk in the first person perspective. "
    "Try to focus on what you are doing. "
)
TEMPORAL_QUESTION = (
    "The provided video contains an action '{narration}' that lasts {duration} seconds. What is the relative start "
    "and end time of the action in seconds? Format it as 'start_timestamp: end_timestamp' and round to 2 decimal "
    "places."
)
TIME_INSTRUCTION = (
    "The provided video lasts for {duration:.3f} seconds, and {num_frames} frames are uniformly sampled from it."
)
FRAME_TIMES = "These frames are located at {times}. The video duration is {duration:.3f} seconds. "
# Not the reference's: the reasoning format of RL post-training (model.reasoning), after the MQA question. Our own
# sentence, in the spirit of Video-R1's question template (reasoning in <think> </think>, then the answer) but asking
# for the answer as the paper's rule reads it ('A. move knife'), with no answer tags.
REASONING_FORMAT = (
    " First think about the frames and the options step by step inside <think> </think> tags, then give your answer "
    "after the closing tag, briefly such as 'A. move knife'."
)
# Replayed general video data (LLaVA-Video-178K) gets the reference trainer's own time sentence, on its own line.
REPLAY_TIME_INSTRUCTION = (
    "The video lasts for {duration:.2f} seconds, and {num_frames} frames are uniformly sampled from it. "
    "Please answer the following questions related to this video."
)


class PromptError(ValueError):
    """A record that cannot become a prompt; the message names it."""


def option_letters(count: int) -> list[str]:
    return list(string.ascii_uppercase[:count])


def lettered_options(options: list[str]) -> str:
    """'A. open drawer, B. close drawer, ...' on one line, as the reference joins them."""
    return ", ".join(f"{letter}. {text}" for letter, text in zip(option_letters(len(options)), options))


def reference_number(value: float) -> str:
    """A number as the reference prints it: rounded to 2 decimals, then as Python prints a float ('3.0', '1.25')."""
    return str(round(float(value), 2))


def check_options(record: dict) -> None:
    """An MQA record's options, their actions and its answer must agree; the error names the question."""
    options, name = record.get("options") or [], record.get("narration_id", "?")
    if not 2 <= len(options) <= MAX_OPTIONS:
        raise PromptError(f"{name}: {len(options)} options; a question needs 2 to {MAX_OPTIONS}")
    actions = record.get("option_actions")
    if actions is not None and len(actions) != len(options):
        raise PromptError(f"{name}: {len(options)} options but {len(actions)} option_actions")
    answer = record.get("answer_index")
    if answer is not None and not (isinstance(answer, int) and 0 <= answer < len(options)):
        raise PromptError(f"{name}: answer_index {answer!r} outside its {len(options)} options")


@dataclass(frozen=True)
class PromptOptions:
    """What the question states besides the task; the defaults are the reference's base prompt.

    Args:
        time_instruction: state the clip's duration and frame count before the task prompt (the published
            LLaVAction-7B was trained and is evaluated with it).
        frame_times: with time_instruction, also list each frame's time (the reference's include_frame_time).
    """

    time_instruction: bool = False
    frame_times: bool = False


def clip_duration(record: dict) -> float:
    return float(record["clip_stop_sec"]) - float(record["clip_start_sec"])


def time_instruction(record: dict, num_frames: int, options: PromptOptions) -> str:
    """The reference's time sentence (and frame times) for the clip the sample shows."""
    duration = clip_duration(record)
    text = TIME_INSTRUCTION.format(duration=duration, num_frames=num_frames)
    if options.frame_times:
        times = ", ".join(f"{i * duration / num_frames:.2f}s" for i in range(num_frames))
        text += FRAME_TIMES.format(times=times, duration=duration)
    return text


def prior_actions_text(priors: list[dict]) -> str:
    """The reference's sentence naming the two previous actions (oldest first) and asking for the current one."""
    if len(priors) != 2:
        raise ValueError(f"prior actions need exactly two earlier segments, got {len(priors)}")
    older, newer = priors
    return PRIOR_ACTIONS.format(
        offset2=reference_number(older["offset_sec"]),
        action2=older["text"],
        offset1=reference_number(newer["offset_sec"]),
        action1=newer["text"],
    )


def with_pseudo_priors(record: dict, pseudo: dict[str, str]) -> dict:
    """The record with its prior actions named by the model's own earlier answers (narration_id -> chosen text)."""
    priors = record.get("prior_actions") or []
    absent = [p["narration_id"] for p in priors if p["narration_id"] not in pseudo]
    if absent:
        name = record.get("narration_id", "?")
        raise PromptError(f"{name}: no earlier prediction for its prior action {absent[0]}")
    return record | {"prior_actions": [p | {"text": pseudo[p["narration_id"]]} for p in priors]}


def exchanges(record: dict) -> list[tuple[str, str]]:
    """(question, answer) pairs of a `conversation` ([{"from": "human" | "gpt", "value": ...}, ...], LLaVA's format):
    a leading non-human turn and a trailing unanswered question are left out, as LLaVA's trainer does."""
    name = record.get("narration_id", "?")
    turns = list(record["conversation"])
    if turns and turns[0].get("from") != "human":
        turns = turns[1:]
    pairs = []
    for i in range(0, len(turns) - 1, 2):
        human, gpt = turns[i], turns[i + 1]
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise PromptError(f"{name}: turn {i + 1} is not a human question followed by a gpt answer")
        pairs.append((str(human.get("value", "")), str(gpt.get("value", ""))))
    if not pairs:
        raise PromptError(f"{name}: the conversation holds no question with an answer")
    return pairs
