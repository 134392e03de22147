"""The question files an evaluation asks, read once and checked against the shards before any forward pass: every
question must be in the shards, and the shards' copy must ask the same (options, their order, the answer, the prior
actions, the clip), else the shards are stale and their figures would be labelled with the wrong questions."""

from __future__ import annotations

from pathlib import Path

from llavaction.benchmark.card import card_summary, read_card
from llavaction.benchmark.questions import iter_question_file
from llavaction.data.shards import QUESTION_FIELDS, indexed_keys, iter_shard, join, question_digest, sample_meta
from llavaction.data.store import check_clips


def read_questions(paths: list[Path]) -> dict[str, list[dict]]:
    """{file: its question records} (benchmark.questions, the one reader: card, ids, duplicates); a question asked in
    two of the files is an error naming both places."""
    questions, seen = {}, {}
    for path in paths:
        records = []
        for number, _, record in iter_question_file(path):
            key = record["narration_id"]
            if key in seen:
                raise ValueError(f"{path}:{number}: question {key} is asked twice (first at {seen[key]})")
            seen[key] = f"{path}:{number}"
            records.append(record)
        questions[str(path)] = records
    return questions


def question_cards(paths: list[Path]) -> dict[str, dict | None]:
    """{file: what outputs carry of its benchmark card (name, version, digest), None for a file without one}."""
    return {str(path): card_summary(read_card(path)) for path in paths}


def check_against_shards(questions: dict[str, list[dict]], shards: list[str]) -> None:
    """Every question is in the shards and equal to their copy (compared by the digest each shard set's index
    records); otherwise one line: how many are missing or differ, and one example."""
    where = {key: (location, name, entry["digest"]) for key, (location, name, entry) in indexed_keys(shards).items()}
    for path, records in questions.items():
        missing = [r["narration_id"] for r in records if r["narration_id"] not in where]
        if missing:
            raise ValueError(
                f"{path}: {len(missing)} questions have no frames in the shards ({', '.join(map(str, shards))}), "
                f"e.g. {missing[:5]}"
            )
        stale = [r for r in records if question_digest(r) != where[r["narration_id"]][2]]
        if stale:
            example = stale[0]
            raise ValueError(
                f"{path}: {len(stale)} of its {len(records)} questions differ from the shards' copy "
                f"({', '.join(map(str, shards))}), e.g. {difference(example, *where[example['narration_id']][:2])}; "
                "extract this file's frames (data_prep.extract_frames) or evaluate the file the shards were built from"
            )


def difference(question: dict, location: str, shard: str) -> str:
    """The first field in which a question and the shards' copy of it differ, as '<id>: <field> ... in the shards'."""
    key = question["narration_id"]
    copy = next((sample_meta(s) for s in iter_shard(join(location, shard)) if s["__key__"] == key), {})
    for field in QUESTION_FIELDS:
        if question.get(field) != copy.get(field):
            return f"{key}: {field} {_short(question.get(field))} here, {_short(copy.get(field))} in the shards"
    return f"{key}: the same fields, but another digest in the shards' index.json (written by another version?)"


def _short(value, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_frames_source(shards: list[str] | None, frames: list[str] | None) -> None:
    """An evaluation reads its frames from the question files' own shard sets or from frame stores, one of the two."""
    if (shards is None) == (frames is None):
        raise ValueError("give the frames as --shards (built from these questions) or --frames (a frame store)")


def check_frames(questions: dict[str, list[dict]], shards: list[str] | None, frames: list[str] | None) -> list[str]:
    """Check the questions against their shard sets (the same questions) or a frame store (the same clips); returns
    where the frames are read."""
    if frames is not None:
        check_clips(questions, frames)
        return list(frames)
    check_against_shards(questions, shards)
    return list(shards)
