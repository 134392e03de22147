"""Adding clips to a frame store: `extract_frames --add` extracts the clips of a question file that the store lacks
(keys it does not hold) into a folder inside it, `add-<digest>/`, then lists that folder's shards in the store's
index.json and, last, its sizes.json, so readers see one set (extracted by an array of tasks, merge_shards of the
addition lists it). The store's clip rule (layout, frames a clip, size, resize, quality, chunk length) is its
report.json config: another rule is refused, as is a question whose key the store holds for another clip. A killed
addition is continued by the same command with --resume."""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.decoding import ExtractConfig
from data_prep.shard_writer import REPORT_FILE, questions_digest
from llavaction.data.shards import INDEX_FILE, SIZES_FILE, clip_digest, read_index, read_sizes
from llavaction.data.store import store_clips
from llavaction.utils.files import exclusive_output
from llavaction.utils.jsonl import write_json

ADDITION_PREFIX = "add-"
# What makes two stores' frames of one clip the same frames (the videos' folder and the shard size do not).
CLIP_RULE = ("layout", "num_frames", "size", "resize", "quality", "chunk_seconds")


def clips_to_add(records: list[dict], store: Path, config: ExtractConfig) -> list[dict]:
    """The records whose clip the store lacks; another clip rule, or a key the store holds for another clip, is an
    error naming the store."""
    if not (store / SIZES_FILE).exists():
        raise FileNotFoundError(f"{store}: not a frame store (no {SIZES_FILE}); extract without --add to create it")
    held_rule = json.loads((store / REPORT_FILE).read_text())["config"]
    for field in CLIP_RULE:
        if held_rule.get(field) != getattr(config, field):
            raise ValueError(
                f"{store}: its clips have {field} {held_rule.get(field)!r}, this run asks {getattr(config, field)!r}; "
                "a store holds one clip rule: extract into another store"
            )
    held = store_clips([str(store)])
    other = [
        r["narration_id"] for r in records if r["narration_id"] in held and clip_digest(r) != held[r["narration_id"]][0]
    ]
    if other:
        raise ValueError(
            f"{len(other)} questions ask about another clip than {store} holds for their keys, e.g. {other[:3]}; "
            "extract them into another store"
        )
    return [record for record in records if record["narration_id"] not in held]


def addition_name(records: list[dict]) -> str:
    """The folder of an addition, named by what it holds (the same records: the same folder, so --resume finds it)."""
    return f"{ADDITION_PREFIX}{questions_digest(sorted(records, key=lambda r: r['narration_id']))[:12]}"


def is_addition(folder: Path) -> bool:
    """Whether a folder is an addition inside a frame store (its parent a store)."""
    return folder.name.startswith(ADDITION_PREFIX) and (folder.parent / SIZES_FILE).exists()


def list_addition(store: Path, name: str) -> None:
    """List a finished addition's shards in the store: index.json first, sizes.json last (readers go by it)."""
    with exclusive_output(store):
        sizes, index = read_sizes(store), read_index(store)
        added_sizes, added_index = read_sizes(store / name), read_index(store / name)
        index |= {f"{name}/{shard}": entries for shard, entries in added_index.items()}
        sizes |= {f"{name}/{shard}": count for shard, count in added_sizes.items()}
        write_json(store / INDEX_FILE, index)
        write_json(store / SIZES_FILE, sizes)
