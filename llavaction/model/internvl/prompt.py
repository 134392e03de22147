"""How InternVL reads a sample: its chat template writes a video as `<video>\\n`, which its processor expands to one
line a frame, `FrameN: <img>` + `<IMG_CONTEXT>` a visual token + `</img>`, the lines joined by newlines; learned action
tokens follow the video. Text between special tokens is tokenised as the processor's whole string is (chunks between
special tokens)."""

from __future__ import annotations

from dataclasses import dataclass

from llavaction.prompts.formats import ACTION_TOKEN_INDEX, ClipTiming, Encode, VideoFormat

START_IMAGE, END_IMAGE, CONTEXT_IMAGE, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
SPECIAL_TOKENS = (START_IMAGE, END_IMAGE, CONTEXT_IMAGE, VIDEO)


@dataclass(frozen=True)
class InternVLVideo(VideoFormat):
    """InternVL's format.

    Args:
        tokens_per_frame: `<IMG_CONTEXT>` tokens a frame takes (its pixel-shuffled patches).
        context_id: `<IMG_CONTEXT>`'s id (the model puts a visual token at each).
        start_id: `<img>`'s id.
        end_id: `</img>`'s id.
    """

    system: str | None = None  # the checkpoints' chat template has no default system turn
    tokens_per_frame: int = 0
    context_id: int = -1
    start_id: int = -1
    end_id: int = -1

    @property
    def video_marker(self) -> str:
        return f"{VIDEO}\n"

    @property
    def placeholder(self) -> str:
        return VIDEO  # the newline after it stays text, as the chat template writes it

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return SPECIAL_TOKENS

    def visual_ids(self, clip: ClipTiming, frame_size: int, encode: Encode) -> tuple[list[int], int]:
        frame = [self.start_id, *[self.context_id] * self.tokens_per_frame, self.end_id]
        ids: list[int] = []
        for index in range(clip.count):
            separator = "\n" if index else ""
            ids += encode(f"{separator}Frame{index + 1}: ") + frame
        ids += [ACTION_TOKEN_INDEX] * self.action_tokens
        return ids, len(ids)
