"""The built-in model families: importing this module registers each, one line a family. `Backbone` (the choices of
`model.backbone`) is derived from what is registered here."""

from __future__ import annotations

from typing import Literal

from llavaction.model import internvl, llava_video, qwen2_5_vl, qwen3_vl  # noqa: F401  (each registers its family)
from llavaction.model.family import REGISTRY

BUILT_IN: tuple[str, ...] = REGISTRY.names()
Backbone = Literal[BUILT_IN]  # type: ignore[valid-type]
DEFAULT_BACKBONE: Backbone = "llava_video"  # the reference's model
