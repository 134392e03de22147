"""A shard set as a frame store: question files asked over its frames.

A shard set holds, per key, the frames of one clip (and the question it was built from). Another question file about
the same segments (another distractor tier, another K, the ground truth forced in or not) needs no new decoding: its
questions are asked over the stored frames, each replacing the stored question of its key. The guard is the clip:
every question's clip (CLIP_FIELDS: video, clip window, EPIC frames) must be the one the store holds for its key,
compared by the clip digest index.json keeps; a store indexed before clip digests had its samples' JSON read for them
(no frame is decoded).
"""

from __future__ import annotations

from llavaction.benchmark.card import read_card
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
from llavaction.utils.jsonl import read_jsonl


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
    where = ", ".join(map(str, stores))
    for path, records in questions.items():
        missing = [r["narration_id"] for r in records if r["narration_id"] not in held]
        if missing:
            raise ValueError(
                f"{path}: {len(missing)} questions have no clip in the frame store ({where}), e.g. {missing[:5]}; "
                "extract their frames (data_prep.extract_frames) into a store"
            )
        other = [r for r in records if clip_digest(r) != held[r["narration_id"]][0]]
        if other:
            key = other[0]["narration_id"]
            stored = next(sample_meta(s) for s in iter_shard(held[key][1]) if s["__key__"] == key)
            field = next((f for f in CLIP_FIELDS if other[0].get(f) != stored.get(f)), "clip")
            raise ValueError(
                f"{path}: {len(other)} of its {len(records)} questions ask about another clip than the frame store "
                f"holds ({where}), e.g. {key}: {field} {other[0].get(field)!r} here, {stored.get(field)!r} in the store"
            )


def read_questions_file(path: str) -> list[dict]:
    """A question file's records, refused when it no longer matches its benchmark card."""
    read_card(path)
    return read_jsonl(path)


def questions_by_key(questions: dict[str, list[dict]]) -> dict[str, dict]:
    """{key: question} over question files (read and checked by the caller)."""
    return {record["narration_id"]: record for records in questions.values() for record in records}


class StoreQuestions:
    """A question file asked over a frame store in training (TaskSource.questions): its questions are the source's
    items, in its line order (what sampling strategies count), each joining the stored sample of its key in place of
    the stored question; the words of each are its length for length grouping."""

    def __init__(self, path: str):
        self.by_id, self.line = {}, {}
        for number, record in enumerate(read_questions_file(path), start=1):
            key = record.get("narration_id")
            if not isinstance(key, str) or key in self.by_id:
                raise ValueError(f"{path}:{number}: a question without a narration_id, or asked twice")
            self.by_id[key], self.line[key] = record, number
        if not self.by_id:
            raise ValueError(f"{path}: holds no question")
        self.path = path

    def words(self) -> dict[str, int]:
        return {key: sum(text_words(record)) for key, record in self.by_id.items()}

    def check(self, store: str) -> None:
        """Every question's clip is the one the store holds for its key (else one line)."""
        check_clips({self.path: list(self.by_id.values())}, [store])

    def __call__(self, sample: dict) -> dict:
        sample["meta"] = sample["meta"] | self.by_id[sample["__key__"]]
        return sample
