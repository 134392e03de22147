"""Answers about video clips from a checkpoint: what action happens between two times of a video.

    python -m llavaction.predict --checkpoint MLAdaptiveIntelligence/LLaVAction-7B --video P01_11.MP4 \
        --start 00:00:01.56 --end 2.45 --options "open drawer" "close drawer" "take knife" "put knife" "wash cup"
    python -m llavaction.predict --checkpoint runs/demo/checkpoints/last.ckpt --clips clips.jsonl --json
    python -m llavaction.predict --checkpoint DIR --video V.mp4 --start 3 --end 6 --strip seen.png

The frames are chosen, decoded and resized exactly as data_prep.extract_frames does (llavaction.video), the prompt is
the reference's (llavaction.prompts): multiple choice with --options, direct narration without, or --question; the
time instruction, the frame count and the precision follow the checkpoint unless given. The answer is greedy; with
--options, the option it names by the paper's rule is reported (or that it names none). Every clip's video and range
are checked before the model loads: a bad clip of --clips is skipped and counted, naming it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llavaction.cli_errors import ArgumentParser, add_debug_flag, count, run_cli
from llavaction.epic import parse_timestamp
from llavaction.evaluation.checkpoints import PRECISIONS, LoadedCheckpoint, precision_context
from llavaction.figures import pyplot, save_png
from llavaction.files import safe_name
from llavaction.jsonl import read_jsonl
from llavaction.metrics import rule_choice
from llavaction.prompts import PromptEncoder, PromptOptions, pad_right, user_text
from llavaction.video import VideoError, sample_times, video_duration, video_file

DEFAULT_FRAMES = 64  # LLaVA-Video and LLaVAction were trained at 64 frames


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


def read_clips(path: Path, videos: Path | None) -> list[Clip]:
    """Clips from JSONL ({video, start, end, options?, question?}) or a CSV in the EPIC columns (video_id,
    participant_id, start_timestamp, stop_timestamp; videos found under --videos as in the raw layout)."""
    if path.suffix == ".jsonl":
        clips = []
        for number, row in enumerate(read_jsonl(path), start=1):
            missing = [k for k in ("video", "start", "end") if k not in row]
            if missing:
                raise ValueError(f"{path}:{number}: missing {', '.join(missing)}")
            clips.append(
                Clip(
                    Path(row["video"]),
                    seconds(row["start"]),
                    seconds(row["end"]),
                    tuple(row.get("options") or ()),
                    row.get("question"),
                    row.get("narration_id", f"{path.stem}:{number}"),
                )
            )
        return clips
    if videos is None:
        raise ValueError(f"{path}: a CSV of EPIC segments needs --videos (the folder of P01/P01_01.MP4 ...)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    clips = []
    for line, row in enumerate(rows, start=2):
        try:
            name = row.get("narration_id") or f"{path.name}:{line}"
            video = videos / row["participant_id"] / f"{row['video_id']}.MP4"
            clips.append(
                Clip(video, parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"]), name=name)
            )
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}:{line}: {err}") from None
    return clips


def clip_problem(clip: Clip, durations: dict[Path, float]) -> str | None:
    """What makes a clip unanswerable (its video missing or unreadable, a negative start, an empty range, a range
    past the video's end), or None; durations caches each video's length."""
    if not clip.video.is_file():
        return f"{clip.video}: no such video file"
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


class Predictor:
    """A checkpoint ready to answer about clips, at a Lightning precision on one device."""

    def __init__(self, loaded: LoadedCheckpoint, device: str, precision: str, max_new_tokens: int):
        from llavaction.args import EvaluationOptions

        self.module = loaded.module(EvaluationOptions(("generate",), max_new_tokens))
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.precision = precision
        self.module.eval()
        self.encoder = PromptEncoder(self.module.tokenizer)

    @property
    def heads(self) -> bool:
        return self.module.config.action_types is not None

    def frames(self, clip: Clip, num_frames: int) -> np.ndarray:
        """[T, S, S, 3] uint8 at the model's input size, chosen and resized as extract_frames does (the clip checked
        by clip_problem first)."""
        video = video_file(clip.video, self.module.config.image_size)
        return video.clip(sample_times(clip.start_sec, clip.end_sec, num_frames)).frames

    @torch.no_grad()
    def answer(self, clips: list[Clip], frames: list[np.ndarray], options: PromptOptions) -> list[dict]:
        module = self.module
        visual = module.config.visual_tokens(len(frames[0]))
        rows, metas = [], []
        for clip in clips:
            meta = {
                "narration_id": clip.name,
                "options": list(clip.options),
                "answer_index": None,
                "qa_question": clip.question,
                "clip_start_sec": clip.start_sec,
                "clip_stop_sec": clip.end_sec,
            }
            encoded = self.encoder.encode(user_text(meta, clip.task, len(frames[0]), options), None, visual, clip.name)
            rows.append((encoded.input_ids, encoded.labels))
            metas.append(meta)
        batch = pad_right(rows, module.tokenizer.pad_token_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        batch |= {
            "frames": torch.from_numpy(np.stack(frames)).to(self.device),
            "meta": metas,
            "num_options": torch.tensor([len(m["options"]) for m in metas], device=self.device),
        }
        with precision_context(module, self.precision, self.device):
            answers = module.answerer(batch, ("generate",), "last" if self.heads else None)
        results = []
        for i, (clip, text) in enumerate(zip(clips, answers.generations)):
            result = {
                "name": clip.name,
                "video": str(clip.video),
                "start": clip.start_sec,
                "end": clip.end_sec,
                "task": clip.task,
                "answer": text,
            }
            if clip.options:  # the option the answer names by the paper's rule, or None: it names none
                chosen = rule_choice(text, list(clip.options))
                result["chosen_option"] = None if chosen is None else clip.options[chosen]
            if answers.action_logits is not None:
                verb, noun, _ = answers.action_logits[-1]
                result |= top_classes(verb[i].float(), noun[i].float())
            results.append(result)
        return results


def top_classes(verb_logits: torch.Tensor, noun_logits: torch.Tensor, k: int = 5) -> dict:
    """The heads' top-k verbs, nouns and actions (EPIC's verb x noun ranking) with their probabilities."""
    from llavaction.metrics import action_topk

    verb_p, noun_p = verb_logits.softmax(-1), noun_logits.softmax(-1)
    verbs, nouns = verb_p.topk(k), noun_p.topk(k)
    action_v, action_n = action_topk(verb_logits[None], noun_logits[None], k)
    return {
        "top_verbs": [[int(c), round(float(p), 4)] for p, c in zip(*verbs)],
        "top_nouns": [[int(c), round(float(p), 4)] for p, c in zip(*nouns)],
        "top_actions": [
            [f"{int(v)}:{int(n)}", round(float(verb_p[v] * noun_p[n]), 4)] for v, n in zip(action_v[0], action_n[0])
        ],
    }


def save_strip(frames: np.ndarray, caption: str, path: Path) -> None:
    """The frames the model saw in a row (upscaled to at least 128 px), the answer under them."""
    plt = pyplot()
    columns = min(len(frames), 8)
    rows = -(-len(frames) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows + 0.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, frame in zip(axes.flat, frames):
        axis.imshow(frame, interpolation="nearest")
    figure.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(figure, path, dpi=100)


def describe(result: dict) -> str:
    lines = [f"{result['name']} ({result['start']:.2f}-{result['end']:.2f} s): {result['answer']}"]
    if "chosen_option" in result:
        chosen = result["chosen_option"]
        lines.append(f"  chosen option: {chosen}" if chosen is not None else "  the answer matches none of the options")
    for key in ("top_verbs", "top_nouns", "top_actions"):
        if key in result:
            lines.append(f"  {key.replace('_', ' ')}: " + ", ".join(f"{c} {p:.2f}" for c, p in result[key]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.clips:
        clips = read_clips(args.clips, args.videos)
    else:
        clips = [
            Clip(
                args.video,
                seconds(args.start),
                seconds(args.end),
                tuple(args.options or ()),
                args.question,
                args.video.stem,
            )
        ]
    durations: dict[Path, float] = {}
    usable, skipped = [], 0
    for clip in clips:  # every clip checked before the model loads
        problem = clip_problem(clip, durations)
        if problem is None:
            usable.append(clip)
        elif not args.clips:
            raise ValueError(f"{clip.name}: {problem}")
        else:
            skipped += 1
            print(f"skipped {clip.name}: {problem}", file=sys.stderr)
    if not usable:
        raise ValueError(f"{args.clips}: every one of its {len(clips)} clips was skipped (reasons above)")
    loaded = LoadedCheckpoint.open(args.checkpoint, args.tokenizer)
    num_frames = args.num_frames or loaded.settings.num_frames or DEFAULT_FRAMES
    trained_time = loaded.settings.time_instruction
    time_instruction = args.time_instruction if args.time_instruction is not None else bool(trained_time)
    options = PromptOptions(time_instruction=time_instruction)
    predictor = Predictor(loaded, args.device, args.precision or loaded.precision, args.max_new_tokens)
    names = {}
    for start in range(0, len(usable), args.batch_size):
        group = usable[start : start + args.batch_size]
        seen = [predictor.frames(clip, num_frames) for clip in group]
        for clip, pictures, result in zip(group, seen, predictor.answer(group, seen, options)):
            print(json.dumps(result) if args.json else describe(result), flush=True)
            if args.strip:
                name = safe_name(clip.name, keep="-_.") or "clip"
                names[name] = names.get(name, 0) + 1
                name = name if names[name] == 1 else f"{name}-{names[name]}"
                path = args.strip if len(clips) == 1 else args.strip / f"{name}.png"
                save_strip(pictures, f"{clip.name}: {result['answer']}", path)
    if args.clips:
        print(f"{len(usable)} clips answered, {skipped} skipped", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="Lightning .ckpt, checkpoint directory or hub id")
    parser.add_argument("--tokenizer", help="default: the checkpoint's")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=Path, help="one video file (with --start and --end)")
    source.add_argument("--clips", type=Path, help="clips: JSONL {video, start, end, options?, question?} or EPIC CSV")
    parser.add_argument("--start", help="seconds or HH:MM:SS.ff")
    parser.add_argument("--end", help="seconds or HH:MM:SS.ff")
    parser.add_argument("--videos", type=Path, help="with an EPIC CSV: the folder of P01/P01_01.MP4 ...")
    parser.add_argument("--options", nargs="+", help="the actions to choose from (a multiple-choice question)")
    parser.add_argument("--question", help="a free question instead of 'what action are you performing?'")
    parser.add_argument("--num-frames", type=count(1), help="default: the checkpoint's training frames, else 64")
    parser.add_argument(
        "--time-instruction",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="state the clip's duration and frame count (default: as the checkpoint was trained)",
    )
    parser.add_argument(
        "--max-new-tokens", type=count(1), default=4096, help="longest answer (the reference's 4096; stops at EOS)"
    )
    parser.add_argument("--batch-size", type=count(1), default=4)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--precision", choices=PRECISIONS, help="Lightning's precision name (default: the checkpoint's)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per clip")
    parser.add_argument(
        "--strip",
        type=Path,
        help="save the frames the model saw with its answer (PNG; for several clips a folder of <clip id>.png)",
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.video and (args.start is None or args.end is None):
        parser.error("--video needs --start and --end")
    if args.clips and (args.options or args.question):
        parser.error("with --clips, options and questions go in the clips file")
    if args.options and args.question:
        parser.error("--options and --question exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
