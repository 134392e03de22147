"""Frame sources for the three EPIC-KITCHENS-100 video layouts and single video files, decoded with decord (the decord2
fork), and the frame rule of every clip, the reference's (its start and stop rounded to frames, the stop no later
than the last frame, then the floored midpoints of equal parts between them): data_prep.extract_frames and
llavaction.evaluation.clips share it.

raw:     P01/P01_01.MP4 (or P01/videos/P01_01.MP4)
chunked: P01/P01_01.MP4/0.MP4, 15.MP4, ... (AVION-style fixed-length chunks; a segment may span chunks)
frames:  P01/P01_01/frame_0000000001.jpg ... (EPIC rgb_frames, 1-based)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

LAYOUTS = ("raw", "chunked", "frames")
RESIZE_MODES = ("squash", "crop")
VIDEO_SUFFIXES = (".MP4", ".mp4")


class VideoError(OSError):
    """A video that cannot be found or decoded; the message names it."""


def midpoint_ids(start_frame: int, stop_frame: int, num_frames: int) -> list[int]:
    """The reference's sample points between two frame indices: the midpoints of num_frames equal parts, floored."""
    edges = np.linspace(start_frame, stop_frame, num_frames + 1)
    return (0.5 * edges[:-1] + 0.5 * edges[1:]).astype(np.int64).tolist()


def clip_frame_ids(start_sec: float, stop_sec: float, num_frames: int, fps: float, last: int) -> tuple[list[int], bool]:
    """The frame indices of a clip by the reference's rule: start and stop rounded to frames (half to even, as numpy),
    the stop no later than the last frame (`last`), then midpoint_ids. True when the clip reaches past the video's
    last frame (its frames then spread over what the video holds)."""
    stop = min(int(np.round(stop_sec * fps)), last)
    start = min(int(np.round(start_sec * fps)), stop)
    return midpoint_ids(start, stop, num_frames), stop_sec * fps > last + 1 + 1e-6


def resize_frames(frames: np.ndarray, size: int, mode: str) -> np.ndarray:
    """[N, H, W, 3] uint8 -> [N, size, size, 3]: squash (aspect not kept) or short side + centre crop."""
    n, h, w, _ = frames.shape
    if mode == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frames = frames[:, top : top + side, left : left + side]
    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC, reducing_gap=3.0))
    return out


@dataclass
class DecodedClip:
    frames: np.ndarray  # [N, size, size, 3] uint8, in the order asked for
    frame_ids: list[int]  # 0-based indices into the whole video
    fps: float
    clamped: bool  # some asked time lay beyond the last frame


def find_raw(videos: Path, participant: str, video_id: str) -> Path:
    """A video of the raw layout: P01/P01_01.MP4 (or .mp4, or under P01/videos/, or at the top)."""
    for folder in (videos / participant, videos / participant / "videos", videos):
        for suffix in VIDEO_SUFFIXES:
            if (folder / f"{video_id}{suffix}").is_file():
                return folder / f"{video_id}{suffix}"
    raise VideoError(f"video {video_id} not found under {videos} (raw layout: {participant}/{video_id}.MP4)")


def _open_decord(path: Path, threads: int):
    import decord

    # Frames are decoded at their native size and resized here: decord's own scaling fails for some output sizes.
    try:
        reader = decord.VideoReader(str(path), num_threads=threads)
    except Exception as err:  # decord raises DECORDError (a RuntimeError) or others on corrupt input
        raise VideoError(f"cannot open {path}: {err}") from None
    if len(reader) == 0:
        raise VideoError(f"{path} holds no frames")
    return reader


def _get_batch(reader, ids: list[int], path: Path) -> np.ndarray:
    """Decode ids (any order) with one sorted, de-duplicated get_batch."""
    unique = sorted(set(ids))
    try:
        batch = reader.get_batch(unique).asnumpy()
    except Exception as err:
        raise VideoError(f"cannot decode frames {unique[0]}..{unique[-1]} of {path}: {err}") from None
    position = {frame_id: i for i, frame_id in enumerate(unique)}
    return batch[[position[i] for i in ids]]


class RawVideo:
    """One MP4 per video, opened once for all its segments."""

    def __init__(
        self,
        videos: Path,
        participant: str,
        video_id: str,
        size: int,
        mode: str,
        threads: int = 1,
        path: Path | None = None,
    ):
        self.path = find_raw(videos, participant, video_id) if path is None else path
        if not self.path.is_file():
            raise VideoError(f"video {video_id} not found: {self.path}")
        self.reader = _open_decord(self.path, threads)
        self.fps = float(self.reader.get_avg_fps())
        self.size, self.mode = size, mode

    @property
    def duration_sec(self) -> float:
        return len(self.reader) / self.fps

    def clip(self, start_sec: float, stop_sec: float, num_frames: int, **_) -> DecodedClip:
        ids, clamped = clip_frame_ids(start_sec, stop_sec, num_frames, self.fps, len(self.reader) - 1)
        frames = resize_frames(_get_batch(self.reader, ids, self.path), self.size, self.mode)
        return DecodedClip(frames, ids, self.fps, clamped)


class ChunkedVideo:
    """AVION-style chunks P01/P01_01.MP4/{0,15,30,...}.MP4; frames of a segment spanning chunks are stitched."""

    def __init__(
        self,
        videos: Path,
        participant: str,
        video_id: str,
        size: int,
        mode: str,
        chunk_seconds: float,
        threads: int = 1,
    ):
        self.folder = next(
            (
                f
                for f in (videos / participant / f"{video_id}.MP4", videos / participant / f"{video_id}.mp4")
                if f.is_dir()
            ),
            None,
        )
        if self.folder is None:
            raise VideoError(
                f"video {video_id} not found under {videos} (chunked layout: {participant}/{video_id}.MP4/0.MP4)"
            )
        starts = sorted(int(p.stem) for p in self.folder.iterdir() if p.stem.isdigit() and p.suffix in VIDEO_SUFFIXES)
        if not starts:
            raise VideoError(f"{self.folder} holds no chunks")
        self.chunk_starts = starts
        self.chunk_seconds, self.size, self.mode, self.threads = chunk_seconds, size, mode, threads
        self.readers: dict[int, object] = {}
        self.fps = float(self._reader(starts[0]).get_avg_fps())

    def _chunk_path(self, start: int) -> Path:
        return next(self.folder / f"{start}{s}" for s in VIDEO_SUFFIXES if (self.folder / f"{start}{s}").is_file())

    def _reader(self, start: int):
        if start not in self.readers:
            self.readers[start] = _open_decord(self._chunk_path(start), self.threads)
        return self.readers[start]

    def clip(self, start_sec: float, stop_sec: float, num_frames: int, **_) -> DecodedClip:
        """As the reference's chunked loader: the stop no later than the last frame of the chunk holding it (the last
        chunk there is, at the video's end), frame ids over the whole video, each read from the chunk whose frames
        [int(start x fps), int(end x fps)) hold it."""
        end_chunk = int(stop_sec) // self.chunk_seconds * self.chunk_seconds
        held = [s for s in self.chunk_starts if s <= end_chunk]
        end_chunk = held[-1] if held else self.chunk_starts[0]
        last = int(np.round(((len(self._reader(end_chunk)) - 1) / self.fps + end_chunk) * self.fps))
        ids, clamped = clip_frame_ids(start_sec, stop_sec, num_frames, self.fps, last)
        located: list[tuple[int, int]] = []  # (chunk start, index in chunk)
        for frame in ids:
            start = next(
                (s for s in self.chunk_starts if int(s * self.fps) <= frame < int((s + self.chunk_seconds) * self.fps)),
                None,
            )
            if start is None:
                raise VideoError(f"{self.folder}: no chunk holds frame {frame} ({frame / self.fps:.2f} s)")
            chunk_last = len(self._reader(start)) - 1
            index = int(frame - start * self.fps)
            clamped |= index > chunk_last
            located.append((start, min(index, chunk_last)))
        frames = np.empty((len(ids), self.size, self.size, 3), dtype=np.uint8)
        for start in sorted({s for s, _ in located}):
            slots = [k for k, (s, _) in enumerate(located) if s == start]
            batch = _get_batch(self._reader(start), [located[k][1] for k in slots], self._chunk_path(start))
            frames[slots] = resize_frames(batch, self.size, self.mode)
        return DecodedClip(frames, ids, self.fps, clamped)


class FrameFolder:
    """EPIC rgb_frames: one JPEG per frame, 1-based file numbers; the fps comes from EPIC_100_video_info.csv."""

    def __init__(self, videos: Path, participant: str, video_id: str, size: int, mode: str, fps: float | None):
        self.folder = videos / participant / video_id
        if not self.folder.is_dir():
            raise VideoError(f"video {video_id} not found under {videos} (frames layout: {participant}/{video_id}/)")
        if not fps:
            raise VideoError(f"{video_id}: the frames layout needs the fps (EPIC_100_video_info.csv or the question)")
        self.num_frames = sum(1 for p in self.folder.iterdir() if p.name.startswith("frame_"))
        if self.num_frames == 0:
            raise VideoError(f"{self.folder} holds no frame_*.jpg files")
        self.fps, self.size, self.mode = fps, size, mode

    def clip(
        self, start_sec: float, stop_sec: float, num_frames: int, frames: tuple[int, int] | None = None
    ) -> DecodedClip:
        """frames: the segment's EPIC start and stop frame (1-based file numbers), which the reference's frame loader
        samples between directly; without them, the clip's seconds by the rule of the other layouts."""
        if frames is not None:
            files = midpoint_ids(frames[0], frames[1], num_frames)
            ids, clamped = [min(max(f - 1, 0), self.num_frames - 1) for f in files], frames[1] > self.num_frames
        else:
            ids, clamped = clip_frame_ids(start_sec, stop_sec, num_frames, self.fps, self.num_frames - 1)
        decoded = []
        for i in ids:
            path = self.folder / f"frame_{i + 1:010d}.jpg"
            try:
                decoded.append(simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB"))
            except (OSError, ValueError) as err:
                raise VideoError(f"cannot read {path}: {err}") from None
        if len({f.shape for f in decoded}) != 1:
            raise VideoError(f"{self.folder}: frames of different sizes")
        frames = resize_frames(np.stack(decoded), self.size, self.mode)
        return DecodedClip(frames, ids, self.fps, clamped)


def video_duration(path: Path) -> float:
    """Seconds of a video file (frames / average frame rate, as the frame times are computed)."""
    reader = _open_decord(Path(path), threads=1)
    return len(reader) / float(reader.get_avg_fps())


def video_file(path: Path, size: int, mode: str = "squash", threads: int = 1) -> RawVideo:
    """One video file, wherever it lies."""
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such video file")
    return RawVideo(Path(path).parent, "", Path(path).stem, size, mode, threads, path=Path(path))


def open_video(
    layout: str,
    videos: Path,
    participant: str,
    video_id: str,
    *,
    size: int,
    mode: str,
    chunk_seconds: float = 15.0,
    fps: float | None = None,
    threads: int = 1,
    path: str | None = None,
):
    """The frame source of one video in the given layout; an explicit `path` (relative to `videos`) is one video
    file whatever the layout (replayed instruction data)."""
    if path is not None:
        return RawVideo(videos, participant, video_id, size, mode, threads, path=videos / path)
    if layout == "raw":
        return RawVideo(videos, participant, video_id, size, mode, threads)
    if layout == "chunked":
        return ChunkedVideo(videos, participant, video_id, size, mode, chunk_seconds, threads)
    if layout == "frames":
        return FrameFolder(videos, participant, video_id, size, mode, fps)
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
