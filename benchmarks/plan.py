"""How long the epoch plan of the 7B mixture's size takes, from index-only shard sets (no frames), from one run.

The mixture has the recipe's shape and size, about 1.34 M training items: six EK-100 sources of 67,217 samples (MQA
with AVION and TIM distractors, the two GPT-4o description sets, temporal detection, direct narration; 256 samples a
shard) and LLaVA-Video-178K's 936,000 conversations, modelled as 156,000 videos of 6 conversations (64 a shard).
Prints the seconds to read the indexes, to plan every worker of every rank (the table of `python -m
llavaction.data.plan`) and to write every row as JSON lines, at the reference's world (128 GPUs x 4 loader workers) and
at the recipe's (8 x 8).

    python benchmarks/plan.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from llavaction.data.epochs import EpochPlanner
from llavaction.data.plan import summarize
from llavaction.data.sources import source_items

EK100_TRAIN = 67_217
REPLAY_VIDEOS = 156_000  # x 6 conversations: LLaVA-Video-178K's share of the 1.34 M items


def index_only_set(path: Path, samples: int, per_shard: int, conversations: int | None = None) -> str:
    path.mkdir(parents=True)
    sizes, index = {}, {}
    for shard, start in enumerate(range(0, samples, per_shard)):
        name = f"shard-{shard:06d}.tar"
        (path / name).write_bytes(b"")
        count = min(per_shard, samples - start)
        sizes[name] = count
        index[name] = [
            {
                "key": f"P{n // 500:02d}_{n % 500:03d}_{n}",
                "line": n,
                "conversations": conversations,
                "words": [12 + n % 9] * (conversations or 1),
                "digest": f"{n:016x}",
            }
            for n in range(start, start + count)
        ]
    (path / "sizes.json").write_text(json.dumps(sizes))
    (path / "index.json").write_text(json.dumps(index))
    return str(path)


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
        started = time.perf_counter()
        items = [source_items(location) for location in sets]
        figures["read_indexes_s"] = time.perf_counter() - started
        figures["items"] = sum(len(i) for i in items)
        for world, workers in ((128, 4), (8, 8)):
            planner = EpochPlanner(items, [None] * len(items), 0, 1, world, workers, 500, 64)
            started = time.perf_counter()
            summarize(planner, 0)
            figures[f"plan_{world}x{workers}_s"] = time.perf_counter() - started
        # the recipe's grouping: the reference's megabatch of 8 GPUs x 32 micro-batches x 1 (loader.megabatch_steps)
        megabatch = EpochPlanner(items, [None] * len(items), 0, 1, 8, 8, 500, 0, megabatch_steps=32)
        started = time.perf_counter()
        summarize(megabatch, 0)
        figures["plan_8x8_megabatch_s"] = time.perf_counter() - started
        rows: list = []
        started = time.perf_counter()
        summarize(planner, 0, rows)
        with open(root / "plan.jsonl", "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
        figures["plan_and_rows_8x8_s"] = time.perf_counter() - started
    for name, value in figures.items():
        print(f"{name:>22}: {value:,.2f}")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
