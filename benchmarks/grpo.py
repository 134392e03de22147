"""GRPO steps of every backbone's tiny preset on the CPU: rollout tokens per second, the per-step time split (rollout,
reference, update) and the memory the reference policy holds with beta > 0 (what `rl/time/*`,
`rl/rollout_tokens_per_second` and `rl/reference_memory_gib` log).

Each backbone runs `train.py fit` with experiments/grpo_demo.yaml from its tiny preset (random init) over the
benchmarks' synthetic demo questions: 4 questions x 8 completions a step of up to 16 new tokens (the demo's), 8
frames of 32 px, the LLM trained (the demo's), beta 0.04 (a reference held). The first step (warm-up) is left out of
the medians.

    python benchmarks/grpo.py [--steps 4] [--backbones llava_video qwen2_5_vl]
    python benchmarks/grpo.py --backbones qwen2_5_vl --preset 7b --num-frames 16 --accelerator gpu \
        --precision bf16-true --steps 1        # the GPU check's row: a random-init 7B on the same 32 px frames
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

import torch
from synthetic import demo_questions, frame_shards

from llavaction.cli.train import cli
from llavaction.model.families import BUILT_IN

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("rollout_tokens_per_second", "time/rollout", "time/reference", "time/update", "reference_memory_gib")


def fit_args(run: Path, data: Path, backbone: str, args: argparse.Namespace) -> list[str]:
    train = json.dumps(
        [{"frames": str(data / "shards"), "questions": str(data / "q.jsonl"), "task": "mqa", "weight": "size"}]
    )
    return [
        "fit",
        "--config",
        str(ROOT / "experiments" / "grpo_demo.yaml"),
        f"--model.backbone={backbone}",
        "--model.checkpoint=null",
        f"--model.preset_name={args.preset}",
        f"--model.tokenizer={data / 'demo' / 'tokenizer'}",
        "--model.objective.beta=0.04",
        "--model.log_completions_every_n_steps=0",
        f"--data.train={train}",
        f"--data.val=[{json.dumps(str(data / 'shards'))}]",
        f"--data.questions=[{json.dumps(str(data / 'q.jsonl'))}]",
        "--data.loader.batch_size=4",
        "--data.loader.num_workers=0",
        f"--trainer.default_root_dir={run}",
        f"--trainer.max_steps={args.steps + 1}",
        f"--trainer.accelerator={args.accelerator}",
        f"--trainer.precision={args.precision}",
        f"--data.num_frames={args.num_frames}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={run}",
        "--trainer.log_every_n_steps=1",
    ]


def step_figures(run: Path) -> dict[str, list[float]]:
    """Each figure's values at every step but the first."""
    rows = list(csv.DictReader(open(next(run.rglob("metrics.csv")))))
    out: dict[str, list[float]] = {}
    for row in rows:
        for name in FIGURES:
            value = row.get(f"rl/{name}")
            if value and int(row["step"]) > 0:
                out.setdefault(name, []).append(float(value))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--backbones", nargs="+", default=list(BUILT_IN), choices=BUILT_IN)
    parser.add_argument("--preset", default="tiny", help="the families' architecture preset (random init)")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()
    print(
        f"{args.accelerator}, CPU threads {torch.get_num_threads()}; preset {args.preset}, {args.num_frames} frames of "
        "32 px, 4 questions x 8 completions a step, up to 16 new tokens, beta 0.04"
    )
    print(
        f"{'backbone':<12} {'rollout tok/s':>13} {'rollout s':>10} {'reference s':>12} {'update s':>9} {'ref. MiB':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        records = demo_questions(
            data, "train", "annotations", seed=0, train_videos=2, val_videos=1, duration=60.0, fps=24
        )
        frame_shards(data, records, num_frames=args.num_frames, size=32)
        rows = []
        for backbone in args.backbones:
            run = Path(tmp) / backbone
            cli(fit_args(run, data, backbone, args))
            median = {name: statistics.median(values) for name, values in step_figures(run).items()}
            rows.append({"backbone": backbone} | {name: round(value, 4) for name, value in median.items()})
            print(
                f"{backbone:<12} {median['rollout_tokens_per_second']:13.0f} {median['time/rollout']:10.2f} "
                f"{median['time/reference']:12.2f} {median['time/update']:9.2f} "
                f"{median['reference_memory_gib'] * 1024:9.1f}"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
