"""A shard set as a frame store: question files asked over its frames.

A shard set holds, per key, the frames of one clip (and the question it was built from). Another question file about
the same segments (another distractor tier, another K, the ground truth forced in or not) needs no new decoding: its
questions are asked over the stored frames, each replacing the stored question of its key. The guard is the clip:
every question's clip (CLIP_FIELDS: video, clip window, EPIC frames) must be the one the store holds for its key,
compared by the clip digest index.json keeps; a store indexed before clip digests had its samples' JSON read for them
(no frame is decoded).
"""

from __future__ import annotations

from collections.abc import Callable

from llavaction.benchmark.card import file_digest, read_card
from llavaction.benchmark.questions import iter_question_file
from llavaction.data.shards import (
    CLIP_FIELDS,
    clip_digest,
    indexed_keys,
    iter_shard,
    join,
    read_sizes,
    sample_meta,
    text_words,
)
from llavaction.utils.jsonl import read_jsonl_at


def store_clips(stores: list[str]) -> dict[str, tuple[str, str]]:
    """{key: (clip digest, shard url)} over stores read together (a key held twice is refused, indexed_keys); a shard
    indexed before clip digests has its samples' JSON read for them."""
    clips, unindexed = {}, set()
    for key, (location, name, entry) in indexed_keys(stores).items():
        if "clip" in entry:
            clips[key] = (entry["clip"], join(location, name))
        else:
            unindexed.add((location, name))
    for location, name in sorted(unindexed):
        url = join(location, name)
        for sample in iter_shard(url, expected=read_sizes(location)[name]):
            clips[sample["__key__"]] = (clip_digest(sample_meta(sample)), url)
    return clips


def check_clips(questions: dict[str, list[dict]], stores: list[str]) -> None:
    """Every question's clip is in the stores, the one they hold for its key; otherwise one line: how many are
    missing or ask about another clip, and one example."""
    held = store_clips(stores)
    for path, records in questions.items():
        by_key = {record["narration_id"]: record for record in records}
        check_file_clips(path, {key: clip_digest(r) for key, r in by_key.items()}, held, stores, by_key.__getitem__)


def check_file_clips(
    path: str, clips: dict[str, str], held: dict[str, tuple[str, str]], stores: list[str], question: Callable
) -> None:
    """check_clips for one file given as {key: clip digest} (question(key): its record, read for the message)."""
    where = ", ".join(map(str, stores))
    missing = [key for key in clips if key not in held]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} questions have no clip in the frame store ({where}), e.g. {missing[:5]}; "
            "extract their frames (data_prep.extract_frames) into a store"
        )
    other = [key for key, digest in clips.items() if digest != held[key][0]]
    if other:
        key, record = other[0], question(other[0])
        stored = next(sample_meta(s) for s in iter_shard(held[key][1]) if s["__key__"] == key)
        field = next((f for f in CLIP_FIELDS if record.get(f) != stored.get(f)), None)
        if field is None:  # the same clip in the question and the sample: the index's digest is not the sample's
            raise ValueError(
                f"{held[key][1]}: index.json records another clip digest for {key} than its sample's fields give "
                f"({', '.join(CLIP_FIELDS)} equal to {path}'s): the index was edited or written by another version; "
                "extract the store again"
            )
        raise ValueError(
            f"{path}: {len(other)} of its {len(clips)} questions ask about another clip than the frame store "
            f"holds ({where}), e.g. {key}: {field} {record.get(field)!r} here, {stored.get(field)!r} in the store"
        )


def questions_by_key(questions: dict[str, list[dict]]) -> dict[str, dict]:
    """{key: question} over question files (read and checked by the caller)."""
    return {record["narration_id"]: record for records in questions.values() for record in records}


class StoreQuestions:
    """A question file asked over a frame store in training (TaskSource.questions): its questions are the source's
    items, in its line order (what sampling strategies count), each joining the stored sample of its key in place of
    the stored question; the words of each are its length for length grouping. Read once here for what planning and
    the clip check need (line, byte offset, words, clip digest per key); a loader worker reads only the questions it
    serves (served), not the file."""

    def __init__(self, path: str):
        card = read_card(path)
        # what each epoch's readers check the file against: its card's digest (checked just now), else its own
        self.digest = card["questions"]["digest"] if card is not None else file_digest(path)
        self.path, self.at, self._words, self.clips = path, {}, {}, {}
        for number, offset, record in iter_question_file(path, card_read=True):
            key = record["narration_id"]
            self.at[key], self._words[key] = (number, offset), sum(text_words(record))
            self.clips[key] = clip_digest(record)

    @property
    def line(self) -> dict[str, int]:
        return {key: number for key, (number, _) in self.at.items()}

    def words(self) -> dict[str, int]:
        return dict(self._words)

    def check(self, store: str, held: dict[str, tuple[str, str]]) -> None:
        """Every question's clip is the one the store holds for its key (held: store_clips of the store), else one
        line."""
        check_file_clips(self.path, self.clips, held, [store], self.question)

    def question(self, key: str) -> dict:
        """One question, read from the file."""
        return read_jsonl_at(self.path, {key: self.at[key]})[key]

    def served(self, keys: set[str]) -> ServedQuestions:
        """The questions of these keys, read from the file (what one loader worker serves at each epoch), refused when
        the file is no longer the one the run began with (an answer edited in place keeps every line's length)."""
        if file_digest(self.path) != self.digest:
            raise ValueError(
                f"{self.path}: changed while the run reads it (its digest is no longer {self.digest[:19]}...); "
                "write an edited question file under a new name, with its own card, for a new run"
            )
        try:
            asked = read_jsonl_at(self.path, {key: self.at[key] for key in keys})
        except ValueError:  # a line read from the middle of another: the file was rewritten
            asked = None
        if asked is None or any(record.get("narration_id") != key for key, record in asked.items()):
            raise ValueError(f"{self.path}: changed while the run reads it (a question is no longer on its line)")
        return ServedQuestions(asked)


class ServedQuestions:
    """The questions one loader worker serves, each joined to the stored sample of its key."""

    def __init__(self, asked: dict[str, dict]):
        self.asked = asked

    def __call__(self, sample: dict) -> dict:
        sample["meta"] = sample["meta"] | self.asked[sample["__key__"]]
        return sample
