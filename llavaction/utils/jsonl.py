"""JSON-lines files, written atomically (a temporary name renamed when complete)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from llavaction.utils.files import atomic_output


def read_jsonl(path: Path | str) -> list[dict]:
    """The records of a JSON-lines file; a line that is not one JSON object is an error naming the file and line."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{number}: expected a JSON object")
                records.append(record)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return records


def write_jsonl(path: Path | str, records: Iterable[dict]) -> None:
    with atomic_output(path) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json(path: Path | str, obj) -> None:
    with atomic_output(path) as out:
        out.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
