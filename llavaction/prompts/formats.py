"""How each backbone reads a sample: its chat template (system turn, where the clip goes) and how a clip's frames
become prompt tokens under its frame rule. LLaVA-Video: one `<image>` placeholder the model replaces by frames x
tokens-per-frame visual tokens. Qwen2.5-VL: a vision block of `<|video_pad|>` tokens, one per merged patch of each
temporal group of two frames, at the patch grid its processor resizes frames to. Qwen3-VL: one timestamp
(`<0.4 seconds>`) and vision block per temporal group. Learned action tokens, when the model has them, follow the
video. The data pipeline and the models compute grids with the same functions here, so the placeholder count always
equals the visual tokens."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from llavaction.utils.constants import IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX, SYSTEM_MESSAGE

Backbone = Literal["llava_video", "qwen2_5_vl", "qwen3_vl"]
BACKBONES: tuple[str, ...] = ("llava_video", "qwen2_5_vl", "qwen3_vl")
ACTION_TOKEN_INDEX = -201  # where a Qwen backbone's learned action token goes (after the video)
VISION_START, VIDEO_PAD, VISION_END = "<|vision_start|>", "<|video_pad|>", "<|vision_end|>"
QWEN_VIDEO_BLOCK = f"{VISION_START}{VIDEO_PAD}{VISION_END}"  # what the Qwen chat templates write for a video
IMAGE_PAD = "<|image_pad|>"
QWEN_VISION_TOKENS = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)  # what a Qwen tokenizer must know


def qwen2_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL / Qwen2.5-VL's frame rule (its processors' smart_resize): the nearest sides divisible by `factor`
    (patch x merge), scaled into [min_pixels, max_pixels] per frame, aspect ratio kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"a {width}x{height} frame: the aspect ratio must be below 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen3_resize(
    num_frames: int, height: int, width: int, factor: int, temporal: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen3-VL's frame rule (its video processor's smart_resize): as Qwen2's, but the pixel budget bounds the whole
    clip (frames x height x width), frames counted in whole temporal groups."""
    if num_frames < temporal:
        raise ValueError(f"{num_frames} frames: Qwen3-VL needs at least {temporal} (one temporal group)")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"a {width}x{height} frame: the aspect ratio must be below 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class FrameRule:
    """A Qwen backbone's frame rule, the values of its checkpoint's video processor config.

    Args:
        patch_size: side of a vision patch in pixels.
        merge_size: patches merged per side into one visual token.
        temporal_patch_size: frames in one temporal group (an odd count repeats the last frame, as the processor).
        min_pixels: the smallest pixel count (per frame for Qwen2.5-VL, per clip for Qwen3-VL).
        max_pixels: the pixel budget (per frame for Qwen2.5-VL, per clip for Qwen3-VL).
        image_mean: per-channel mean of the normalisation.
        image_std: per-channel standard deviation of the normalisation.
        per_clip_budget: the pixel bounds hold for the whole clip (Qwen3-VL) rather than per frame (Qwen2.5-VL).
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 3136
    max_pixels: int = 12845056
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    per_clip_budget: bool = False

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def padded_frames(self, num_frames: int) -> int:
        """Frames after the last one is repeated up to whole temporal groups."""
        return num_frames + (-num_frames % self.temporal_patch_size)

    def resized(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """The frame size the backbone sees (its processor's smart_resize)."""
        if self.per_clip_budget:
            return qwen3_resize(
                num_frames, height, width, self.factor, self.temporal_patch_size, self.min_pixels, self.max_pixels
            )
        return qwen2_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(temporal groups, patch rows, patch columns) of a clip, as the processor's video_grid_thw."""
        resized_height, resized_width = self.resized(num_frames, height, width)
        groups = self.padded_frames(num_frames) // self.temporal_patch_size
        return groups, resized_height // self.patch_size, resized_width // self.patch_size

    def tokens_per_group(self, num_frames: int, height: int, width: int) -> int:
        _, rows, columns = self.grid(num_frames, height, width)
        return rows * columns // self.merge_size**2

    def group_times(self, num_frames: int, clip_seconds: float) -> list[float]:
        """Qwen3-VL's timestamp of each temporal group: the mean of its first and last frame's time in the clip
        (frames at the midpoints of equal parts of the clip; an odd count repeats the last)."""
        times = [(i + 0.5) * clip_seconds / num_frames for i in range(num_frames)]
        times += [times[-1]] * (self.padded_frames(num_frames) - num_frames)
        size = self.temporal_patch_size
        return [(times[i] + times[i + size - 1]) / 2 for i in range(0, len(times), size)]


@dataclass(frozen=True)
class ChatFormat:
    """How a backbone reads a sample: its chat template's system turn and video block, and the visual tokens a clip
    takes (the model tells the data; train.py links them).

    Args:
        backbone: the model family.
        system: the system turn's text (the chat template's default), or None for none.
        tokens_per_frame: LLaVA-Video: visual tokens a frame takes.
        action_tokens: learned action tokens after the video.
        closing_tokens: LLaVA-Video: tokens after the action tokens (newline_position one_token: one newline).
        rule: Qwen: the frame rule.
        video_token_id: Qwen: `<|video_pad|>`'s id.
        vision_start_id: Qwen: `<|vision_start|>`'s id.
        vision_end_id: Qwen: `<|vision_end|>`'s id.
        timestamps: Qwen3-VL: a timestamp before each temporal group's block.
    """

    backbone: Backbone = "llava_video"
    system: str | None = SYSTEM_MESSAGE
    tokens_per_frame: int = 0
    action_tokens: int = 0
    closing_tokens: int = 0
    rule: FrameRule | None = None
    video_token_id: int = -1
    vision_start_id: int = -1
    vision_end_id: int = -1
    timestamps: bool = False

    def as_dict(self) -> dict:
        """Plain values (what checkpoints record: they load with torch's weights_only unpickler)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict | ChatFormat | None) -> ChatFormat:
        """A format from its plain values (or itself; None: LLaVA-Video's with no visual token)."""
        if fields is None:
            return cls()
        if isinstance(fields, ChatFormat):
            return fields
        rule = fields.get("rule")
        if isinstance(rule, dict):
            rule = FrameRule(**{k: tuple(v) if isinstance(v, list) else v for k, v in rule.items()})
        return cls(**(fields | {"rule": rule}))

    @property
    def video_marker(self) -> str:
        """What stands for the clip in the chat text, before the user's words."""
        return f"{IMAGE_PLACEHOLDER}\n" if self.backbone == "llava_video" else QWEN_VIDEO_BLOCK

    @property
    def placeholder(self) -> str:
        """The part of the video marker that visual_ids replace (LLaVA-Video's newline after `<image>` stays text)."""
        return IMAGE_PLACEHOLDER if self.backbone == "llava_video" else QWEN_VIDEO_BLOCK

    def visual_ids(
        self, num_frames: int, frame_size: int, clip_seconds: float, encode: Callable[[str], list[int]]
    ) -> tuple[list[int], int]:
        """The ids the video marker becomes and the sequence length they take: LLaVA-Video's one placeholder (the
        model splices frames x tokens-per-frame + action and closing tokens there), or a Qwen backbone's vision
        block(s) and action tokens, token for token."""
        if self.backbone == "llava_video":
            return [IMAGE_TOKEN_INDEX], num_frames * self.tokens_per_frame + self.action_tokens + self.closing_tokens
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
