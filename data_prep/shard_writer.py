"""Numbered shards written in order, each whole or not at all, with the progress that lets a killed extraction resume
from its last complete shard and the index entries (llavaction.data.shards) of every finished shard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import webdataset as wds

from data_prep.decoding import ExtractConfig, SampleResult
from data_prep.job_array import ArrayJob
from llavaction.data.shards import SHARD_PATTERN
from llavaction.utils.files import atomic_output
from llavaction.utils.jsonl import write_json

PROGRESS_FILE = "_progress.json"


# one line per finished shard, {"shard": name, "samples": [index entries]}: appended, never rewritten
INDEX_PARTS_FILE = "_index.jsonl"


REPORT_FILE = "report.json"


class ShardWriter:
    """Fills numbered shards in order; a shard becomes visible (renamed) only when complete, then its index entries
    are appended and progress is saved. `entries` gives a written sample's index entry by key."""

    def __init__(self, out: Path, config: ExtractConfig, progress: dict, entries: dict[str, dict]):
        self.out, self.config, self.progress, self.entries = out, config, progress, entries
        self.pending: list[SampleResult] = []

    def add(self, position: int, result: SampleResult) -> None:
        if result.sample is None:
            self.progress["skipped"].append({"position": position, "narration_id": result.key, "reason": result.reason})
        else:
            self.pending.append(result)
            if result.clamped:
                self.progress["clamped"].append(result.key)
        self.progress["next_position"] = position + 1
        if len(self.pending) == self.config.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending samples as the next shard, or only save progress when there are none."""
        if self.pending:
            name = SHARD_PATTERN.format(len(self.progress["shards"]))
            with atomic_output(self.out / name, "wb") as stream, wds.TarWriter(stream, mtime=0) as writer:
                for result in self.pending:
                    writer.write(result.sample)
            with open(self.out / INDEX_PARTS_FILE, "a", encoding="utf-8") as parts:
                samples = [self.entries[result.key] for result in self.pending]
                parts.write(json.dumps({"shard": name, "samples": samples}, ensure_ascii=False) + "\n")
            self.progress["shards"][name] = len(self.pending)
            self.progress.setdefault("conversations", {})[name] = sum(r.conversations for r in self.pending)
            self.pending = []
        write_json(self.out / PROGRESS_FILE, self.progress)


def questions_digest(records: list[dict]) -> str:
    """What the samples are made of, so that a resume with other questions is refused."""
    return hashlib.sha256(json.dumps(records, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def load_progress(out: Path, config: ExtractConfig, resume: bool, digest: str, task: ArrayJob | None = None) -> dict:
    fresh = {
        "config": config.__dict__,
        "questions_digest": digest,
        "task": None if task is None else {"index": task.index, "count": task.count},
        "next_position": 0,
        "shards": {},
        "skipped": [],
        "clamped": [],
    }
    path = out / PROGRESS_FILE
    if not path.exists():
        if any(out.glob("shard-*.tar")):
            raise FileExistsError(f"{out} holds shards but no {PROGRESS_FILE}; choose an empty --out")
        return fresh
    if not resume:
        raise FileExistsError(f"{out} holds an earlier run; pass --resume to continue it or choose another --out")
    progress = json.loads(path.read_text())
    if progress["config"] != config.__dict__:
        raise ValueError(
            f"{out} was written with other settings {progress['config']}; cannot resume with {config.__dict__}"
        )
    if progress.get("questions_digest") != digest:
        raise ValueError(
            f"{out} was written from other questions (or another version of them); cannot resume: "
            "extract these into another --out"
        )
    if progress.get("task") != fresh["task"]:
        raise ValueError(f"{out} was written as task {progress.get('task')}; cannot resume it as {fresh['task']}")
    return progress


def shard_index(out: Path, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """index.json from the appended parts: the last line written for each finished shard (a shard rewritten after a
    kill appears twice)."""
    parts = {}
    if (out / INDEX_PARTS_FILE).exists():
        with open(out / INDEX_PARTS_FILE, encoding="utf-8") as lines:
            for line in lines:
                try:
                    part = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: its shard is not among the finished ones
                    continue
                parts[part["shard"]] = part["samples"]
    return {name: parts[name] for name in sizes}
