"""Complete the output of an array of data-preparation tasks: the parts that `extract_frames --num-tasks N` (or
`build_replay --num-tasks N`) wrote under one --out become one set, equal sample for sample to a single run's.

    python -m data_prep.merge_shards --out shards/ek100_train_mqa_avion       # after extract_frames tasks
    python -m data_prep.merge_shards --out questions/llava_video_178k.jsonl   # after build_replay tasks
    python -m data_prep.merge_shards --out shards/ek100_mqa/add-0123456789ab   # after extract_frames --add tasks

A shard set: OUT/part-IIII-of-NNNN/ folders. The merge writes OUT/index.json, OUT/conversations.json (replayed
videos), OUT/report.json (every part's skips) and, last, OUT/sizes.json listing the parts' shards in task order
("part-0000-of-0003/shard-000000.tar", ...), so readers see one set; the shards stay where the tasks wrote them.
Replay records: OUT.parts/part-IIII-of-NNNN.jsonl become OUT (in the order one run writes them) and
OUT.skipped.jsonl. A part that is missing, unfinished, or written with other settings or other questions is refused.
An addition to a frame store (STORE/add-<digest>, extract_frames --add by an array) is then listed in the store.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from data_prep.job_array import PART_NAME
from data_prep.stores import check_merge_root, is_addition, list_addition
from llavaction.data.shards import CONVERSATIONS_FILE, INDEX_FILE, SIZES_FILE
from llavaction.utils.files import exclusive_output
from llavaction.utils.jsonl import read_jsonl, write_json, write_jsonl
from llavaction.utils.options import main_of

REPORT_FILE = "report.json"
REPLAY_PARTS = ".parts"


def find_parts(folder: Path, suffix: str = "") -> tuple[int, dict[int, Path]]:
    """{task index: part} of the parts in a folder, and the array's size; all N present and of one array."""
    parts, counts = {}, set()
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = PART_NAME.match(path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.name)
        if match and (not suffix or path.name.endswith(suffix)):
            parts[int(match.group(1))] = path
            counts.add(int(match.group(2)))
    if not parts:
        raise FileNotFoundError(f"{folder}: holds no part-IIII-of-NNNN of an array of tasks")
    if len(counts) > 1:
        raise ValueError(f"{folder}: parts of arrays of {sorted(counts)} tasks; remove the other array's parts")
    count = counts.pop()
    missing = [i for i in range(count) if i not in parts]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} of the {count} parts are missing (task {missing[0]} first)")
    return count, parts


def merge_shard_sets(out: Path) -> dict:
    """Merge the shard parts of OUT; returns the merged report."""
    count, parts = find_parts(out)
    check_merge_root(out, [part.name for part in parts.values()])
    reports = {}
    for index, part in parts.items():
        if not (part / SIZES_FILE).exists():
            raise ValueError(f"{part}: unfinished (no {SIZES_FILE}); rerun task {index} with --resume")
        reports[index] = json.loads((part / REPORT_FILE).read_text())
        if reports[index].get("task") != {"index": index, "count": count}:
            raise ValueError(f"{part}: written as task {reports[index].get('task')}, not task {index} of {count}")
    first = reports[0]
    for index, report in reports.items():
        if report["config"] != first["config"]:
            raise ValueError(
                f"{parts[index]}: written with other settings ({report['config']}) than {parts[0]} ({first['config']})"
            )
        if report.get("questions_digest") != first.get("questions_digest"):
            raise ValueError(f"{parts[index]}: written from other questions than {parts[0]}")
    sizes, index_entries, conversations = {}, {}, {}
    for number in range(count):
        part = parts[number]
        part_sizes = json.loads((part / SIZES_FILE).read_text())
        part_index = json.loads((part / INDEX_FILE).read_text())
        part_conversations = (
            json.loads((part / CONVERSATIONS_FILE).read_text()) if (part / CONVERSATIONS_FILE).exists() else {}
        )
        for name, size in part_sizes.items():
            merged_name = f"{part.name}/{name}"
            sizes[merged_name] = size
            index_entries[merged_name] = part_index[name]
            if name in part_conversations:
                conversations[merged_name] = part_conversations[name]
    if not sum(sizes.values()):
        raise ValueError(f"{out}: the {count} parts hold no sample (every one was skipped: see their report.json)")
    report = {
        "samples": sum(r["samples"] for r in reports.values()),
        "written": sum(sizes.values()),
        "shards": len(sizes),
        "skipped": [s for i in range(count) for s in reports[i]["skipped"]],
        "clamped": [c for i in range(count) for c in reports[i]["clamped"]],
        "config": first["config"],
        "questions_digest": first.get("questions_digest"),
        "parts": count,
    }
    write_json(out / INDEX_FILE, index_entries)
    if conversations:
        write_json(out / CONVERSATIONS_FILE, conversations)
    write_json(out / REPORT_FILE, report)
    write_json(out / SIZES_FILE, sizes)  # last: the set is readable once this exists
    return report


def merge_replay_records(out: Path) -> dict:
    """Merge build_replay's parts OUT.parts/part-*.jsonl into OUT and OUT.skipped.jsonl, in one run's order."""
    folder = out.with_name(out.name + REPLAY_PARTS)
    count, parts = find_parts(folder, ".jsonl")
    manifests = {}
    for index, part in parts.items():
        manifest = part.with_suffix(".json")
        if not manifest.exists():
            raise ValueError(f"{part}: unfinished (no {manifest.name}); rerun task {index}")
        manifests[index] = json.loads(manifest.read_text())
    first = manifests[0]
    for index, manifest in manifests.items():
        if manifest["files"] != first["files"] or manifest["settings"] != first["settings"]:
            raise ValueError(f"{parts[index]}: built from other files or settings than {parts[0]}")
    position = {path: number for number, path in enumerate(first["files"])}

    def order(where: str) -> tuple[int, int]:
        path, _, index = where.rpartition(":")
        return position[path], int(index)

    records = [r for i in range(count) for r in read_jsonl(parts[i])]
    records.sort(key=lambda r: order(r["sources"][0]))
    skipped = [s for i in range(count) for s in read_jsonl(parts[i].with_suffix(".skipped.jsonl"))]
    skipped.sort(key=lambda s: order(s["record"]))
    write_jsonl(out.with_suffix(".skipped.jsonl"), skipped)
    if not records:
        raise ValueError(f"{out}: the {count} parts hold no record (all {len(skipped)} skipped)")
    write_jsonl(out, records)
    return {"records": len(records), "skipped": len(skipped), "parts": count}


def run(out: Path) -> int:
    if out.with_name(out.name + REPLAY_PARTS).is_dir():
        with exclusive_output(out):
            merged = merge_replay_records(out)
        print(f"{merged['records']} replay records from {merged['parts']} parts -> {out}", file=sys.stderr)
        return 0
    with exclusive_output(out):
        report = merge_shard_sets(out)
    if is_addition(out):  # an addition to a frame store extracted by an array: the store lists it now
        list_addition(out.parent, out.name)
    print(
        f"{report['written']} samples in {report['shards']} shards of {report['parts']} parts -> {out}; "
        f"{len(report['skipped'])} skipped (see {out / REPORT_FILE})",
        file=sys.stderr,
    )
    return 0


@dataclass(frozen=True)
class MergeOptions:
    """The parts an array of extract_frames (or build_replay) tasks wrote under one --out, completed as one set.

    Args:
        out: the --out the array's tasks were given.
    """

    out: Path


main = main_of(
    MergeOptions, lambda options: run(options.out), "python -m data_prep.merge_shards", __doc__.split("\n\n")[0]
)

if __name__ == "__main__":
    raise SystemExit(main())
