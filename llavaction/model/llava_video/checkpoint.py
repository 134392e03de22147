"""Original LLaVA-Video / LLaVAction checkpoint layout: config.json + safetensors with the original parameter names."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import initialization

from llavaction.model.llava_video.config import LlavaVideoConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# (our prefix, original prefix); the original side is matched most specific first.
NAME_MAP = (
    ("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("action_supervision", "model.action_supervision"),
    ("verb_head.", "verb_head."),
    ("noun_head.", "noun_head."),
    ("action_head.", "action_head."),
    ("projector.", "model.mm_projector."),
    ("image_newline", "model.image_newline"),
    ("llm.lm_head.", "lm_head."),
    ("llm.model.", "model."),
)


def to_original_name(name: str) -> str:
    for ours, original in NAME_MAP:
        if name.startswith(ours):
            return original + name[len(ours) :]
    raise KeyError(f"parameter {name} has no original name")


def from_original_name(name: str) -> str:
    for ours, original in NAME_MAP:
        if name.startswith(original):
            return ours + name[len(original) :]
    return name  # left as is: reported as unexpected


def original_state_dict(
    model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The model's tensors under their original names (a tied lm_head is not stored, as in the originals)."""
    state = model.state_dict() if state is None else state
    tied = model.config.text.get("tie_word_embeddings", False)
    return {to_original_name(k): v for k, v in state.items() if not (tied and k == "llm.lm_head.weight")}


def save_original(
    model, directory: Path, max_shard_bytes: int = 5 * 2**30, state: dict[str, torch.Tensor] | None = None
) -> None:
    """config.json plus model.safetensors, or numbered shards and model.safetensors.index.json when larger."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in original_state_dict(model, state).items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    for stale in list(directory.glob("model*.safetensors")) + [directory / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(directory / filename), metadata={"format": "pt"})
            weight_map |= {name: filename for name in shard}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (directory / INDEX_FILE).write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    (directory / "config.json").write_text(json.dumps(model.config.to_original(), indent=2) + "\n")


def checkpoint_files(directory: Path) -> list[Path]:
    if (directory / INDEX_FILE).exists():
        weight_map = json.loads((directory / INDEX_FILE).read_text())["weight_map"]
        return [directory / name for name in sorted(set(weight_map.values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors files")
    return files


def read_config(directory: Path, llava: bool = True) -> dict:
    """A checkpoint folder's config.json (llava: it must be an original LLaVA-Video / LLaVAction one)."""
    from llavaction.utils.hub import resolve

    path = resolve(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a checkpoint directory")
    config = json.loads(path.read_text())
    if llava:
        check_original(config, path)
    return config


def check_original(config: dict, path: Path) -> None:
    """An original LLaVA-Video / LLaVAction config.json, or an error naming what it is."""
    if "LlavaQwenForCausalLM" not in config.get("architectures", []):
        raise ValueError(f"{path}: architectures {config.get('architectures')} is not LlavaQwenForCausalLM")


ACTION_SUPERVISION_NAMES = ("model.action_supervision", "verb_head.", "noun_head.", "action_head.")


def load_original(
    cls,
    directory: Path,
    strict: bool = True,
    dtype: torch.dtype | None = None,
    allow_missing: tuple[str, ...] = (),
    config: LlavaVideoConfig | None = None,
    **overrides,
):
    """Build the model from config.json (weights not initialised) and load every tensor; with strict, any missing or
    unexpected name is an error listing them. Names starting with an `allow_missing` prefix may be absent (parts
    added on top of the checkpoint, e.g. ACTION_SUPERVISION_NAMES); they keep their fresh initialisation. directory:
    a local folder or a model-hub id (llavaction.utils.hub). config: the directory's config, already read."""
    from llavaction.utils.hub import resolve

    directory = resolve(directory)
    if config is None:
        config = LlavaVideoConfig.from_original(read_config(directory), source=str(directory / "config.json"))
    config = replace(config, **overrides)
    with initialization.no_init_weights():
        model = cls(config)
    model.llm.tie_weights()  # skipped under no_init_weights; a no-op unless tie_word_embeddings
    if dtype is not None:
        model.to(dtype)
    expected = set(original_state_dict(model))
    tensors: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(directory):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    missing = sorted(n for n in expected - set(tensors) if not n.startswith(allow_missing))
    unexpected = sorted(set(tensors) - expected)
    if strict and (missing or unexpected):
        raise ValueError(
            f"{directory}: checkpoint does not match the model.\n  missing: {missing}\n  unexpected: {unexpected}"
        )
    state = {from_original_name(k): v for k, v in tensors.items() if k in expected}
    result = model.load_state_dict(state, strict=False)
    absent = [k for k in result.missing_keys if k != "llm.lm_head.weight"]
    if strict and any(not to_original_name(k).startswith(allow_missing) for k in absent):
        raise ValueError(f"{directory}: tensors not loaded: {absent}")
    if any(to_original_name(k).startswith(ACTION_SUPERVISION_NAMES) for k in absent):
        model.init_action_supervision()  # built under no_init_weights: give the new parts their proper start
    return model
