"""JSON-lines files, written atomically (a temporary name renamed when complete)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from llavaction.utils.files import atomic_output


def read_jsonl(path: Path | str) -> list[dict]:
    """The records of a JSON-lines file; a line that is not one JSON object is an error naming the file and line."""
    return [record for _, _, record in iter_jsonl(path)]


def iter_jsonl(path: Path | str) -> Iterator[tuple[int, int, dict]]:
    """(line number, byte offset, record) of each record of a JSON-lines file (blank lines skipped), so that a reader
    can come back for a few records (read_jsonl_at) without keeping them all."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if raw.strip():
                yield number, start, parse_jsonl_line(path, number, raw)


def read_jsonl_at(path: Path | str, lines: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """{name: record} of the records at {name: (line number, byte offset)} (as iter_jsonl gave them), read in file
    order."""
    records = {}
    with open(path, "rb") as f:
        for name, (number, offset) in sorted(lines.items(), key=lambda item: item[1][1]):
            f.seek(offset)
            records[name] = parse_jsonl_line(path, number, f.readline())
    return records


def parse_jsonl_line(path: Path | str, number: int, raw: bytes) -> dict:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}:{number}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object")
    return record


def write_jsonl(path: Path | str, records: Iterable[dict]) -> None:
    with atomic_output(path) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json(path: Path | str, obj) -> None:
    with atomic_output(path) as out:
        out.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
