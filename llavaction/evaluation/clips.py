"""Answers about video clips from a checkpoint: what action happens between two times of a video (`llavaction
predict` is its command line).

The frames are chosen, decoded and resized exactly as data_prep.extract_frames does (llavaction.data.video); the
prompt is the reference's, built and batched by the data pipeline's own stages (EncodePrompt, Collate) and asked as
the checkpoint was trained (evaluation.checkpoints.QuestionSettings): multiple choice with options, direct narration
without, or a free question. The answer is greedy; with options, the option it names by the paper's rule is reported
(or that it names none). Every clip's video and range are checked before the model loads: a bad clip of a clips file
is skipped and counted, naming it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from llavaction.benchmark.answers import parse_choice, rule_choice
from llavaction.data.batch import Batch
from llavaction.data.stages import ArrayFrames, Collate, EncodePrompt
from llavaction.data.video import VideoError, find_raw, video_duration, video_file
from llavaction.ek100.annotations import parse_timestamp
from llavaction.evaluation.checkpoint_format import Precision, precision_context
from llavaction.evaluation.checkpoints import LoadedCheckpoint, QuestionSettings
from llavaction.evaluation.clip_output import describe, save_strip, top_classes
from llavaction.evaluation.engines import EngineOptions
from llavaction.evaluation.options import MAX_NEW_TOKENS, EvaluationOptions, QuestionOptions
from llavaction.evaluation.serving import ServedAnswers
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.formats import ClipTiming
from llavaction.utils.checks import check_count
from llavaction.utils.files import check_apart, safe_name
from llavaction.utils.jsonl import read_jsonl

LETTERS = string.ascii_uppercase  # option letters, A first


@dataclass(frozen=True)
class Clip:
    """A time range of a video and what to ask about it."""

    video: Path
    start_sec: float
    end_sec: float
    options: tuple[str, ...] = ()
    question: str | None = None
    name: str = "clip"

    @property
    def task(self) -> str:
        return "mqa" if self.options else ("qa" if self.question else "narration")


def seconds(value) -> float:
    """Seconds from a number or 'HH:MM:SS.ff'."""
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        return parse_timestamp(text)


def raw_video(videos: Path, participant: str, video_id: str) -> Path:
    """A video found as extract_frames finds it (`P01/P01_01.MP4` or `.mp4`, or under `P01/videos/`); where none is,
    the usual path, which the clip check then reports missing."""
    try:
        return find_raw(videos, participant, video_id)
    except VideoError:
        return videos / participant / f"{video_id}.MP4"


def read_clips(path: Path, videos: Path | None) -> list[Clip]:
    """Clips from JSONL or from a CSV in the EPIC columns (video_id, participant_id, start_timestamp,
    stop_timestamp). A JSONL line is {video, start, end, options?, question?} (a relative `video` is under --videos
    when given, else under the current folder) or a question of build_mqa (its clip and options; its video found
    under --videos as extract_frames finds it)."""
    if path.suffix != ".jsonl" and videos is None:
        raise ValueError(f"{path}: a CSV of EPIC segments needs --videos (the folder of P01/P01_01.MP4 ...)")
    if path.suffix == ".jsonl":
        rows = enumerate(read_jsonl(path), start=1)
        return [jsonl_clip(row, f"{path}:{number}", f"{path.stem}:{number}", videos) for number, row in rows]
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    clips = []
    for line, row in enumerate(rows, start=2):
        try:
            name = row.get("narration_id") or f"{path.name}:{line}"
            video = raw_video(videos, row["participant_id"], row["video_id"])
            clips.append(
                Clip(video, parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"]), name=name)
            )
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}:{line}: {err}") from None
    return clips


def jsonl_clip(row: dict, where: str, name: str, videos: Path | None) -> Clip:
    """One clip of a clips file's line (errors name the file and line)."""
    question = "video" not in row and "video_id" in row  # a question file of build_mqa
    needed = (
        ("video_id", "participant_id", "clip_start_sec", "clip_stop_sec") if question else ("video", "start", "end")
    )
    missing = [k for k in needed if k not in row]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if question:
        if videos is None:
            raise ValueError(f"{where}: a question of build_mqa names its video by id: give --videos")
        video = raw_video(videos, row["participant_id"], row["video_id"])
        start, end = row["clip_start_sec"], row["clip_stop_sec"]
    else:
        video, start, end = Path(row["video"]), row["start"], row["end"]
        video = videos / video if videos is not None and not video.is_absolute() else video
    options, text = tuple(row.get("options") or ()), row.get("question")
    return Clip(video, seconds(start), seconds(end), options, text, row.get("narration_id", name))


def clip_problem(clip: Clip, durations: dict[Path, float]) -> str | None:
    """What makes a clip unanswerable (its video missing or unreadable, a negative start, an empty range, a range
    past the video's end), or None; durations caches each video's length."""
    if not clip.video.is_file():
        return f"{clip.video}: no such video file"
    if not (math.isfinite(clip.start_sec) and math.isfinite(clip.end_sec)):
        return f"the range {clip.start_sec}-{clip.end_sec} s is not a pair of finite numbers"
    if clip.start_sec < 0:
        return f"the start {clip.start_sec:.2f} s is negative"
    if clip.end_sec <= clip.start_sec:
        return f"the range {clip.start_sec:.2f}-{clip.end_sec:.2f} s is empty (its end is not after its start)"
    if clip.video not in durations:
        try:
            durations[clip.video] = video_duration(clip.video)
        except VideoError as err:
            return str(err)
    duration = durations[clip.video]
    if clip.start_sec >= duration or clip.end_sec > duration + 0.05:
        return (
            f"the range {clip.start_sec:.2f}-{clip.end_sec:.2f} s lies beyond the end of {clip.video} "
            f"({duration:.2f} s)"
        )
    return None


@dataclass(frozen=True, kw_only=True)
class ClipQuestions(QuestionOptions, EngineOptions):
    """Questions about clips of video files; unset prompt settings, frames and precision follow the checkpoint.

    Args:
        checkpoint: a Lightning .ckpt, an original checkpoint directory or a model-hub id.
        tokenizer: tokenizer directory (default: the checkpoint's).
        video: one video file (with start and end).
        clips: a clips file: JSONL of {video, start, end, options?, question?}, a question file of build_mqa or an
            EPIC CSV (both with videos).
        start: the clip's start, seconds or HH:MM:SS.ff.
        end: the clip's end, seconds or HH:MM:SS.ff.
        videos: the folder of P01/P01_01.MP4 ... (an EPIC CSV, a question file of build_mqa; relative videos of JSONL).
        options: the actions to choose from (a multiple-choice question); none: direct narration.
        question: a free question instead of 'what action are you performing?'.
        max_new_tokens: longest answer (generation stops earlier at the end-of-turn token).
        batch_size: clips answered together.
        device: 'auto', 'cpu', 'cuda', 'cuda:1' ...
        precision: Lightning's precision name (default: the checkpoint's).
        json: print one JSON object per clip.
        strip: save the frames the model saw with its answer (a PNG; for several clips a folder of <clip id>.png).
        annotations: the EPIC-KITCHENS-100 annotation folder, whose class lists name the action heads' top classes
            (class ids without it).
        engine: 'hf' (this codebase's model) or 'vllm' (vLLM serving its export; no action heads read); the vLLM
            settings follow (README, "Engines").
    """

    checkpoint: str
    tokenizer: str | None = None
    video: Path | None = None
    clips: Path | None = None
    start: str | None = None
    end: str | None = None
    videos: Path | None = None
    options: list[str] | None = None
    question: str | None = None
    max_new_tokens: int = MAX_NEW_TOKENS
    batch_size: int = 4
    device: str = "auto"
    precision: Precision | None = None
    json: bool = False
    strip: Path | None = None
    annotations: Path | None = None

    def __post_init__(self):
        super().__post_init__()
        EngineOptions.__post_init__(self)
        check_count("max_new_tokens", self.max_new_tokens, minimum=1)
        check_count("batch_size", self.batch_size, minimum=1)
        if (self.video is None) == (self.clips is None):
            raise ValueError("give one of --video (with --start and --end) and --clips")
        if self.video is not None and (self.start is None or self.end is None):
            raise ValueError("--video needs --start and --end")
        if self.clips is not None and (self.options or self.question):
            raise ValueError("with --clips, options and questions go in the clips file")
        if self.options and self.question:
            raise ValueError("--options and --question exclude each other")

    def clip_list(self) -> list[Clip]:
        if self.clips is not None:
            return read_clips(self.clips, self.videos)
        video = Path(self.video)
        return [
            Clip(video, seconds(self.start), seconds(self.end), tuple(self.options or ()), self.question, video.stem)
        ]


class Predictor:
    """A checkpoint ready to answer about clips, asked as `settings` say, at a Lightning precision on one device."""

    def __init__(
        self,
        loaded: LoadedCheckpoint,
        settings: QuestionSettings,
        device: str,
        precision: str,
        max_new_tokens: int,
        names: tuple[dict[int, str], dict[int, str]] | None = None,
    ):
        self.module = loaded.module(EvaluationOptions(("generate",), max_new_tokens))
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.settings, self.precision, self.names = settings, precision, names
        self.module.eval()
        self.encoder = PromptEncoder(self.module.tokenizer, chat=self.module.video_format)
        self.collate = Collate(self.module.tokenizer.pad_token_id)
        self.served = None

    def serve(self, served) -> None:
        """Answer by a serving engine (llavaction.evaluation.serving.ServedAnswers): its tokenizer, its prompts."""
        self.served = served
        self.encoder = PromptEncoder(served.tokenizer, chat=served.format)
        self.collate = Collate(served.tokenizer.pad_token_id)

    @property
    def heads(self) -> bool:
        return self.module.config.action_types is not None

    def frames(self, clip: Clip) -> ArrayFrames:
        """[T, S, S, 3] uint8 at the model's input size, chosen and resized as extract_frames does (the clip checked
        by clip_problem first), with when they were taken."""
        video = video_file(clip.video, self.module.family.frame_size(self.module.config))
        decoded = video.clip(clip.start_sec, clip.end_sec, self.settings.num_frames)
        timing = ClipTiming.of_frames(decoded.frame_ids, decoded.fps, clip.start_sec, clip.end_sec)
        return ArrayFrames(decoded.frames, timing)

    def batch(self, clips: list[Clip], frames: list[ArrayFrames]) -> Batch:
        """The clips' questions through the data pipeline's own stages: prompt encoding and collation."""
        samples = []
        for clip, pictures in zip(clips, frames):
            meta = {
                "narration_id": clip.name,
                "options": list(clip.options),
                "answer_index": None,
                "qa_question": clip.question,
                "clip_start_sec": clip.start_sec,
                "clip_stop_sec": clip.end_sec,
            }
            encode = EncodePrompt(
                self.encoder, clip.task, self.settings.num_frames, self.settings.prompt, with_answer=False
            )
            samples.append(encode({"__key__": clip.name, "meta": meta, "frames": pictures}))
        return self.collate(samples).to(self.device)

    @torch.no_grad()
    def answer(self, clips: list[Clip], frames: list[ArrayFrames]) -> list[dict]:
        module, batch = self.module, self.batch(clips, frames)
        if self.served is not None:
            generations, heads = [text for text, _ in self.served(batch)], None
        else:
            with precision_context(module, self.precision, self.device):
                answers = module.answerer(batch, ("generate",), "last" if self.heads else None)
            generations, heads = answers.generations, answers.action_logits
        results = []
        for i, (clip, text) in enumerate(zip(clips, generations)):
            result = {
                "name": clip.name,
                "video": str(clip.video),
                "start": clip.start_sec,
                "end": clip.end_sec,
                "task": clip.task,
                "answer": text,
            }
            if clip.options:  # the option the answer names by the paper's rule (its text), or None: it names none
                chosen, letter = rule_choice(text, list(clip.options)), parse_choice(text, list(clip.options))
                result["chosen_option"] = None if chosen is None else clip.options[chosen]
                result["chosen_letter"] = None if chosen is None else LETTERS[chosen]
                result["answer_letter"] = None if letter is None else LETTERS[letter]  # the letter it names, if any
            if heads is not None:
                verb, noun, _ = heads[-1]
                result |= top_classes(verb[i].float(), noun[i].float(), names=self.names)
            results.append(result)
        return results


def answer_clips(run: ClipQuestions) -> int:
    """Answer every usable clip, printing each answer (and writing strips); returns the exit status. Every clip is
    checked before the model loads: with one clip a problem is an error, in a clips file a counted skip."""
    inputs = {"--checkpoint": run.checkpoint, "--tokenizer": run.tokenizer, "--video": run.video, "--clips": run.clips}
    inputs |= {"--annotations": run.annotations}
    check_apart(
        {"--strip": run.strip}, inputs | {"--videos": run.videos, "--pseudo_predictions": run.pseudo_predictions}
    )
    clips = run.clip_list()
    durations: dict[Path, float] = {}
    usable, skipped = [], 0
    for clip in clips:
        problem = clip_problem(clip, durations)
        if problem is None:
            usable.append(clip)
        elif run.clips is None:
            raise ValueError(f"{clip.name}: {problem}")
        else:
            skipped += 1
            print(f"skipped {clip.name}: {problem}", file=sys.stderr)
    if not usable:
        raise ValueError(f"{run.clips}: every one of its {len(clips)} clips was skipped (reasons above)")
    from llavaction.evaluation.report import class_names

    labels = class_names(run.annotations, {}) if run.annotations is not None else None  # the heads' classes
    loaded = LoadedCheckpoint.open(run.checkpoint, run.tokenizer)
    settings = loaded.question_settings(run)
    predictor = Predictor(loaded, settings, run.device, run.precision or loaded.precision, run.max_new_tokens, labels)
    with contextlib.ExitStack() as stack:
        if run.engine == "vllm":
            predictor.serve(ServedAnswers(loaded, predictor.module, run, run.max_new_tokens, stack))
        return answer_each(run, clips, usable, skipped, predictor)


def answer_each(run: ClipQuestions, clips: list[Clip], usable: list[Clip], skipped: int, predictor) -> int:
    """Answer the usable clips batch by batch, printing each answer (and writing strips)."""
    names: dict[str, int] = {}
    for start in range(0, len(usable), run.batch_size):
        group = usable[start : start + run.batch_size]
        seen = [predictor.frames(clip) for clip in group]
        for clip, pictures, result in zip(group, seen, predictor.answer(group, seen)):
            print(json.dumps(result) if run.json else describe(result), flush=True)
            if run.strip:
                name = safe_name(clip.name, keep="-_.") or "clip"
                names[name] = names.get(name, 0) + 1
                name = name if names[name] == 1 else f"{name}-{names[name]}"
                path = run.strip if len(clips) == 1 else run.strip / f"{name}.png"
                save_strip(pictures.array, f"{clip.name}: {result['answer']}", path)
    if run.clips is not None:
        print(f"{len(usable)} clips answered, {skipped} skipped", file=sys.stderr)
    return 0
