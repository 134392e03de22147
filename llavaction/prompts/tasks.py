"""Tasks as plug-ins: a task is one object (SampleTask) that owns its question and answer in the reference's wording,
the record fields it reads, where its training samples come from and whether it shows prior actions. The data,
prompt and evaluation code ask a task through these functions and never branch on a task's name. The built-in tasks
(MQA, direct narration, temporal detection, replayed conversations) are registered below; README's "Adding a task"
registers another (tests/prompts/test_tasks.py follows it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from llavaction.prompts.wording import (
    CAPTION_QUESTION,
    MQA_ANSWER_FORMAT,
    MQA_OPTIONS_HEADER,
    NARRATION_QUESTION,
    PERSPECTIVE,
    REASONING_FORMAT,
    REPLAY_TIME_INSTRUCTION,
    TEMPORAL_QUESTION,
    PromptError,
    PromptOptions,
    check_options,
    clip_duration,
    exchanges,
    lettered_options,
    option_letters,
    prior_actions_text,
    reference_number,
    time_instruction,
)
from llavaction.utils.constants import IMAGE_PLACEHOLDER


def _single_turn(record: dict) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True)
class SampleTask:
    """One kind of sample.

    Args:
        name: the value of a training source's `task`.
        title: what it is, in a few words (errors and the plan's table).
        question: the task's question for a record (use_priors: with its two prior actions), after the video and
            any time instruction.
        answer: the target text of the first exchange (without the end-of-turn token).
        fields: the record fields the question and answer read: each source's samples are checked for them before
            the first step, one line naming the source and the field.
        samples: where a source's samples come from: 'questions' (a shard set, or a question file over a frame
            store) or 'descriptions' (a descriptions file joined to a shard set's clips).
        shows_priors: its questions can show the two prior actions (data.prior_actions).
        later_turns: the (question, answer) exchanges after the first (a conversation's); none by default.
    """

    name: str
    title: str
    question: Callable[[dict, bool], str]
    answer: Callable[[dict], str]
    fields: tuple[str, ...] = ()
    samples: Literal["questions", "descriptions"] = "questions"
    shows_priors: bool = False
    later_turns: Callable[[dict], list[tuple[str, str]]] = _single_turn

    def check(self, record: dict, source: str) -> None:
        """A record this task can prompt; else one line naming the source and the missing field."""
        missing = [name for name in self.fields if name not in record]
        if missing:
            raise ValueError(f"{source}: task {self.name!r} ({self.title}) needs samples with {missing[0]!r}")


class TaskRegistry:
    """Tasks by name, in the order registered; one instance (TASKS) for the package."""

    def __init__(self):
        self._tasks: dict[str, SampleTask] = {}

    def register(self, task: SampleTask) -> SampleTask:
        if self._tasks.get(task.name, task) is not task:
            raise ValueError(f"task {task.name!r} is registered twice")
        self._tasks[task.name] = task
        return task

    def unregister(self, name: str) -> None:
        """Remove a task (a test's own toy task)."""
        self._tasks.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def get(self, name: str) -> SampleTask:
        if name not in self._tasks:
            raise PromptError(f"unknown task {name!r}; expected one of {', '.join(self._tasks)}")
        return self._tasks[name]

    def __contains__(self, name: str) -> bool:
        return name in self._tasks


TASKS = TaskRegistry()


def _mqa_question(record: dict, use_priors: bool) -> str:
    check_options(record)
    options = lettered_options(record["options"])
    if use_priors:
        return f"{PERSPECTIVE}\n{prior_actions_text(record['prior_actions'])}{options}"
    return f"{PERSPECTIVE}{MQA_ANSWER_FORMAT}\n{MQA_OPTIONS_HEADER}{options}"


def _mqa_answer(record: dict) -> str:
    check_options(record)
    index = record.get("answer_index")
    if index is None:
        raise PromptError(f"{record.get('narration_id', '?')}: no correct option among its options")
    return f"{option_letters(len(record['options']))[index]}. {record['options'][index]}"


def _temporal_question(record: dict, use_priors: bool) -> str:
    duration = float(record["stop_sec"]) - float(record["start_sec"])
    return TEMPORAL_QUESTION.format(narration=record["narration"], duration=reference_number(duration))


def _qa_question(record: dict, use_priors: bool) -> str:
    if record.get("conversation"):
        return exchanges(record)[0][0].replace(IMAGE_PLACEHOLDER, "").strip()
    question = record.get("qa_question")
    return f"{PERSPECTIVE}{CAPTION_QUESTION}" if question is None else question


MQA = TASKS.register(
    SampleTask(
        "mqa",
        "multiple-choice action recognition",
        _mqa_question,
        _mqa_answer,
        fields=("options", "answer_index"),
        shows_priors=True,
    )
)
NARRATION = TASKS.register(
    SampleTask(
        "narration",
        "the action's narration, answered directly",
        lambda record, use_priors: f"{PERSPECTIVE}{NARRATION_QUESTION}",
        lambda record: record["narration"],
        fields=("narration",),
    )
)
TEMPORAL = TASKS.register(
    SampleTask(
        "temporal",
        "temporal detection of a named action",
        _temporal_question,
        lambda record: record["answer"],
        fields=("narration", "start_sec", "stop_sec", "answer"),
    )
)
QA = TASKS.register(
    SampleTask(
        "qa",
        "questions and answers or conversations about a clip",
        _qa_question,
        lambda record: exchanges(record)[0][1] if record.get("conversation") else record["qa_answer"],
        samples="descriptions",
        later_turns=lambda record: exchanges(record)[1:] if record.get("conversation") else [],
    )
)
BUILT_IN: tuple[str, ...] = TASKS.names()
Task = Literal[BUILT_IN]  # type: ignore[valid-type]


def can_show_priors(record: dict, task: str) -> bool:
    """A question of a task that shows prior actions, whose record carries its two (the others are asked plainly)."""
    return TASKS.get(task).shows_priors and len(record.get("prior_actions") or []) == 2


def task_prompt(record: dict, task: str, use_priors: bool = False) -> str:
    """The task's question as the reference words it (format_task_related_prompt)."""
    return TASKS.get(task).question(record, use_priors)


def answer_text(record: dict, task: str) -> str:
    """The target text (without <|im_end|>): 'B. option text' for MQA, the narration, 'start, end', or the answer."""
    return TASKS.get(task).answer(record)


def user_text(
    record: dict, task: str, num_frames: int, options: PromptOptions, use_priors: bool = False, reasoning: bool = False
) -> str:
    """The user turn after `<image>\\n`: the time instruction glued to the task prompt (no separator, as the
    reference's format_llava_prompt glues them), or for replayed general video data the reference trainer's own time
    sentence on a line of its own. reasoning: the question then asks for the reasoning first (REASONING_FORMAT; the
    GRPO stage asks it of MQA questions)."""
    if record.get("replay"):
        question = task_prompt(record, task)
        if not options.time_instruction:
            return question
        sentence = REPLAY_TIME_INSTRUCTION.format(duration=clip_duration(record), num_frames=num_frames)
        if record.get("conversation"):  # the reference keeps the question's own text after `<image>` ("\nQ")
            return f"{sentence}\n{exchanges(record)[0][0].replace(IMAGE_PLACEHOLDER, '')}"
        return f"{sentence}\n{question}"
    question = task_prompt(record, task, use_priors) + (REASONING_FORMAT if reasoning else "")
    return (time_instruction(record, num_frames, options) if options.time_instruction else "") + question


def prompt_turns(
    record: dict, task: str, num_frames: int, options: PromptOptions, use_priors: bool = False
) -> list[tuple[str, str]]:
    """(user text, answer) of every exchange of a sample: one for the EK-100 tasks, each of a conversation's for `qa`
    samples that carry one; the first user text is what follows `<image>\n`."""
    first = (user_text(record, task, num_frames, options, use_priors), answer_text(record, task))
    return [first, *TASKS.get(task).later_turns(record)]
