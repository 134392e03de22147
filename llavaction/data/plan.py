"""An epoch plan summarised: per source and per rank what the epoch reads, and every planned row (`llavaction plan`
prints and writes them); an epoch a checkpoint stopped inside, part by part: what its ranks read before the resume
and what they read after it. It reads the plan (llavaction.data.epochs) from the shard indexes alone, never a
frame."""

from __future__ import annotations

from dataclasses import dataclass

from llavaction.data.epochs import EpochPlanner
from llavaction.data.resume import EpochPart, layout_of, planned_parts


@dataclass
class SourceSummary:
    """One source's line of the table."""

    in_shards: int
    selected: int
    epoch: int = 0
    distinct: int = 0
    padding: int = 0


@dataclass(frozen=True)
class ShownPart:
    """A part of a resumed epoch as the plan shows it: the planner's batches numbered in `numbers`, the planner's
    batch 0 being the epoch's batch `start`; `label` says whether the ranks read it before the resume or after."""

    label: str
    numbers: range
    start: int = 0


def resumed_parts(base: EpochPlanner, epoch: int, parts: list[EpochPart], replan: bool) -> list[tuple]:
    """(planner, ShownPart) of each part of an epoch a checkpoint stopped inside: what each part's ranks finished
    before the resume, then what they read after it: the rest of the last part's plan (the same layout), or the
    remainder planned for `base`'s layout."""
    planned, left = planned_parts(base, epoch, parts)
    shown = []
    for part, planner in planned:
        start = base.relaid(**layout_of(part.plan)).batches_per_rank - planner.batches_per_rank
        shown.append((planner, ShownPart("before", range(part.batches), start)))
    if replan:
        remainder = base.relaid(remaining=(epoch, left))
        start = base.batches_per_rank - remainder.batches_per_rank
        shown.append((remainder, ShownPart("after", range(remainder.batches_per_rank), start)))
    else:
        planner, before = shown[-1][0], shown[-1][1]
        shown.append((planner, ShownPart("after", range(before.numbers.stop, planner.batches_per_rank), before.start)))
    return shown


def summarize(
    planner: EpochPlanner, epoch: int, rows: list | None = None, part: ShownPart | None = None
) -> tuple[list[SourceSummary], list[dict]]:
    """Per source and per rank figures of an epoch; `rows`, when given, receives every planned row as a dict. `part`:
    of a resumed epoch, the batches shown, numbered and labelled as it says."""
    sources = [SourceSummary(items.available, len(items)) for items in planner.sources]
    seen = [set() for _ in planner.sources]
    ranks = [{"batches": 0, "samples": 0, "padding": 0} for _ in range(planner.world_size)]
    for plan in planner.slots(epoch):
        batch_numbers = planner.worker_batches(plan.worker)
        for number, batch in zip(batch_numbers, plan.batches):
            if part is not None and number not in part.numbers:
                continue
            ranks[plan.rank]["batches"] += 1
            for planned in batch:
                summary, rank = sources[planned.source], ranks[plan.rank]
                if planned.padding:
                    summary.padding += 1
                    rank["padding"] += 1
                else:
                    summary.epoch += 1
                    rank["samples"] += 1
                    seen[planned.source].add(planner.item_of(plan, planned))
                if rows is not None:
                    row = {
                        "rank": plan.rank,
                        "worker": plan.worker,
                        "batch": number + (part.start if part is not None else 0),
                        "source": planned.source,
                        "key": planner.key_of(plan, planned),
                        "padding": planned.padding,
                    }
                    rows.append(row if part is None else row | {"part": part.label})
    for summary, distinct in zip(sources, seen):
        summary.distinct = len(distinct)
    return sources, ranks


def source_label(source) -> str:
    """A training source as the table names it: its task, its shard set and what it joins to its samples."""
    joined = f" + questions {source.questions}" if source.questions else ""
    joined += f" + descriptions {source.descriptions}" if source.descriptions else ""
    return f"{source.task:<10} {source.shards}{joined}"


def format_table(planner: EpochPlanner, epoch: int, paths: list[str], sources, ranks, part=None) -> str:
    layout = f"{planner.world_size} rank(s) x {planner.workers} loader worker(s), batch {planner.batch_size}"
    if part is None:
        head = f"epoch {epoch}: {planner.total} samples over {layout}: {planner.batches_per_rank} batches a rank"
    else:
        count = sum(r["samples"] for r in ranks)
        numbers = range(part.start + part.numbers.start, part.start + part.numbers.stop)  # the epoch's numbers
        batches = f"batches {numbers.start} to {numbers.stop - 1}" if numbers else "no batch"
        head = f"epoch {epoch}, read {part.label} the resume: {count} samples over {layout}: {batches} of each rank"
    lines = [
        head,
        "",
        f"{'source':<6} {'in shards':>10} {'selected':>10} {'this epoch':>10} {'distinct':>10} {'repeated':>10} "
        f"{'padding':>8}  {'task':<10} path",
    ]
    for number, (summary, path) in enumerate(zip(sources, paths)):
        lines.append(
            f"{number:<6} {summary.in_shards:>10} {summary.selected:>10} {summary.epoch:>10} {summary.distinct:>10} "
            f"{summary.epoch - summary.distinct:>10} {summary.padding:>8}  {path}"
        )
    lines += ["", f"{'rank':<6} {'batches':>10} {'samples':>10} {'padding':>10}"]
    lines += [f"{r:<6} {v['batches']:>10} {v['samples']:>10} {v['padding']:>10}" for r, v in enumerate(ranks)]
    return "\n".join(lines)


def world_size_of(trainer: dict) -> int:
    """devices x num_nodes of a trainer config (a count, a list of devices or a number as text)."""
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1) or 1
    if isinstance(devices, list | tuple):
        devices = len(devices)
    elif isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(f"trainer.devices is {devices!r}: give the number of processes with --world-size")
    return devices * int(nodes)


if __name__ == "__main__":  # the library, run by mistake for the command: say where the command is
    raise SystemExit("llavaction.data.plan is the plan's library; the command is `llavaction plan --config CONFIG`")
