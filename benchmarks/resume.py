"""How long a resume on another world size takes to plan the rest of an interrupted epoch of the 7B mixture's size,
and what each new rank then reads, from index-only shard sets (no frames), from one run.

The mixture is benchmarks/plan.py's (about 1.34 M items: six EK-100 sources and LLaVA-Video-178K's conversations).
A run of 128 ranks x 4 loader workers, per-device batch 1 and accumulation 3 (global batch 384) stops 40% into its
epoch, at an optimizer step; it resumes on 96 ranks x 4 workers (accumulation 4, the same global batch). Printed: the
seconds to find the places of the epoch the 128 ranks' finished batches held (re-planning their 512 slots) and to plan
the remainder for 96 ranks (both done by every rank when it resumes), the seconds one rank then takes to plan its own
4 slots and all 96 x 4 (`llavaction plan`), the samples each new rank reads after the change (least and most), its
batches, the epoch's batch number the remainder starts at, and the peak memory; for the length windows of
benchmarks/plan.py and for the recipe's megabatch grouping (megabatch steps 3 -> 4: 384 samples kept).

    python benchmarks/resume.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from plan import EK100_TRAIN, REPLAY_VIDEOS, index_only_set

from llavaction.data.epochs import EpochPlanner
from llavaction.data.resume import EpochPart, ResumedEpoch

BEFORE, AFTER, WORKERS, ACCUMULATE = 128, 96, 4, 3  # global batch 384 = 128 x 1 x 3 = 96 x 1 x 4
STOPPED_AT = 0.4  # of the epoch's optimizer steps


def resume_figures(whole: EpochPlanner, relaid: EpochPlanner, name: str) -> dict:
    steps = whole.batches_per_rank // ACCUMULATE
    finished = int(steps * STOPPED_AT) * ACCUMULATE
    started = time.perf_counter()
    resumed = ResumedEpoch.plan(relaid, 0, [EpochPart(whole.describe(), finished)])
    figures = {f"{name}_replan_s": time.perf_counter() - started}
    remainder = resumed.planner
    started = time.perf_counter()
    for worker in range(WORKERS):
        remainder.slot(0, 0, worker)
    figures[f"{name}_one_rank_slots_s"] = time.perf_counter() - started
    started = time.perf_counter()
    read = [0] * AFTER
    for plan in remainder.slots(0):
        read[plan.rank] += sum(not p.padding for batch in plan.batches for p in batch)
    figures[f"{name}_all_slots_s"] = time.perf_counter() - started
    figures |= {
        f"{name}_finished_batches": finished,
        f"{name}_samples_left": remainder.total,
        f"{name}_rank_reads_least": min(read),
        f"{name}_rank_reads_most": max(read),
        f"{name}_batches_a_rank": remainder.batches_per_rank,
        f"{name}_first_batch": resumed.first_batch,
        f"{name}_epoch_batches": relaid.batches_per_rank,
    }
    assert sum(read) == remainder.total == whole.epoch_items - finished * BEFORE  # no padding read before
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="mixture size relative to the 7B recipe's")
    args = parser.parse_args()
    ek100, videos = int(EK100_TRAIN * args.scale), int(REPLAY_VIDEOS * args.scale)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = [index_only_set(root / f"ek100_{n}", ek100, 256) for n in range(6)]
        sets.append(index_only_set(root / "replay", videos, 64, conversations=6))
        from llavaction.data.sources import source_items

        items = [source_items(location) for location in sets]
    figures["items"] = sum(len(i) for i in items)
    windows = EpochPlanner(items, [None] * len(items), 0, 1, BEFORE, WORKERS, 500, 64)
    figures |= resume_figures(windows, windows.relaid(world_size=AFTER), "windows")
    grouped = EpochPlanner(items, [None] * len(items), 0, 1, BEFORE, WORKERS, 500, megabatch_steps=ACCUMULATE)
    figures |= resume_figures(grouped, grouped.relaid(world_size=AFTER, megabatch_steps=4), "megabatch")
    figures["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for name, value in figures.items():
        print(f"{name:>28}: {value:,.2f}")
    print(json.dumps({k: round(v, 6) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
