"""The checkpoint format, in one place: what a training checkpoint (`.ckpt`, Lightning's) carries beside Lightning's
own entries, the exports a trained model is written as, and the precisions a checkpoint runs at.

A training checkpoint carries the module's hyperparameters (the typed option groups and the resolved architecture),
the tokenizer's files (TOKENIZER_FILES) and the precision it was trained at (TRAINED_PRECISION); the DataModule's
hyperparameters hold the prompt settings and frame count. A model folder is a family's checkpoint folder
(config.json + safetensors: an original LLaVA-Video / LLaVAction one, transformers' layout for the others) or a
model-hub id; `export_model` writes one from a trained model.
"""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from pathlib import Path
from typing import Literal, get_args

import torch

from llavaction.utils.hub import is_hub_id

Precision = Literal["32-true", "bf16-true", "bf16-mixed", "16-true", "16-mixed", "64-true"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}
# Entries a training checkpoint carries beside Lightning's: the tokenizer's files ({name: bytes}) and the precision.
TOKENIZER_FILES, TRAINED_PRECISION = "llavaction_tokenizer_files", "llavaction_precision"
ExportLayout = Literal["original", "transformers"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names it."""


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """{file name: content} of a tokenizer as save_pretrained writes it (a checkpoint carries them)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def extra_entries(tokenizer: dict[str, bytes], precision: str | None) -> dict:
    """What a training checkpoint carries beside Lightning's entries and the hyperparameters."""
    return {TOKENIZER_FILES: tokenizer} | ({TRAINED_PRECISION: precision} if precision else {})


def check_export_layout(family, config, layout: ExportLayout) -> None:
    """Refuse, before any work, a layout the family does not write, or one that would compute other logits than the
    model."""
    if layout not in family.export_layouts:
        raise ValueError(f"{family.name} exports the layouts {', '.join(family.export_layouts)}, not {layout!r}")
    family.check_export(config, layout)


EXPORT_COMMAND = "llavaction export"  # the marker of an export folder (utils.files.replaced_folder)


def export_model(
    family, model, tokenizer, chat, directory: Path, is_writer: bool, layout: ExportLayout = "original"
) -> None:
    """A trained model with its tokenizer, gathered from every rank under FSDP2 and written by the writer rank in the
    family's layout (ModelFamily.export; chat: how the model reads a sample) as a whole (an earlier export in
    `directory` stays until the new one is complete; a folder that is not an export is refused, never replaced:
    utils.files.replaced_folder)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from llavaction.utils.files import replaced_folder

    check_export_layout(family, model.config, layout)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_writer:
        with replaced_folder(directory, EXPORT_COMMAND) as folder:
            family.export(model, state, Path(folder), tokenizer, layout, chat)


def is_model_folder(checkpoint: str | Path) -> bool:
    """A family's checkpoint folder (a directory with config.json), or a model-hub id."""
    path = Path(checkpoint)
    if path.exists():
        return path.is_dir() and (path / "config.json").exists()
    return is_hub_id(str(checkpoint))


def is_sharded_training_checkpoint(path: Path) -> bool:
    """A folder of FSDP2's sharded training checkpoint (torch.distributed.checkpoint's metadata, Lightning's
    meta.pt)."""
    return path.is_dir() and ((path / ".metadata").exists() or (path / "meta.pt").exists())


def check_checkpoint_file(path: Path) -> None:
    """A Lightning checkpoint file must be a whole zip archive (torch.save's format): a text file or one cut short by
    a full disk is refused naming it, before anything is built."""
    if path.is_file() and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (not a whole torch.save archive: truncated or text?)")


def check_precision(precision: str) -> str:
    """A Lightning precision name accepted here (PRECISIONS)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)} (Lightning's names)")
    return precision


def precision_of_folder(config: dict) -> str:
    """The precision a model folder's weights are stored at (config.json's torch_dtype, or dtype)."""
    dtype = config.get("torch_dtype", config.get("dtype"))
    return {"bfloat16": "bf16-true", "float16": "16-true"}.get(str(dtype), "32-true")


@contextlib.contextmanager
def precision_context(module: torch.nn.Module, precision: str, device: torch.device):
    """Run a module outside a Trainer at a Lightning precision: '-true' casts the weights, '-mixed' keeps them in
    fp32 under autocast."""
    bits, _, kind = check_precision(precision).partition("-")
    if kind == "true":
        module.to(device, _DTYPES[bits])
        yield
        return
    module.to(device, torch.float32)
    with torch.autocast(device.type, dtype=_DTYPES[bits]):
        yield


def read_lightning(path: Path) -> dict:
    """A Lightning checkpoint file's contents (weights memory-mapped), checked to be a llavaction training
    checkpoint."""
    check_checkpoint_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # torch raises RuntimeError, pickle and zip errors alike for a damaged file
        message = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {message})") from None
    if not isinstance(state, dict) or "state_dict" not in state or "hyper_parameters" not in state:
        raise CheckpointError(f"{path}: not a llavaction training checkpoint (no state_dict or hyperparameters)")
    return state
