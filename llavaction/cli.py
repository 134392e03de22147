"""LightningCLI wiring: the model tells the data which tokenizer and how many visual tokens per frame."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from llavaction.data.datamodule import EpicDataModule
from llavaction.module import LlavaActionModule


class LlavaActionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.tokenizer_path", "data.tokenizer", apply_on="instantiate")
        parser.link_arguments("model.tokens_per_frame", "data.tokens_per_frame", apply_on="instantiate")
        parser.link_arguments("model.extra_visual_tokens", "data.extra_visual_tokens", apply_on="instantiate")


def main(args: list[str] | None = None) -> LlavaActionCLI:
    return LlavaActionCLI(LlavaActionModule, EpicDataModule, args=args, save_config_kwargs={"overwrite": True})
