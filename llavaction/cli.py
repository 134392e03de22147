"""LightningCLI wiring: the model tells the data which tokenizer and how many visual tokens per frame."""

from __future__ import annotations

import sys
import warnings

from lightning.pytorch.cli import LightningCLI

from llavaction.configs import expand_config_args
from llavaction.data.datamodule import EpicDataModule
from llavaction.module import LlavaActionModule


class LlavaActionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.tokenizer_path", "data.tokenizer", apply_on="instantiate")
        parser.link_arguments("model.tokens_per_frame", "data.tokens_per_frame", apply_on="instantiate")
        parser.link_arguments("model.extra_visual_tokens", "data.extra_visual_tokens", apply_on="instantiate")


def main(args: list[str] | None = None) -> LlavaActionCLI:
    """Configs naming a base (`# base: PATH`, llavaction.configs) are stacked after it."""
    args = expand_config_args(sys.argv[1:] if args is None else list(args))
    with warnings.catch_warnings():  # the expanded arguments are the command line, passed on purpose
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return LlavaActionCLI(LlavaActionModule, EpicDataModule, args=args, save_config_kwargs={"overwrite": True})
