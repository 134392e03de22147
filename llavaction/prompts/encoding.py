"""Chat text and tokenisation: a sample is a Qwen ChatML conversation, the system message, then a user turn `<image>\n`
+ (time instruction) + task prompt, then the assistant answer; only the answer tokens (and the closing <|im_end|>)
carry labels. Training, evaluation, prediction, the exports and `llavaction prompts render` share it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

import torch

from llavaction.prompts.formats import ClipTiming, SplicedVideo, VideoFormat
from llavaction.prompts.tasks import answer_text, can_show_priors, user_text
from llavaction.prompts.wording import (
    CAPTION_QUESTION,
    FRAME_TIMES,
    MQA_ANSWER_FORMAT,
    MQA_OPTIONS_HEADER,
    NARRATION_QUESTION,
    PERSPECTIVE,
    PRIOR_ACTIONS,
    REPLAY_TIME_INSTRUCTION,
    TEMPORAL_QUESTION,
    TIME_INSTRUCTION,
    PromptError,
    PromptOptions,
    option_letters,
    with_pseudo_priors,
)
from llavaction.utils.constants import EOS_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX, SYSTEM_MESSAGE

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM_TURN = f"<|im_start|>system\n{SYSTEM_MESSAGE}{EOS_TOKEN}\n"
USER_START = "<|im_start|>user\n"
ASSISTANT_START = "<|im_start|>assistant\n"


REFERENCE_FORMAT = SplicedVideo()  # the reference's qwen_1_5 template, its placeholder spliced by the model


def chat_prompt(user: str, chat: VideoFormat = REFERENCE_FORMAT) -> str:
    """The whole text the tokenizer receives up to the answer, in the backbone's chat template: the system turn (if
    its template has one), then the user turn, the clip's marker (`<image>\\n`, or Qwen's vision block) before the
    user's words."""
    system = f"<|im_start|>system\n{chat.system}{EOS_TOKEN}\n" if chat.system is not None else ""
    return f"{system}{USER_START}{chat.video_marker}{user}{EOS_TOKEN}\n{ASSISTANT_START}"


def next_turn(user: str) -> str:
    """The text between an answer's <|im_end|> and the next answer: the user's next question."""
    return f"\n{USER_START}{user}{EOS_TOKEN}\n{ASSISTANT_START}"


def prompt_vocabulary_corpus() -> list[str]:
    """The fixed wording, for building a tokenizer that knows it (the tiny preset)."""
    return [
        SYSTEM_TURN,
        USER_START,
        ASSISTANT_START,
        PERSPECTIVE,
        MQA_ANSWER_FORMAT,
        MQA_OPTIONS_HEADER,
        PRIOR_ACTIONS,
        NARRATION_QUESTION,
        CAPTION_QUESTION,
        TEMPORAL_QUESTION,
        TIME_INSTRUCTION,
        FRAME_TIMES,
        REPLAY_TIME_INSTRUCTION,
        ", ".join(f"{c}. " for c in string.ascii_uppercase),
        "0123456789 0.00, 1.25 3.0 seconds ago",
    ]


class PromptTooLong(ValueError):
    pass


@dataclass(frozen=True)
class EncodedPrompt:
    input_ids: list[int]  # the clip's ids in place of its marker (LLaVA-Video: IMAGE_TOKEN_INDEX once)
    labels: list[int]  # IGNORE_INDEX except on the answer
    truncated: bool = False


@dataclass(frozen=True)
class VisualSpan:
    """What a clip takes in a prompt: the ids its marker becomes and the sequence length they make (LLaVA-Video: one
    placeholder that the model turns into `length` visual tokens)."""

    ids: list[int]
    length: int


class PromptEncoder:
    """Tokenises chat prompts in a backbone's chat format; the text before the clip is tokenised once. `max_length`
    counts the visual tokens too: a longer sample raises PromptTooLong, or with overflow='truncate' loses the end of
    its answer (never the visual tokens or the question)."""

    def __init__(
        self,
        tokenizer,
        max_length: int = 32768,
        overflow: Literal["error", "truncate"] = "error",
        chat: VideoFormat = REFERENCE_FORMAT,
    ):
        if overflow not in ("error", "truncate"):
            raise ValueError(f"overflow must be 'error' or 'truncate', not {overflow!r}")
        self.tokenizer, self.max_length, self.overflow, self.chat = tokenizer, max_length, overflow, chat
        self.prefix_ids = self._ids(chat_prompt("", chat).split(chat.placeholder)[0])
        self.eos_ids = self._ids(EOS_TOKEN)

    def visual(self, clip: ClipTiming, frame_size: int) -> VisualSpan:
        """The span of a clip (its frames' timing, frames of frame_size pixels) in this format."""
        ids, length = self.chat.visual_ids(clip, frame_size, self._ids)
        return VisualSpan(ids, length)

    def _ids(self, text: str) -> list[int]:
        # the Rust tokenizer straight: the same ids without transformers' per-call overhead (a loader's hot path)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(
        self, question: str, answer: str | None, visual: VisualSpan | int, name: str = "sample"
    ) -> EncodedPrompt:
        """question: the user text after the clip; answer=None gives the prompt up to the assistant turn (for
        scoring and generation). visual: the clip's span, or for LLaVA-Video its visual token count."""
        return self.encode_turns([(question, answer)], visual, name)

    def encode_turns(
        self, turns: list[tuple[str, str | None]], visual: VisualSpan | int, name: str = "sample"
    ) -> EncodedPrompt:
        """A whole conversation: labels on every answer and its <|im_end|>. Too long for max_length: an error, or
        with overflow='truncate' whole trailing exchanges are dropped and, if the first alone is too long, the end of
        its answer is cut; the visual tokens and the first question are never cut."""
        if isinstance(visual, int):  # LLaVA-Video's one placeholder for `visual` tokens
            visual = VisualSpan([IMAGE_TOKEN_INDEX], visual)
        num_visual_tokens = visual.length
        after_image = chat_prompt(turns[0][0], self.chat).split(self.chat.placeholder, 1)[1]
        input_ids = self.prefix_ids + list(visual.ids) + self._ids(after_image)
        labels = [IGNORE_INDEX] * len(input_ids)
        budget = self.max_length - num_visual_tokens + len(visual.ids)  # the span's ids become its tokens
        truncated = False
        for index, (user, answer) in enumerate(turns):
            question_ids = [] if index == 0 else self._ids(next_turn(user))
            answer_ids = [] if answer is None else self._ids(answer) + self.eos_ids
            room = budget - len(input_ids) - len(question_ids)
            if len(answer_ids) > room:
                if self.overflow == "error" or (index == 0 and room <= 0):
                    total = len(input_ids) + len(question_ids) + len(answer_ids) + num_visual_tokens - len(visual.ids)
                    raise PromptTooLong(
                        f"{name}: {total} tokens with {num_visual_tokens} visual tokens exceed "
                        f"max_length={self.max_length}"
                    )
                truncated = True
                if index > 0:
                    break
                answer_ids = answer_ids[:room]
            input_ids += question_ids + answer_ids
            labels += [IGNORE_INDEX] * len(question_ids) + answer_ids
        return EncodedPrompt(input_ids, labels, truncated=truncated)

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


def render(
    records: list[dict],
    task: str,
    num_frames: int,
    options: PromptOptions,
    prior_actions: bool,
    pseudo_priors: dict[str, str] | None = None,
) -> list[dict]:
    """{narration_id, prompt, answer} per record: the whole chat text up to the answer and the target text. With
    prior_actions, a question whose record carries two prior actions shows them (the others are asked plainly), named
    by pseudo_priors (narration_id -> the model's earlier answer) when given."""
    rendered = []
    for record in records:
        use_priors = prior_actions and can_show_priors(record, task)
        if use_priors and pseudo_priors is not None:
            record = with_pseudo_priors(record, pseudo_priors)
        try:
            prompt = chat_prompt(user_text(record, task, num_frames, options, use_priors))
            answer = answer_text(record, task)
        except KeyError as err:
            raise PromptError(f"{record.get('narration_id', '?')}: no {err} for a {task} prompt") from None
        rendered.append({"narration_id": record.get("narration_id"), "prompt": prompt, "answer": answer})
    return rendered
