"""Questions + shards -> an lmms-eval task folder (YAML, utils.py, questions.jsonl, frames/) that lmms-eval loads
with --include_path, with llavaction's question wording and answer parsing.

    python -m data_prep.export_lmms_eval --questions val_mqa.jsonl --shards shards/val_mqa --out lmms_tasks/ek100_mqa
    lmms_eval --model llava_vid --tasks ek100_mqa --include_path lmms_tasks/ek100_mqa ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import webdataset as wds
from tqdm import tqdm

from llavaction.jsonl import read_jsonl, write_jsonl

TEMPLATE = Path(__file__).parent / "lmms_eval_task"


def export(questions: list[Path], shards: list[Path], out: Path) -> int:
    """Write the task folder; every question must have its frames in the shards."""
    wanted = {q["narration_id"] for path in questions for q in read_jsonl(path)}
    urls = [str(d / name) for d in shards for name in json.loads((d / "sizes.json").read_text())]
    records = {}
    frames_dir = out / "frames"
    for sample in tqdm(wds.WebDataset(urls, shardshuffle=False), desc="export", unit="question"):
        key = sample["__key__"]
        if key not in wanted:
            continue
        records[key] = json.loads(sample["json"])
        (frames_dir / key).mkdir(parents=True, exist_ok=True)
        for name, data in sample.items():
            if name.endswith(".jpg"):
                (frames_dir / key / name).write_bytes(data)
    missing = sorted(wanted - set(records))
    if missing:
        raise ValueError(f"{len(missing)} questions have no frames in {', '.join(map(str, shards))}: {missing[:5]}")
    write_jsonl(out / "questions.jsonl", [records[k] for k in sorted(records)])
    for template in TEMPLATE.iterdir():
        if template.suffix in (".py", ".yaml"):
            shutil.copy(template, out / template.name)
    return len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, nargs="+", required=True)
    parser.add_argument("--shards", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    count = export(args.questions, args.shards, args.out)
    print(f"{count} questions -> lmms-eval task folder {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
