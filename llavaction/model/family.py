"""A model family as one spec: everything the rest of the package asks of a video LLM family, so that no code outside
the family's own module branches on its name. A family module builds one `ModelFamily` and registers it
(`llavaction.model.families` holds the registry line of each built-in family); `family(name)` finds it, and
`family_of_checkpoint` finds the family that owns a checkpoint folder's config.json.

The model a family builds implements `VideoLM` (checked over every family by the tests); the generation loop, the
action token(s) and heads and the LM loss are shared by every family (model/base.py, model/generation.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class VideoLM(Protocol):
    """What every family's model offers: `config` (its architecture), parts by the shared names (vision_tower,
    projector, llm, action_heads), frames -> pixels -> visual tokens, and the four entry points over prompts whose
    rows hold their clip's visual span (forward: training loss; logits; last_logits: scoring; generate)."""

    config: Any

    def parts(self) -> dict[str, list[nn.Module | nn.Parameter]]: ...

    def preprocess(self, frames: torch.Tensor, clips: list | None = None) -> Any: ...

    def encode_video(self, pixels: Any) -> Any: ...

    def forward(self, input_ids, pixel_values, attention_mask=None, labels=None, **options): ...

    def logits(self, input_ids, pixel_values, attention_mask=None, **options) -> torch.Tensor: ...

    def last_logits(self, input_ids, pixel_values, attention_mask=None, **options): ...

    def generate(self, input_ids, pixel_values, attention_mask, **options): ...


@dataclass(frozen=True)
class LmmsEvalModel:
    """The lmms-eval model that runs a family's checkpoints, and its --model_args (format fields: pretrained,
    num_frames)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ModelFamily:
    """One video LLM family.

    Args:
        name: the value of `model.backbone`.
        title: what it is, in words (README, --help).
        config_class: its architecture dataclass (as_dict / from_dict round-trip what checkpoints record).
        presets: preset name -> architecture (random init; 'tiny' for CPU tests and demos, published shapes).
        model_class: the VideoLM class; `model_class(config)` builds it freshly initialised.
        checkpoint_types: config.json `model_type` values of its checkpoints (how a folder's family is found).
        read_checkpoint: (folder, config.json, source) -> its architecture.
        load: (folder or hub id, architecture, new_heads) -> the model with the folder's weights; new_heads: action
            token(s) and heads the folder lacks start fresh.
        block_types: its transformer blocks (FSDP2 units, activation checkpointing, compilation).
        vision_flops: (architecture, frames, frame side) -> forward FLOPs of the vision encoder and projector on a clip.
        export: (model, state dict, folder, tokenizer, layout, video format) -> writes the folder (the format: how
            the model reads a sample, for the chat template serving engines read); layouts the family offers in
            `export_layouts` ('original' first: its default).
        export_layouts: the layouts `export` writes.
        check_export: (architecture, layout) -> raises when that layout would not compute the same logits.
        options: family-specific architecture settings a run may change (`model.family_options`), applied by
            `with_options(architecture, options)`.
        with_options: applies them (validated by the architecture).
        lmms_eval: the lmms-eval model that runs its checkpoints.
        vllm_architecture: the architecture name vLLM serves its transformers-layout exports as (None: vLLM cannot).
        lmms_eval_vllm: the --model_args of lmms-eval's `vllm` model for its exports (format fields: pretrained,
            num_frames); None where vLLM cannot serve it.
        special_tokens: tokens its prompts need from the tokenizer (a preset's tokenizer gets them appended).
        meet_tokenizer: (architecture, tokenizer) -> the architecture with the tokenizer's ids of its special tokens.
        frame_size: (architecture) -> the side clips are decoded at when it answers about video files.
        template_from_checkpoint: a checkpoint's own chat template decides the system turn (False: the family's
            format is fixed, as LLaVA-Video's is the reference's conversation template whatever the tokenizer says).
    """

    name: str
    title: str
    config_class: type
    presets: Mapping[str, Callable[[], Any]]
    model_class: type[nn.Module]
    checkpoint_types: tuple[str, ...]
    read_checkpoint: Callable[[Path, dict, str], Any]
    load: Callable[[str | Path, Any, bool], nn.Module]
    block_types: tuple[type[nn.Module], ...]
    vision_flops: Callable[[Any, int, int], float]
    export: Callable[..., None]
    lmms_eval: LmmsEvalModel
    export_layouts: tuple[str, ...] = ("original",)
    check_export: Callable[[Any, str], None] = lambda config, layout: None
    options: tuple[str, ...] = ()
    with_options: Callable[[Any, dict], Any] = lambda config, options: config
    vllm_architecture: str | None = None
    lmms_eval_vllm: str | None = None
    special_tokens: tuple[str, ...] = ()
    meet_tokenizer: Callable[[Any, Any], Any] = lambda config, tokenizer: config
    frame_size: Callable[[Any], int] = field(default=lambda config: config.image_size)
    template_from_checkpoint: bool = True

    def preset(self, name: str) -> Any:
        if name not in self.presets:
            raise ValueError(f"unknown {self.name} preset {name!r}; expected one of {sorted(self.presets)}")
        return self.presets[name]()


class Registry:
    """Model families by name, in the order registered; one instance (REGISTRY) for the package. The built-in
    families (llavaction.model.families) are registered on the first lookup, so any user of the registry sees them."""

    def __init__(self, built_ins: str):
        self._families: dict[str, ModelFamily] = {}
        self._built_ins, self._loaded = built_ins, False

    def _load(self) -> dict[str, ModelFamily]:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._built_ins)
        return self._families

    def register(self, spec: ModelFamily) -> ModelFamily:
        known = self._families.get(spec.name)
        if known is not None and known is not spec:
            raise ValueError(f"model family {spec.name!r} is registered twice")
        claimed = {t: f.name for f in self._families.values() if f is not spec for t in f.checkpoint_types}
        taken = [f"{t} ({claimed[t]})" for t in spec.checkpoint_types if t in claimed]
        if taken:
            raise ValueError(f"model family {spec.name!r}: checkpoint types already claimed: {', '.join(taken)}")
        self._families[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a family (a test's own toy family)."""
        self._families.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._load())

    def get(self, name: str) -> ModelFamily:
        families = self._load()
        if name not in families:
            raise ValueError(f"model.backbone {name!r}: expected one of {', '.join(families)}")
        return families[name]

    def of_checkpoint(self, config: dict, source: str) -> ModelFamily:
        """The family whose checkpoints carry this config.json's model_type."""
        found = config.get("model_type")
        families = self._load().values()
        for spec in families:
            if found in spec.checkpoint_types:
                return spec
        known = ", ".join(f"{t} ({f.name})" for f in families for t in f.checkpoint_types)
        raise ValueError(f"{source}: model_type {found!r} is no known model family's checkpoint (known: {known})")

    def __iter__(self):
        return iter(list(self._load().values()))


REGISTRY = Registry(built_ins="llavaction.model.families")
