"""How a model reads a sample: its video format (`VideoFormat`), i.e. the chat template's system turn, what stands for
the clip in the chat text and the ids that clip becomes (its visual span). The model family owns its format (a
subclass in its own module, llavaction.model); the data pipeline and the prompts only use this interface, and take the
format from the model as plain values (`as_dict`: its class path and fields, what checkpoints record) that
`video_format` turns back into the object. The reference's own format, a placeholder the model splices its visual
tokens into, is `SplicedVideo`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from llavaction.utils.constants import IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX, SYSTEM_MESSAGE

ACTION_TOKEN_INDEX = -201  # where a learned action token goes in a prompt's ids (the model embeds it)

Encode = Callable[[str], list[int]]
EVEN_FPS = 1000.0  # the frame rate of a clip known only by its duration: its times kept to the millisecond


class ClipTiming(NamedTuple):
    """When a clip's frames were taken, as a video processor's metadata states it (transformers' VideoMetadata, what
    vLLM is given): each frame's index counted from the clip's first frame, the video's frame rate, and the clip's
    length in frames. Training, this codebase's inference and the serving engines derive a clip's timestamps and time
    positions from these same numbers (a named tuple: batches carry it, and Lightning rebuilds what a batch holds).

    Args:
        frame_indices: the frames shown, as indices from the clip's first frame.
        fps: the video's frame rate.
        total_frames: the clip's length in frames.
    """

    frame_indices: tuple[int, ...]
    fps: float
    total_frames: int

    @property
    def count(self) -> int:
        return len(self.frame_indices)

    @property
    def seconds(self) -> float:
        return self.total_frames / self.fps

    @property
    def sampled_fps(self) -> float:
        """Frames shown a second (the processor's VideoMetadata.sampled_fps)."""
        return self.count / self.total_frames * self.fps

    def as_metadata(self) -> dict:
        """The video metadata a processor or serving engine takes for these frames (already sampled)."""
        return {"fps": self.fps, "frames_indices": list(self.frame_indices), "total_num_frames": self.total_frames}

    @classmethod
    def even(cls, num_frames: int, seconds: float) -> ClipTiming:
        """num_frames at the midpoints of equal parts of a clip known only by its duration."""
        total = max(1, round(seconds * EVEN_FPS))
        return cls(tuple(int((i + 0.5) * total / num_frames) for i in range(num_frames)), EVEN_FPS, total)

    @classmethod
    def of_frames(cls, frame_ids: list[int], fps: float, start_sec: float, stop_sec: float) -> ClipTiming:
        """The frames a frame store (or a video file's clip) holds: their video frame indices, the video's frame rate
        and the clip's bounds (its first frame rounded as the clip rule rounds it)."""
        start, stop = round(start_sec * fps), round(stop_sec * fps)
        indices = tuple(max(0, int(i) - start) for i in frame_ids)
        return cls(indices, float(fps), max(stop - start, max(indices, default=0) + 1, 1))


@dataclass(frozen=True)
class VideoFormat:
    """How a family reads a sample (subclasses set the clip's marker and visual span).

    Args:
        system: the system turn's text (the chat template's default), or None for none.
        action_tokens: learned action tokens after the video.
    """

    system: str | None = SYSTEM_MESSAGE
    action_tokens: int = 0

    @property
    def video_marker(self) -> str:
        """What stands for the clip in the chat text, before the user's words."""
        raise NotImplementedError

    @property
    def placeholder(self) -> str:
        """The part of the video marker that the visual span's ids replace."""
        return self.video_marker

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Tokens the format needs the tokenizer to hold (a preset's tokenizer gets them appended)."""
        return ()

    def visual_ids(self, clip: ClipTiming, frame_size: int, encode: Encode) -> tuple[list[int], int]:
        """The ids the placeholder becomes for a clip (its frames' timing, frames of frame_size pixels), and the
        sequence length they take (more than the ids where the model expands a placeholder id)."""
        raise NotImplementedError

    @classmethod
    def from_values(cls, values: dict) -> VideoFormat:
        """The format from its fields as asdict wrote them (lists back to tuples; a nested dataclass field is rebuilt
        by the subclass)."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__qualname__}: unknown fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def as_dict(self) -> dict:
        """Plain values (what checkpoints record: they load with torch's weights_only unpickler)."""
        kind = type(self)
        return {"class_path": f"{kind.__module__}.{kind.__qualname__}", "init_args": asdict(self)}


def video_format(value: dict | VideoFormat | None) -> VideoFormat:
    """A format from its plain values (as_dict), or itself; None: the reference's (SplicedVideo) with no visual
    token."""
    if value is None:
        return SplicedVideo()
    if isinstance(value, VideoFormat):
        return value
    if set(value) != {"class_path", "init_args"}:
        raise ValueError(f"a video format is {{class_path, init_args}} (VideoFormat.as_dict), got keys {sorted(value)}")
    module, _, name = str(value["class_path"]).rpartition(".")
    try:
        kind = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"video format {value['class_path']!r}: no such class") from None
    if not (isinstance(kind, type) and issubclass(kind, VideoFormat)):
        raise ValueError(f"video format {value['class_path']!r} is not a VideoFormat")
    return kind.from_values(value["init_args"])


@dataclass(frozen=True)
class SplicedVideo(VideoFormat):
    """The reference's format (LLaVA's qwen_1_5 template): `<image>\\n` before the user's words, its placeholder one
    id (IMAGE_TOKEN_INDEX) that the model replaces by frames x tokens_per_frame visual tokens, the action tokens and
    the closing tokens.

    Args:
        tokens_per_frame: visual tokens a frame takes.
        closing_tokens: tokens after the action tokens (a single newline closing the video, for example).
    """

    tokens_per_frame: int = 0
    closing_tokens: int = 0

    @property
    def video_marker(self) -> str:
        return f"{IMAGE_PLACEHOLDER}\n"

    @property
    def placeholder(self) -> str:
        return IMAGE_PLACEHOLDER  # the newline after it stays text

    def visual_ids(self, clip: ClipTiming, frame_size: int, encode: Encode) -> tuple[list[int], int]:
        return [IMAGE_TOKEN_INDEX], clip.count * self.tokens_per_frame + self.action_tokens + self.closing_tokens


@dataclass(frozen=True)
class UnexpandedVideo(VideoFormat):
    """A format whose clip stays its chat template's marker in the ids, followed by the action tokens of the
    exported vocabulary: what a serving engine takes, its own processor expanding the marker into the visual tokens.

    Args:
        marker: what stands for the clip in the chat text.
        placeholder_text: the part of the marker the engine's processor expands (with the action tokens after it).
        action_text: the action tokens' text (`<|action_0|>` ...), empty without action tokens.
    """

    marker: str = ""
    placeholder_text: str = ""
    action_text: str = ""

    @property
    def video_marker(self) -> str:
        return self.marker

    @property
    def placeholder(self) -> str:
        return self.placeholder_text

    def visual_ids(self, clip: ClipTiming, frame_size: int, encode: Encode) -> tuple[list[int], int]:
        ids = encode(self.placeholder_text + self.action_text)
        return ids, len(ids)

    @classmethod
    def of(cls, video: VideoFormat, action_tokens: list[str]) -> UnexpandedVideo:
        """The unexpanded form of a family's format, with the exported vocabulary's action tokens."""
        return cls(video.system, 0, video.video_marker, video.placeholder, "".join(action_tokens))
