"""Helpers of the tests that fit: the demo's training arguments, checkpoints by step, logged losses and metrics,
callbacks that record what a fit read or restored, and the GRPO stage's arguments."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.helpers import ROOT


def demo_args(demo_dir, demo_shards, root, *extra) -> list[str]:
    """`train.py fit` arguments of the demo config over the tests' demo shards, in run folder `root`."""
    train = json.dumps(
        [
            {"path": str(demo_shards["train_mqa"]), "task": "mqa"},
            {"path": str(demo_shards["train_mqa"]), "task": "narration", "weight": 0.5},
        ]
    )
    return [
        "fit",
        "--config",
        str(ROOT / "experiments" / "demo.yaml"),
        f"--model.tokenizer={demo_dir / 'tokenizer'}",
        f"--data.train={train}",
        f"--data.val=[{json.dumps(str(demo_shards['validation_mqa']))}]",
        "--data.questions=null",  # the validation set's own questions (demo.yaml asks a file over its frame store)
        f"--trainer.default_root_dir={root}",
        "--data.loader.num_workers=0",
        "--data.loader.batch_size=4",
        "--data.loader.eval_batch_size=4",
        *extra,
    ]


def config_diff(root: Path, name: str, text: str) -> str:
    """A `--config=FILE` argument of a YAML diff written into root."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(text)
    return f"--config={path}"


def step_checkpoints(root: Path, every: int) -> str:
    """A config diff adding a checkpoint every `every` steps in root/steps (mid-epoch ones), named
    `epoch=E-step=S.ckpt`."""
    return config_diff(
        root,
        "step_checkpoints",
        f"""trainer:
  callbacks+:
    - class_path: llavaction.training.checkpointing.RunCheckpoint
      init_args: {{every_n_train_steps: {every}, dirpath: {root / "steps"}}}
""",
    )


def step_checkpoint(root: Path, step: int) -> Path:
    """The checkpoint step_checkpoints wrote at a step."""
    return next((root / "steps").glob(f"epoch=*-step={step}.ckpt"))


def record_keys(root: Path) -> str:
    """A config diff recording every training batch's keys in root (RecordKeys)."""
    return config_diff(
        root,
        "record_keys",
        f"""trainer:
  callbacks+:
    - class_path: tests.fit_helpers.RecordKeys
      init_args: {{folder: {root}}}
""",
    )


def csv_logged(root: Path) -> list[str]:
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--trainer.log_every_n_steps=1",
    ]


def read_losses(root: Path) -> dict[int, float]:
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def assert_same_curve(whole: dict[int, float], resumed: dict[int, float], after: int) -> None:
    assert min(resumed) == after and set(resumed) == {s for s in whole if s >= after}
    for step in resumed:
        assert resumed[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6), step


def assert_fit_consumed_the_plan(fit_args: list[str], root: Path, epochs: int, world: int = 1) -> None:
    """The keys each rank's training batches held, in order, are the epoch plan's (`llavaction plan` with the fit's
    own arguments)."""
    from llavaction.cli.plan import main as plan

    plan_args = [a for a in fit_args[1:] if not a.startswith("--ckpt_path")]
    for epoch in range(epochs):
        out = root / f"plan-{epoch}.jsonl"
        assert plan([*plan_args, f"--epoch={epoch}", f"--out={out}"]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for rank in range(world):
            planned = {}
            for row in rows:
                if row["rank"] == rank:
                    planned.setdefault(row["batch"], []).append([row["key"], row["padding"]])
            consumed = [json.loads(line) for line in (root / f"keys-rank{rank}.jsonl").read_text().splitlines()]
            consumed = [c["rows"] for c in consumed if c["epoch"] == epoch]
            assert consumed == [planned[b] for b in sorted(planned)], (epoch, rank)


class AnnounceSteps(L.Callback):
    """Prints `step N` after each training step and waits a little, so a test can signal the run mid-epoch."""

    def __init__(self, delay: float = 0.2):
        self.delay = delay

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"step {trainer.global_step}", flush=True)
        time.sleep(self.delay)


class RecordKeys(L.Callback):
    """Writes, per training batch, the epoch, the batch index and its rows' keys and padding flags to
    `<folder>/keys-rank<R>.jsonl` (what a fit consumed, to compare with the epoch plan)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        row = {
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "rows": [[k, bool(p)] for k, p in zip(batch.keys, batch.is_padding.tolist())],
        }
        with open(Path(self.folder) / f"keys-rank{trainer.global_rank}.jsonl", "a") as out:
            out.write(json.dumps(row) + "\n")


class SaveRestoredState(L.Callback):
    """When training starts (after a checkpoint is restored), writes the model's and the optimizer's whole state,
    gathered from every rank's shards, to `<path>` on rank 0 ({"state_dict", "optimizer_0"}, as a distributed
    checkpoint's files hold them)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model, optimizer = trainer.strategy.model, trainer.optimizers[0]
        state = {
            "state_dict": get_model_state_dict(model, options=options),
            "optimizer_0": get_optimizer_state_dict(model, optimizer, options=options),
        }
        if trainer.is_global_zero:
            torch.save(state, self.path)


# ---- evaluation ----------------------------------------------------------------------------------------------------


def grpo_args(demo_dir, demo_shards, root, *extra) -> list[str]:
    """`train.py fit` arguments of the GRPO demo config over the tests' demo shards, from the tiny preset (random
    init), in run folder `root`: 2 questions a step (4 steps an epoch), 4 completions of up to 6 tokens each, no
    validation unless asked."""
    train = json.dumps([{"path": str(demo_shards["train_mqa"]), "task": "mqa", "weight": 1.0}])
    return [
        "fit",
        "--config",
        str(ROOT / "experiments" / "grpo_demo.yaml"),
        "--model.checkpoint=null",
        "--model.preset_name=tiny",
        f"--model.tokenizer={demo_dir / 'tokenizer'}",
        f"--data.train={train}",
        f"--data.val=[{json.dumps(str(demo_shards['validation_mqa']))}]",
        "--data.questions=null",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=-1",
        "--trainer.check_val_every_n_epoch=100",
        "--data.loader.num_workers=0",
        "--data.loader.batch_size=2",
        "--data.loader.eval_batch_size=4",
        "--data.loader.samples_per_epoch=8",
        "--model.rollout.group_size=4",
        "--model.rollout.max_new_tokens=6",
        "--model.evaluation.max_new_tokens=6",
        "--model.evaluation.mqa_scoring=[generate]",
        *extra,
    ]


def read_metrics(root: Path, prefix: str = "rl/") -> dict[str, dict[int, float]]:
    """name -> {step: value} of the CSV logger's metrics whose name starts with prefix."""
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        for name, value in row.items():
            if name.startswith(prefix) and value:
                out.setdefault(name, {})[int(row["step"])] = float(value)
    return out
