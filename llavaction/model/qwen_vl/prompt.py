"""How the Qwen backbones read a sample, as their processors expand it: their chat templates write a video as
`<|vision_start|><|video_pad|><|vision_end|>`, and the processor replaces the pad by one `<|video_pad|>` a merged
patch of every temporal group at the grid the frame rule resizes frames to (Qwen2.5-VL), or by each group's timestamp
`<1.0 seconds>` and its own `<|vision_start|>` pads `<|vision_end|>` block (Qwen3-VL, inside the template's outer
pair); learned action tokens follow the video."""

from __future__ import annotations

from dataclasses import dataclass, field

from llavaction.model.qwen_vl.frames import FrameRule
from llavaction.prompts.formats import ACTION_TOKEN_INDEX, ClipTiming, Encode, VideoFormat

VISION_START, VIDEO_PAD, VISION_END = "<|vision_start|>", "<|video_pad|>", "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_BLOCK = f"{VISION_START}{VIDEO_PAD}{VISION_END}"  # what the Qwen chat templates write for a video
IMAGE_BLOCK = f"{VISION_START}{IMAGE_PAD}{VISION_END}"
VISION_TOKENS = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)  # what a Qwen tokenizer must know


@dataclass(frozen=True)
class QwenVideo(VideoFormat):
    """A Qwen backbone's format.

    Args:
        rule: the frame rule (the checkpoint's video processor).
        video_token_id: `<|video_pad|>`'s id.
        vision_start_id: `<|vision_start|>`'s id.
        vision_end_id: `<|vision_end|>`'s id.
        timestamps: Qwen3-VL: a timestamp and a vision block for each temporal group.
    """

    rule: FrameRule = field(default_factory=FrameRule)
    video_token_id: int = -1
    vision_start_id: int = -1
    vision_end_id: int = -1
    timestamps: bool = False

    @property
    def video_marker(self) -> str:
        return VIDEO_BLOCK

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return VISION_TOKENS

    @classmethod
    def from_values(cls, values: dict) -> QwenVideo:
        rule = values.get("rule")
        if isinstance(rule, dict):
            rule = FrameRule(**{k: tuple(v) if isinstance(v, list) else v for k, v in rule.items()})
        return super().from_values(values | {"rule": rule})

    def visual_ids(self, clip: ClipTiming, frame_size: int, encode: Encode) -> tuple[list[int], int]:
        per_group = self.rule.tokens_per_group(clip.count, frame_size, frame_size)
        block = [self.vision_start_id, *[self.video_token_id] * per_group, self.vision_end_id]
        if self.timestamps:
            ids = [self.vision_start_id]
            for time in self.rule.group_times(clip):
                ids += encode(f"<{time:.1f} seconds>") + block
            ids.append(self.vision_end_id)
        else:
            groups = self.rule.padded_frames(clip.count) // self.rule.temporal_patch_size
            ids = [self.vision_start_id, *[self.video_token_id] * (per_group * groups), self.vision_end_id]
        ids += [ACTION_TOKEN_INDEX] * self.action_tokens
        return ids, len(ids)
