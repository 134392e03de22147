"""LightningCLI wiring: the model tells the data which tokenizer and how many visual tokens per frame."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from llavaction.configs import expand_config_args
from llavaction.data.datamodule import EpicDataModule
from llavaction.module import DATA_LINKS, LlavaActionModule


class LlavaActionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for model_attribute, data_argument in DATA_LINKS:
            parser.link_arguments(f"model.{model_attribute}", f"data.{data_argument}", apply_on="instantiate")


def check_ckpt_path(args: list[str]) -> None:
    """A --ckpt_path file that cannot be a checkpoint (text, cut short by a full disk) is refused naming it, before
    LightningCLI reads it."""
    from llavaction.evaluation.checkpoints import check_checkpoint_file

    for index, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--ckpt_path=") else None
        if arg == "--ckpt_path" and index + 1 < len(args):
            value = args[index + 1]
        if value:
            check_checkpoint_file(Path(value))


def main(args: list[str] | None = None) -> LlavaActionCLI:
    """Configs naming a base (`# base: PATH`, llavaction.configs) are stacked after it."""
    args = expand_config_args(sys.argv[1:] if args is None else list(args))
    check_ckpt_path(args)
    with warnings.catch_warnings():  # the expanded arguments are the command line, passed on purpose
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return LlavaActionCLI(LlavaActionModule, EpicDataModule, args=args, save_config_kwargs={"overwrite": True})


class PlanCLI(LlavaActionCLI):
    """The training CLI's parser (configs, overrides, checks) with the epoch plan's own options; builds nothing."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--world-size", type=int | None, default=None, help="ranks (default: devices x nodes)")
        parser.add_argument("--epoch", type=int, default=0, help="the epoch to plan")
        parser.add_argument("--out", type=str | None, default=None, help="write every row of the epoch as JSON lines")

    def instantiate_classes(self) -> None:
        """The plan builds the DataModule only (llavaction.data.plan), never the model."""


def plan_config(args: list[str]):
    """The parsed config of `python -m llavaction.data.plan`, its own options (world_size, epoch, out) included."""
    args = expand_config_args(list(args))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = PlanCLI(LlavaActionModule, EpicDataModule, args=args, run=False, seed_everything_default=False)
    config = cli.config
    if config.epoch < 0:
        cli.parser.error(f"--epoch must be >= 0, got {config.epoch}")
    if config.world_size is not None and config.world_size < 1:
        cli.parser.error(f"--world-size must be >= 1, got {config.world_size}")
    return config
