"""Adding clips to a frame store: `extract_frames --add` extracts the clips of a question file that the store lacks
(keys it does not hold) into a folder inside it, `add-<digest>/`, then lists that folder's shards in the store's
index.json and, last, its sizes.json, so readers see one set (extracted by an array of tasks, merge_shards of the
addition lists it). The store's clip rule (layout, frames a clip, size, resize, quality, chunk length) is its
report.json config: another rule is refused, as is a question whose key the store holds for another clip. A killed
addition is continued by the same command with --resume.

Every folder an extraction writes (a store, an addition, an array's root and its parts) carries extract_frames'
marker (llavaction.utils.files.OUTPUT_MARKER): a plain extraction starts only in a new or empty folder, or continues
its own unfinished one with --resume; an existing store, whoever built it (one run, an array and merge_shards, with
additions), is refused, and so is a folder holding anything else (a user's own index.json)."""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.decoding import ExtractConfig
from data_prep.job_array import PART_NAME
from data_prep.shard_writer import PROGRESS_FILE, REPORT_FILE, questions_digest
from llavaction.data.shards import INDEX_FILE, SIZES_FILE, clip_digest, read_index, read_sizes
from llavaction.data.store import store_clips
from llavaction.utils.files import claim_folder, exclusive_output, foreign_entries, mark_folder, output_owner
from llavaction.utils.jsonl import write_json

EXTRACT_COMMAND = "data_prep.extract_frames"  # the marker of every folder an extraction writes
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
    """List a finished addition's shards in the store: index.json first, sizes.json last (readers go by it). Under
    the store's lock, the addition's keys are checked against those the store lists now: an addition whose clips
    another run listed while this one was extracted is refused, the store unchanged (a key held twice would make the
    store unreadable); one listed already is left as it is."""
    with exclusive_output(store):
        sizes, index = read_sizes(store), read_index(store)
        if any(shard.startswith(f"{name}/") for shard in sizes):
            return
        added_sizes, added_index = read_sizes(store / name), read_index(store / name)
        held = {entry["key"] for entries in index.values() for entry in entries}
        twice = sorted(entry["key"] for entries in added_index.values() for entry in entries if entry["key"] in held)
        if twice:
            raise ValueError(
                f"{store}: {len(twice)} clips of {store / name} are listed in the store already (another run added "
                f"them while this one extracted), e.g. {twice[:3]}; the store is unchanged: remove {store / name}"
            )
        index |= {f"{name}/{shard}": entries for shard, entries in added_index.items()}
        sizes |= {f"{name}/{shard}": count for shard, count in added_sizes.items()}
        write_json(store / INDEX_FILE, index)
        write_json(store / SIZES_FILE, sizes)


def check_extraction_folder(folder: Path, resume: bool) -> None:
    """A plain extraction (no --add) writes into a new or empty folder, or continues its own unfinished run there
    with --resume; a frame store (sizes.json), whoever built it, and any folder holding something else are refused in
    one line, nothing changed. Call it holding the folder."""
    progress = (folder / PROGRESS_FILE).exists()  # an extraction's own folder (also one written before markers)
    if (folder / SIZES_FILE).exists() and not (resume and progress):
        raise FileExistsError(
            f"--out {folder} is a frame store already ({SIZES_FILE}): add the clips it lacks with --add, or give "
            "another --out (nothing was changed)"
        )
    if progress:
        if output_owner(folder) is None:
            mark_folder(folder, EXTRACT_COMMAND)
        return
    claim_folder(folder, EXTRACT_COMMAND)


def claim_array_root(out: Path) -> None:
    """The --out of an array of tasks, which holds their parts: new, empty, holding only parts, or an extraction's;
    marked before a task makes its part in it, so tasks starting together agree."""
    out.mkdir(parents=True, exist_ok=True)
    if output_owner(out) == EXTRACT_COMMAND:
        return
    foreign = [name for name in foreign_entries(out) if not PART_NAME.match(name)]
    if foreign:
        claim_folder(out, EXTRACT_COMMAND)  # refused, naming what it holds
    mark_folder(out, EXTRACT_COMMAND)


def check_merge_root(out: Path, parts: list[str]) -> None:
    """merge_shards writes into an array's root: one an extraction marked (or that holds only parts and the card), and
    whose listing names no shard outside its parts (a store's additions, which a merge would unlist)."""
    if output_owner(out) != EXTRACT_COMMAND:
        foreign = [name for name in foreign_entries(out) if not PART_NAME.match(name) and name != "card.json"]
        if foreign:
            raise ValueError(
                f"{out}: holds {foreign[0]!r}, which no extraction task wrote; merge_shards writes only into the "
                "--out an array of extract_frames tasks was given (nothing was changed)"
            )
    if (out / SIZES_FILE).exists():
        added = [shard for shard in read_sizes(out) if shard.split("/")[0] not in parts]
        if added:
            raise ValueError(
                f"{out}: lists {len(added)} shards besides its parts (clips added with --add, e.g. {added[0]}); "
                "merging again would unlist them (nothing was changed)"
            )
