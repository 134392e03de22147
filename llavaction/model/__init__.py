"""The LLaVA-Video model: pure torch.nn + transformers, usable without the rest of the package."""

from llavaction.model.config import LlavaVideoConfig, preset
from llavaction.model.llava_video import LlavaVideoModel, LlavaVideoOutput
from llavaction.utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN_INDEX",
    "LlavaVideoConfig",
    "LlavaVideoModel",
    "LlavaVideoOutput",
    "preset",
]
