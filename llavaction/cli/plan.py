"""`llavaction plan`: the epoch plan of a training config, what every rank and loader worker reads and in which
batches, from the shard indexes alone (no frame is read), by the code a fit runs (llavaction.data.epochs).

    llavaction plan --config experiments/llavaction_7b.yaml [--data.loader.batch_size=2 ...] [--world_size 64] \\
        [--epoch 0] [--ckpt_path CHECKPOINT|last] [--out plan.jsonl]

It takes the same config files and dotted overrides as `train.py fit` (parsed and checked once, by the training
CLI's parser, without building the model), prints a table per source (items in its shards, in this epoch, distinct,
repeated, padding) and per rank (batches, samples, padding), and with --out writes one JSON line per training row of
the epoch: rank, worker, batch (the rank's batch number), source (index in data.train), key (the sample's key, `#i` for
conversation i of a replayed video) and padding. With --ckpt_path, the epoch a fit resumed from that checkpoint at
this world size continues is shown part by part, as the fit would read it: what the ranks read before the resume
(each earlier layout's plan, up to the batches its ranks finished) and what they read after it (the rest of that plan,
or the samples no rank read planned for this layout), each row with its part (`before` or `after`) and its batch
number in the epoch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from llavaction.cli.train import cli, newest_in_config
from llavaction.data.datamodule import EpicDataModule
from llavaction.data.plan import format_table, resumed_parts, source_label, summarize, world_size_of
from llavaction.training.resume import plan_resume
from llavaction.utils.errors import run_cli
from llavaction.utils.files import atomic_output, check_apart


def plan_parser_arguments(parser) -> None:
    """The plan's own options beside the training config's."""
    parser.add_argument(
        "--world_size", "--world-size", type=int | None, default=None, help="ranks (default: devices x nodes)"
    )
    parser.add_argument(
        "--epoch", type=int | None, default=None, help="the epoch to plan (default: the checkpoint's, else 0)"
    )
    parser.add_argument(
        "--ckpt_path",
        "--ckpt-path",
        type=str | None,
        default=None,
        help="show the epoch a fit resumed from this checkpoint (or the run's last) reads, before and after",
    )
    parser.add_argument("--out", type=str | None, default=None, help="write every row of the epoch as JSON lines")


def planned_data(args: list[str]):
    """The parsed config (the plan's options included) and its DataModule; the model is never built."""
    from llavaction.cli.train import LlavaActionCLI

    class PlanCLI(LlavaActionCLI):
        def add_arguments_to_parser(self, parser) -> None:  # the plan's options; no model-to-data links
            plan_parser_arguments(parser)

        def instantiate_classes(self) -> None:
            """Nothing is built here: the DataModule is built below from the parsed config alone."""

    built = cli(args, cli_class=PlanCLI, run=False, seed_everything_default=False)
    config = built.config
    if config.epoch is not None and config.epoch < 0:
        built.parser.error(f"--epoch must be >= 0, got {config.epoch}")
    if config.world_size is not None and config.world_size < 1:
        built.parser.error(f"--world_size must be >= 1, got {config.world_size}")
    data = built.parser.instantiate(config, instantiate_groups=False).data.as_dict()
    return config, EpicDataModule(**data)


def config_files(args: list[str]) -> list[str]:
    """The config files of a command line (`--config FILE` or `--config=FILE`)."""
    given = [value for name, value in zip(args, args[1:]) if name == "--config"]
    return given + [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]


def data_paths(value) -> list[str]:
    """Every string in the data section (sources, stores, question files): those on disk are what the plan reads."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        return [path for item in value.values() for path in data_paths(item)]
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in data_paths(item)]
    return [value] if isinstance(value, str) else []


def shown_parts(config, data, world: int) -> tuple[int, list[tuple]]:
    """The epoch to show and its (planner, part) pairs: one (the whole epoch's planner, None), or a resumed epoch's
    parts (--ckpt_path), planned as a fit resuming that checkpoint on `world` ranks plans them."""
    epoch = config.epoch or 0
    if not config.ckpt_path:
        return epoch, [(data.epoch_planner(world_size=world), None)]
    path = newest_in_config(config.trainer) if config.ckpt_path == "last" else Path(config.ckpt_path)
    if path is None or not path.exists():
        raise FileNotFoundError(f"--ckpt_path {config.ckpt_path}: no such checkpoint")
    resume = plan_resume(path, data, world, config.trainer.accumulate_grad_batches or 1)
    for note in resume.notes:
        print(f"resume: {note}")
    if resume.megabatch_steps is not None:
        data.loader = dataclasses.replace(data.loader, megabatch_steps=resume.megabatch_steps)
    planner = data.epoch_planner(world_size=world)
    epoch = resume.epoch if config.epoch is None and resume.epoch is not None else epoch
    if resume.epoch != epoch:  # stopped at an epoch's end, or another epoch asked for
        return epoch, [(planner, None)]
    return epoch, resumed_parts(planner, epoch, resume.parts, resume.replan)


def main(args: list[str] | None = None) -> int:
    def run() -> int:
        given = sys.argv[1:] if args is None else list(args)
        config, data = planned_data(given)
        if config.out:
            inputs = {"--config": config_files(given), "data": data_paths(config.data), "--ckpt_path": config.ckpt_path}
            check_apart({"--out": config.out}, inputs)
        world = config.world_size or world_size_of(config.trainer.as_dict())
        epoch, parts = shown_parts(config, data, world)
        rows = [] if config.out else None
        labels = [source_label(s) for s in data.train_sources]
        for number, (planner, part) in enumerate(parts):
            sources, ranks = summarize(planner, epoch, rows, part)
            print(("\n" if number else "") + format_table(planner, epoch, labels, sources, ranks, part))
        if config.out:
            with atomic_output(config.out) as out:
                out.writelines(json.dumps(row) + "\n" for row in rows)
            print(f"{len(rows)} rows -> {config.out}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
