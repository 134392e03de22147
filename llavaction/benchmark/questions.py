"""The question record and its one reader. build_mqa writes a question file of QuestionRecord lines (one per segment
and task); every reader (training's question files over frame stores, evaluation, `prompts render`, the lmms-eval
export) reads it through iter_question_file, which checks what each needs: the file still matches its benchmark card,
every record has a narration_id, none is asked twice, and the file holds a question."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

from llavaction.benchmark.card import read_card
from llavaction.utils.jsonl import iter_jsonl


class PriorAction(TypedDict):
    """An earlier segment of the same video, shown in MQA questions with prior actions."""

    narration_id: str
    text: str
    offset_sec: float


class QuestionRecord(TypedDict, total=False):
    """One line of a question file (version QUESTION_RECORD_VERSION, which a build's card records). Every task's
    record carries the segment's fields; an MQA record adds its options, a temporal one its answer window.

    Fields:
        task: the task it was built for (prompts.tasks).
        narration_id: the EK-100 segment, the key of its clip in shards and frame stores.
        video_id, participant_id: the segment's video and person (the bootstrap's cluster is the video).
        start_sec, stop_sec, start_frame, stop_frame: the segment in its video.
        clip_start_sec, clip_stop_sec: the window whose frames the sample shows (padded for temporal detection).
        fps: the video's frame rate.
        narration, verb_class, noun_class, action_id, action_index, action_text, verb_text, noun_text: its labels.
        verb_tail, noun_tail, unseen_participant: the breakdowns it counts in (benchmark.metrics).
        options, option_actions, answer_index, answer_letter: an MQA question's options (texts and `verb:noun`
            actions), the right one (None where the ground truth is not among them).
        prior_actions: the two earlier segments (oldest first), for questions with prior actions.
        answer: the target of direct narration and temporal detection ('start, end' within the clip).
    """

    task: str
    narration_id: str
    video_id: str
    participant_id: str
    start_sec: float
    stop_sec: float
    clip_start_sec: float
    clip_stop_sec: float
    start_frame: int
    stop_frame: int
    fps: float
    narration: str
    verb_class: int
    noun_class: int
    action_id: str
    action_index: int
    action_text: str
    verb_text: str
    noun_text: str
    verb_tail: bool
    noun_tail: bool
    unseen_participant: bool
    options: list[str]
    option_actions: list[str]
    answer_index: int | None
    answer_letter: str | None
    prior_actions: list[PriorAction]
    answer: str


def iter_question_file(path: Path | str, card_read: bool = False) -> Iterator[tuple[int, int, QuestionRecord]]:
    """(line number, byte offset, record) of each question, checked as it is read: the file matches its card (read
    first, unless the caller has: card_read), every record has a narration_id and none is asked twice (each an error
    naming the file and line), and the file holds at least one."""
    if not card_read:
        read_card(path)
    seen: dict[str, int] = {}
    for number, offset, record in iter_jsonl(path):
        key = record.get("narration_id")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{path}:{number}: a question without a narration_id")
        if key in seen:
            raise ValueError(f"{path}:{number}: question {key} is asked twice (first at {path}:{seen[key]})")
        seen[key] = number
        yield number, offset, record
    if not seen:
        raise ValueError(f"{path}: holds no question")


def read_question_file(path: Path | str) -> list[QuestionRecord]:
    """A question file's records, checked (iter_question_file)."""
    return [record for _, _, record in iter_question_file(path)]
