"""How the Qwen backbones read a sample: their chat templates write a video as `<|vision_start|><|video_pad|>
<|vision_end|>`, whose pad becomes one `<|video_pad|>` a merged patch of every temporal group at the grid the frame
rule resizes frames to (Qwen2.5-VL: one block for the clip; Qwen3-VL: one block a group, each after its timestamp
`<1.0 seconds>`); learned action tokens follow the video."""

from __future__ import annotations

from dataclasses import dataclass, field

from llavaction.model.qwen_vl.frames import FrameRule
from llavaction.prompts.formats import ACTION_TOKEN_INDEX, Encode, VideoFormat

VISION_START, VIDEO_PAD, VISION_END = "<|vision_start|>", "<|video_pad|>", "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_BLOCK = f"{VISION_START}{VIDEO_PAD}{VISION_END}"  # what the Qwen chat templates write for a video
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

    def visual_ids(
        self, num_frames: int, frame_size: int, clip_seconds: float, encode: Encode
    ) -> tuple[list[int], int]:
        per_group = self.rule.tokens_per_group(num_frames, frame_size, frame_size)
        block = [self.vision_start_id, *[self.video_token_id] * per_group, self.vision_end_id]
        if self.timestamps:
            ids = []
            for time in self.rule.group_times(num_frames, clip_seconds):
                ids += encode(f"<{time:.1f} seconds>") + block
        else:
            groups = self.rule.padded_frames(num_frames) // self.rule.temporal_patch_size
            ids = [self.vision_start_id, *[self.video_token_id] * (per_group * groups), self.vision_end_id]
        ids += [ACTION_TOKEN_INDEX] * self.action_tokens
        return ids, len(ids)
