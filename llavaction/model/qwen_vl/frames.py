"""The Qwen backbones' frame rule: how their video processors resize a clip's frames (smart_resize), group them in
time and stamp the groups (Qwen3-VL), so that the visual tokens the prompt holds always equal the model's."""

from __future__ import annotations

import math
from dataclasses import dataclass

from llavaction.prompts.formats import ClipTiming


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

    def group_times(self, clip: ClipTiming) -> list[float]:
        """Qwen3-VL's timestamp of each temporal group, as its processor computes it from the frames' indices and the
        video's frame rate: the mean of the group's first and last frame's time (an odd count repeats the last)."""
        indices = list(clip.frame_indices)
        indices += [indices[-1]] * (self.padded_frames(len(indices)) - len(indices))
        times = [index / clip.fps for index in indices]
        size = self.temporal_patch_size
        return [(times[i] + times[i + size - 1]) / 2 for i in range(0, len(times), size)]

    def seconds_per_group(self, clip: ClipTiming) -> float:
        """Qwen2.5-VL's time step of a temporal group, as its processor computes it (second_per_grid_ts): the
        group's frames over the frames shown a second."""
        return self.temporal_patch_size / clip.sampled_fps
