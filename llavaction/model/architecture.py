"""The architecture a run resolves, once, from one typed record (a family's preset, a starting checkpoint's config,
or the architecture a training checkpoint recorded, with the run's settings), and the model built from it; training
and evaluation resolve it the same way, so a checkpoint rebuilds exactly the model that was trained."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from llavaction.model.families import DEFAULT_BACKBONE
from llavaction.model.family import REGISTRY, ModelFamily
from llavaction.model.options import ActionSupervision, ComputeOptions
from llavaction.prompts.formats import VideoFormat
from llavaction.prompts.templates import template_system
from llavaction.prompts.tokenizer import add_special_tokens
from llavaction.utils.hub import resolve


@dataclass(frozen=True)
class ModelSettings:
    """What a run says about its model (the LightningModule's model arguments, or those a checkpoint recorded).

    Args:
        backbone: the model family (llavaction.model.families).
        preset_name: the family's preset when neither checkpoint nor architecture is given (random init).
        checkpoint: the folder or hub id the weights (and, without `architecture`, the architecture) come from.
        architecture: the architecture as training resolved it (what its checkpoints record).
        compute: attention kernel and the other computation settings.
        action: LLaVAction's action supervision.
        family_options: the family's own architecture settings (ModelFamily.options).
    """

    backbone: str = DEFAULT_BACKBONE
    preset_name: str | None = "tiny"
    checkpoint: str | None = None
    architecture: dict | None = None
    compute: ComputeOptions = ComputeOptions()
    action: ActionSupervision = ActionSupervision()
    family_options: dict | None = None

    @property
    def family(self) -> ModelFamily:
        return REGISTRY.get(self.backbone)

    @property
    def from_preset(self) -> bool:
        """Random init from a preset (its tokenizer may gain the family's special tokens)."""
        return self.checkpoint is None and self.architecture is None


def checkpoint_config(folder: Path) -> dict:
    """A checkpoint folder's config.json."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a checkpoint folder (config.json + safetensors)")
    return json.loads(path.read_text())


def resolve_architecture(settings: ModelSettings) -> Any:
    """The model's config: a recorded architecture first, else the starting checkpoint's, else the family's preset;
    then the family's own options and the run's attention and action-supervision settings (validated by the
    config; an option the family does not have is refused naming the ones it has)."""
    spec = settings.family
    if settings.architecture is not None:
        base = spec.config_class.from_dict(settings.architecture)
    elif settings.checkpoint is not None:
        folder = resolve(settings.checkpoint)
        config = checkpoint_config(folder)
        found = REGISTRY.of_checkpoint(config, str(folder / "config.json"))
        if found is not spec:
            raise ValueError(
                f"model.checkpoint {settings.checkpoint} is a {found.name} checkpoint but model.backbone is {spec.name}"
            )
        base = spec.read_checkpoint(folder, config, settings.checkpoint)
    elif settings.preset_name is None:
        raise ValueError("model.preset_name is null and no model.checkpoint is given: name one of the two")
    else:
        base = spec.preset(settings.preset_name)
    options = dict(settings.family_options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        offered = ", ".join(spec.options) or "none"
        raise ValueError(f"model.family_options {unknown}: not {spec.name} settings (it has: {offered})")
    base = spec.with_options(base, options)
    overrides: dict[str, Any] = {"attn_implementation": settings.compute.attn_implementation}
    if settings.action.mode is not None:
        overrides |= {"vision_supervision": settings.action.mode, "action_types": tuple(settings.action.types)}
    return dataclasses.replace(base, **overrides)


def meet_tokenizer(spec: ModelFamily, config: Any, tokenizer, from_preset: bool) -> Any:
    """The config with its tokenizer: a preset's tokenizer gains the family's special tokens it lacks (appended, the
    ids it had unchanged) and the config takes their ids; a checkpoint's tokenizer must hold them, at its ids."""
    missing = [token for token in spec.special_tokens if token not in tokenizer.get_vocab()]
    if missing and not from_preset:
        raise ValueError(f"the tokenizer lacks the {spec.name} tokens {missing}")
    add_special_tokens(tokenizer, missing)
    matched = spec.meet_tokenizer(config, tokenizer)
    if not from_preset and matched != config:
        raise ValueError(f"the tokenizer's ids of the {spec.name} tokens differ from the checkpoint's config")
    return matched


def video_format(spec: ModelFamily, config: Any, tokenizer, from_preset: bool, source: str) -> VideoFormat:
    """How the model reads a sample: its config's format, with the system turn its checkpoint's own chat template
    writes (a preset keeps the family's default: the tiny tokenizer's template is no checkpoint's)."""
    chat = config.chat_format()
    if from_preset or not spec.template_from_checkpoint or not getattr(tokenizer, "chat_template", None):
        return chat
    return dataclasses.replace(chat, system=template_system(tokenizer, source))


def build_model(spec: ModelFamily, config: Any, weights: str | None = None, new_heads: bool = False) -> nn.Module:
    """The family's model of a config, with the weights of a checkpoint folder (or hub id) when given (new_heads:
    action tokens and heads the checkpoint lacks start fresh), else freshly initialised."""
    if weights is None:
        return spec.model_class(config)
    return spec.load(weights, config, new_heads)
