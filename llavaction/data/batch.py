"""The batch: the one contract between the data pipeline and the model's consumers (the LightningModule, scoring,
evaluation, prediction, the callbacks). Collate (stages.py) builds it, for training and evaluation rows alike and for
clips decoded from video files; nothing else assembles one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from llavaction.prompts.formats import ClipTiming


@dataclass
class Batch:
    """B rows of L tokens and T frames of S x S pixels.

    Args:
        input_ids: [B, L] long, right-padded; each row holds the image placeholder once, where its visual tokens go.
        labels: [B, L] long; IGNORE_INDEX except on the answers (and on every token of a padding row).
        attention_mask: [B, L] long, 1 on real tokens.
        frames: [B, T, S, S, 3] uint8 RGB frames (the model converts and normalises them on its device).
        is_padding: [B] bool: a row that only fills the batch (left out of the loss and the metrics).
        truncated: [B] bool: a row whose answer was cut to fit max_length.
        answer_index: [B] long: the right option of an MQA question, -1 when none (or not a question).
        num_options: [B] long: options of the question (0 when not one).
        clips: per row, when its clip's frames were taken (ClipTiming: a Qwen backbone's timestamps and time positions
            follow it, and a serving engine is given it as the video's metadata).
        verb_class: [B] long: the segment's EK-100 verb class, -1 when unknown.
        noun_class: [B] long: the noun class, -1 when unknown.
        action_index: [B] long: the action's index in the dense action vocabulary (the action head), -1 when unknown.
        verb_tail: [B] bool: the verb is a tail class.
        noun_tail: [B] bool: the noun is a tail class.
        unseen: [B] bool: the participant is unseen in training.
        tasks: per row, the task its prompt asks ('mqa', 'narration', 'temporal', 'qa'; 'padding').
        meta: per row, the sample's record (question fields, options, frame metadata).
        keys: per row, the sample's key (`key#i` for conversation i of a replayed video).
        skipped_samples: training samples skipped since the previous batch of this loader worker, by reason.
        frame_buffer: (worker, slot) of the reused frame buffer `frames` lives in (training), None for fresh memory.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    frames: torch.Tensor
    is_padding: torch.Tensor
    truncated: torch.Tensor
    answer_index: torch.Tensor
    num_options: torch.Tensor
    verb_class: torch.Tensor
    noun_class: torch.Tensor
    action_index: torch.Tensor
    verb_tail: torch.Tensor
    noun_tail: torch.Tensor
    unseen: torch.Tensor
    clips: list[ClipTiming] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    skipped_samples: dict[str, int] = field(default_factory=dict)
    frame_buffer: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with its tensors on `device` (what Lightning's transfer does for a dataclass)."""
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """The batch with its tensors in page-locked memory (the DataLoader's pin_memory calls this)."""
        return self._map(lambda tensor: tensor.pin_memory())

    def _map(self, function) -> Batch:
        changed = {
            f.name: function(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changed)
