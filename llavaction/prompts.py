"""Prompt wording and tokenisation in one place, used by training, evaluation and exports alike.

A sample is a Qwen ChatML conversation: the system message, then a user turn starting with the `<image>` placeholder
followed by the question, then the assistant answer. Only the answer tokens (and the closing <|im_end|>) carry labels.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch

from llavaction.constants import (
    EOS_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX, SYSTEM_MESSAGE,
)

TASKS = ("mqa", "narration", "temporal", "qa")
EGOCENTRIC_INTRO = "You are seeing this video from an egocentric, first-person view."
MQA_INSTRUCTION = "What action are you performing? Choose the best option."
MQA_PRIOR_INSTRUCTION = "What action are you currently performing? Choose the best option."
MQA_ANSWER_FORMAT = "Answer with the option's letter and its text."
NARRATION_INSTRUCTION = "Describe in a short phrase the action you are performing."
TEMPORAL_INSTRUCTION = (
    "When does the action '{action}' start and end in this video? Answer with the start and end times in seconds, "
    "as 'start, end'."
)
TIME_INSTRUCTION = "The provided video lasts for {duration:.3f} seconds, and {num_frames} frames are uniformly sampled from it."
FRAME_TIMES_INSTRUCTION = "These frames are located at {times}."
PRIOR_ACTION = "{offset} seconds ago, you started an action {text}."

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PREFIX = f"<|im_start|>system\n{SYSTEM_MESSAGE}<|im_end|>\n<|im_start|>user\n"
_ASSISTANT = f"{EOS_TOKEN}\n<|im_start|>assistant\n"


def option_letters(count: int) -> list[str]:
    return list(string.ascii_uppercase[:count])


def format_options(options: list[str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in zip(option_letters(len(options)), options))


def prior_action_context(priors: list[dict]) -> str:
    """'{t2} seconds ago, you started an action {a2}. {t1} seconds ago, ...' (oldest first)."""
    return " ".join(PRIOR_ACTION.format(offset=f"{p['offset_sec']:.2f}", text=p["text"]) for p in priors)


def time_context(record: dict, num_frames: int, with_frame_times: bool) -> str:
    duration = record["clip_stop_sec"] - record["clip_start_sec"]
    text = TIME_INSTRUCTION.format(duration=duration, num_frames=num_frames)
    if with_frame_times:
        times = ", ".join(f"{t - record['clip_start_sec']:.2f}s" for t in record["frame_times_sec"])
        text += " " + FRAME_TIMES_INSTRUCTION.format(times=times)
    return text


def check_options(record: dict) -> None:
    """An MQA record's options, their actions and its answer must agree; the error names the question."""
    options, name = record.get("options") or [], record.get("narration_id", "?")
    if not 2 <= len(options) <= 26:
        raise ValueError(f"{name}: {len(options)} options; a question needs 2 to 26")
    actions = record.get("option_actions")
    if actions is not None and len(actions) != len(options):
        raise ValueError(f"{name}: {len(options)} options but {len(actions)} option_actions")
    answer = record.get("answer_index")
    if answer is not None and not 0 <= answer < len(options):
        raise ValueError(f"{name}: answer_index {answer} outside its {len(options)} options")


@dataclass(frozen=True)
class PromptOptions:
    """Switches that add context to the question; each defaults to the plain wording.

    Args:
        time_instruction: state the clip duration and frame count before the question.
        frame_times: with time_instruction, also list the time of each frame.
        prior_actions: prefix MQA questions with the two previous actions (when the record carries them).
    """

    time_instruction: bool = False
    frame_times: bool = False
    prior_actions: bool = False


def build_question(record: dict, task: str, num_frames: int, options: PromptOptions, use_priors: bool = False) -> str:
    """The user-turn text after the <image> placeholder."""
    lines = [EGOCENTRIC_INTRO]
    if options.time_instruction or task == "temporal":
        lines.append(time_context(record, num_frames, options.frame_times))
    if task == "mqa":
        check_options(record)
        priors = record.get("prior_actions") or []
        if use_priors and priors:
            lines.append(prior_action_context(priors))
            lines.append(MQA_PRIOR_INSTRUCTION)
        else:
            lines.append(MQA_INSTRUCTION)
        lines.append(format_options(record["options"]))
        lines.append(MQA_ANSWER_FORMAT)
    elif task == "narration":
        lines.append(NARRATION_INSTRUCTION)
    elif task == "temporal":
        lines.append(TEMPORAL_INSTRUCTION.format(action=record["narration"]))
    elif task == "qa":
        lines.append(record["qa_question"])
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return "\n".join(lines)


def build_answer(record: dict, task: str) -> str:
    if task == "mqa":
        index = record["answer_index"]
        if index is None:
            raise ValueError(f"{record['narration_id']}: no correct option to train on")
        return f"{option_letters(len(record['options']))[index]}. {record['options'][index]}"
    if task in ("narration", "temporal"):
        return record["answer"] if "answer" in record else record["narration"]
    if task == "qa":
        return record["qa_answer"]
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def prompt_vocabulary_corpus() -> list[str]:
    """The fixed wording, for building a tokenizer that knows it."""
    return [
        _PREFIX, _ASSISTANT, EGOCENTRIC_INTRO, MQA_INSTRUCTION, MQA_PRIOR_INSTRUCTION, MQA_ANSWER_FORMAT,
        NARRATION_INSTRUCTION, TEMPORAL_INSTRUCTION, TIME_INSTRUCTION, FRAME_TIMES_INSTRUCTION, PRIOR_ACTION,
        " ".join(f"{c}. " for c in string.ascii_uppercase), "0123456789 0.00, 1.25 seconds ago",
    ]


class PromptTooLong(ValueError):
    pass


@dataclass(frozen=True)
class EncodedPrompt:
    input_ids: list[int]  # holds IMAGE_TOKEN_INDEX once
    labels: list[int]  # IGNORE_INDEX except on the answer
    truncated: bool = False


class PromptEncoder:
    """Tokenises conversations; the fixed parts are tokenised once. `max_length` counts the visual tokens too: a longer
    sample raises PromptTooLong, or with overflow='truncate' loses the end of its answer (never the visual tokens or
    the question)."""

    def __init__(self, tokenizer, max_length: int = 32768, overflow: str = "error"):
        if overflow not in ("error", "truncate"):
            raise ValueError(f"overflow must be 'error' or 'truncate', not {overflow!r}")
        self.tokenizer, self.max_length, self.overflow = tokenizer, max_length, overflow
        self.prefix_ids = self._ids(_PREFIX)
        self.eos_ids = self._ids(EOS_TOKEN)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, question: str, answer: str | None, num_visual_tokens: int, name: str = "sample") -> EncodedPrompt:
        """answer=None gives the prompt up to the assistant turn (for scoring and generation)."""
        context = self.prefix_ids + [IMAGE_TOKEN_INDEX] + self._ids("\n" + question + _ASSISTANT)
        answer_ids = [] if answer is None else self._ids(answer) + self.eos_ids
        room = self.max_length - num_visual_tokens + 1 - len(context)  # the placeholder becomes the visual tokens
        truncated = len(answer_ids) > room
        if truncated:
            if self.overflow == "error" or room <= 0:
                raise PromptTooLong(
                    f"{name}: {len(context) + len(answer_ids) + num_visual_tokens - 1} tokens with "
                    f"{num_visual_tokens} visual tokens exceed max_length={self.max_length}"
                )
            answer_ids = answer_ids[:room]
        return EncodedPrompt(
            context + answer_ids, [IGNORE_INDEX] * len(context) + answer_ids, truncated=truncated,
        )

    def letter_token_ids(self, count: int) -> list[int]:
        """The token id of each option letter as the first token of the answer."""
        ids = [self._ids(letter) for letter in option_letters(count)]
        if any(len(i) != 1 for i in ids):
            raise ValueError("the tokenizer does not encode every option letter as one token")
        return [i[0] for i in ids]


def pad_right(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(input_ids, labels) rows -> right-padded input_ids, labels and attention_mask tensors."""
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for row, (ids, row_labels) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(row_labels)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
