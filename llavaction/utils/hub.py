"""Checkpoints and tokenizers by local path or by model-hub id.

An existing local path wins. Otherwise a value of the form `org/name` or `org/name@revision` is fetched with
huggingface_hub (only the files the loaders read; HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE are honoured, and offline a
model already in the cache is used as is). Anything else is an immediate error naming the value.
"""

from __future__ import annotations

import re
from pathlib import Path

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
# What LlavaVideoModel.from_pretrained and AutoTokenizer read: no optimizer states, no other formats.
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.*",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "action_heads.json",
    "action_heads.safetensors",
)


class CheckpointNotFound(FileNotFoundError):
    pass


def is_hub_id(value: str) -> bool:
    return HUB_ID.match(value) is not None


def resolve(value: str | Path, what: str = "checkpoint") -> Path:
    """A local file or directory, or the cached snapshot of a hub id (downloaded when online)."""
    path = Path(value)
    if path.exists():
        return path
    match = HUB_ID.match(str(value))
    if match is None:
        raise CheckpointNotFound(f"{what} {value}: no such file or directory, and not a model-hub id (org/name)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            match["repo"],
            revision=match["revision"],
            allow_patterns=list(CHECKPOINT_FILES),
            local_files_only=constants.is_offline_mode(),
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        offline = (
            " (offline: HF_HUB_OFFLINE is set and it is not in the hub cache)" if constants.is_offline_mode() else ""
        )
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointNotFound(
            f"{what} {value}: no such local folder (under {Path.cwd()}), and as a model-hub id the hub could not "
            f"provide it{offline}: {first}"
        ) from None
    return Path(folder)
