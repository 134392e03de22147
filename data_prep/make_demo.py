"""A synthetic "kitchen" in exactly the EPIC-KITCHENS-100 format: H.264 MP4s in the raw layout plus EPIC CSVs.

Each action is an object (the noun: a distinct shape and colour) doing a motion (the verb: move left/right, lift, lower,
grow, shrink, appear, disappear) on a textured counter, so actions can be told apart from the pixels. Several actions
per video with realistic gaps; the validation split is made of unseen videos, one participant of which is unseen.

    python -m data_prep.make_demo --out demo_data --seed 0
"""

from __future__ import annotations

import csv
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llavaction.ek100.annotations import SEGMENT_COLUMNS, format_timestamp, noun_text
from llavaction.prompts.tokenizer import build_tokenizer
from llavaction.utils.checks import check_count
from llavaction.utils.options import main_of

VERBS = ("move-left", "move-right", "lift", "lower", "grow", "shrink", "appear", "disappear")
# Narrations say the action in the class words (as most EPIC narrations do), sometimes with a little variation.
NARRATION_TEMPLATES = {
    "move-left": ("move-left {}", "move {} left"),
    "move-right": ("move-right {}", "move {} right"),
    "lift": ("lift {}", "lift the {}"),
    "lower": ("lower {}", "lower the {}"),
    "grow": ("grow {}", "grow the {}"),
    "shrink": ("shrink {}", "shrink the {}"),
    "appear": ("appear {}", "make {} appear"),
    "disappear": ("disappear {}", "make {} disappear"),
}
# noun key (EPIC style, colon parts reversed in text) -> (shape, RGB colour)
NOUNS = {
    "plate": ("disc", (240, 240, 240)),
    "tomato": ("disc", (220, 30, 30)),
    "cup": ("square", (40, 80, 230)),
    "board:chopping": ("wide", (150, 90, 40)),
    "knife": ("bar", (150, 150, 160)),
    "pan:frying": ("ring", (20, 20, 20)),
    "carrot": ("triangle", (250, 140, 0)),
    "sponge": ("square", (250, 230, 40)),
}
TRAIN_PARTICIPANTS = ("D01", "D02", "D03", "D04")
UNSEEN_PARTICIPANT = "D05"


@dataclass(frozen=True)
class DemoSegment:
    video_id: str
    index: int
    start_sec: float
    stop_sec: float
    verb: int
    noun: int
    narration: str


def object_mask(shape: str, size: int, cx: float, cy: float, scale: float) -> np.ndarray:
    """A boolean mask of one object centred at (cx, cy), in pixels of a size x size frame."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    r = 0.16 * size * scale
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "wide":
        return (np.abs(dx) <= r * 1.4) & (np.abs(dy) <= r * 0.55)
    if shape == "bar":
        return (np.abs(dx) <= r * 1.5) & (np.abs(dy) <= r * 0.25)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    raise ValueError(shape)


def object_state(verb: str, progress: float) -> tuple[float, float, float, float]:
    """(x, y, scale, opacity) in frame fractions for a motion at progress in [0, 1]."""
    p = progress
    x, y, scale, alpha = 0.5, 0.5, 1.0, 1.0
    if verb == "move-left":
        x = 0.75 - 0.5 * p
    elif verb == "move-right":
        x = 0.25 + 0.5 * p
    elif verb == "lift":
        y = 0.75 - 0.5 * p
    elif verb == "lower":
        y = 0.25 + 0.5 * p
    elif verb == "grow":
        scale = 0.5 + 0.9 * p
    elif verb == "shrink":
        scale = 1.4 - 0.9 * p
    elif verb == "appear":
        alpha = min(1.0, 1.5 * p)
    elif verb == "disappear":
        alpha = max(0.0, 1.0 - 1.5 * p)
    return x, y, scale, alpha


def counter_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth, muted random texture: the kitchen counter of one video."""
    coarse = rng.uniform(90, 170, size=(8, 8, 3))
    fine = np.kron(coarse, np.ones((size // 8, size // 8, 1)))
    noise = rng.normal(0, 6, size=(size, size, 3))
    return np.clip(fine + noise, 0, 255).astype(np.float32)


def render_frame(background: np.ndarray, segments: list[DemoSegment], t: float) -> np.ndarray:
    frame = background.copy()
    size = frame.shape[0]
    for seg in segments:
        if seg.start_sec <= t <= seg.stop_sec:
            progress = (t - seg.start_sec) / max(seg.stop_sec - seg.start_sec, 1e-6)
            x, y, scale, alpha = object_state(VERBS[seg.verb], progress)
            shape, colour = NOUNS[list(NOUNS)[seg.noun]]
            mask = object_mask(shape, size, x * size, y * size, scale)
            frame[mask] = (1 - alpha) * frame[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return frame.astype(np.uint8)


def plan_video(video_id: str, duration: float, rng: random.Random, action_weights: list[float]) -> list[DemoSegment]:
    """Back-to-back actions of 1.5-4 s with 0.3-2.5 s gaps, so many segments have prior-action context."""
    segments, t, actions = [], rng.uniform(0.2, 1.0), [(v, n) for v in range(len(VERBS)) for n in range(len(NOUNS))]
    while True:
        length = rng.uniform(1.5, 4.0)
        if t + length > duration - 0.2:
            return segments
        verb, noun = rng.choices(actions, weights=action_weights)[0]
        noun_words = noun_text(list(NOUNS)[noun])
        narration = rng.choice(NARRATION_TEMPLATES[VERBS[verb]]).format(noun_words)
        segments.append(DemoSegment(video_id, len(segments), round(t, 2), round(t + length, 2), verb, noun, narration))
        t += length + rng.uniform(0.3, 2.5)


def write_video(path: Path, segments: list[DemoSegment], duration: float, fps: int, size: int, seed: int) -> None:
    import av

    background = counter_texture(size, np.random.default_rng(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "g": str(2 * fps), "threads": "1"}
        for i in range(int(duration * fps)):
            image = av.VideoFrame.from_ndarray(render_frame(background, segments, i / fps), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def segment_row(seg: DemoSegment, participant: str, fps: float) -> list:
    noun_key = list(NOUNS)[seg.noun]
    values = {
        "narration_id": f"{seg.video_id}_{seg.index}",
        "participant_id": participant,
        "video_id": seg.video_id,
        "narration_timestamp": format_timestamp(seg.start_sec),
        "start_timestamp": format_timestamp(seg.start_sec),
        "stop_timestamp": format_timestamp(seg.stop_sec),
        "start_frame": int(seg.start_sec * fps) + 1,
        "stop_frame": int(seg.stop_sec * fps) + 1,
        "narration": seg.narration,
        "verb": VERBS[seg.verb],
        "verb_class": seg.verb,
        "noun": noun_key,
        "noun_class": seg.noun,
        "all_nouns": str([noun_key]),
        "all_noun_classes": str([seg.noun]),
    }
    return [values[c] for c in SEGMENT_COLUMNS]


def tail_classes(counts: list[int], share: float = 0.2) -> list[int]:
    """The rarest classes that together hold at most `share` of the instances (EPIC's notion of tail)."""
    order = sorted(range(len(counts)), key=lambda c: (counts[c], c))
    tail, total, acc = [], sum(counts), 0
    for c in order:
        acc += counts[c]
        if acc > share * total:
            break
        tail.append(c)
    return sorted(tail)


MOTION_WORDS = {
    "move-left": "slides to the left",
    "move-right": "slides to the right",
    "lift": "rises up the frame",
    "lower": "sinks down the frame",
    "grow": "grows larger",
    "shrink": "becomes smaller",
    "appear": "fades into view",
    "disappear": "fades away",
}


def write_descriptions(path: Path, rows: list[list]) -> None:
    """Stand-ins for descriptions distilled from a stronger model: one question-answer pair per training segment."""
    column = {name: i for i, name in enumerate(SEGMENT_COLUMNS)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            shape, _ = NOUNS[row[column["noun"]]]
            noun = noun_text(row[column["noun"]])
            answer = f"The {noun}, a {shape} on the counter, {MOTION_WORDS[row[column['verb']]]}."
            f.write(
                json.dumps(
                    {
                        "narration_id": row[column["narration_id"]],
                        "question": "Describe what happens in this video.",
                        "answer": answer,
                    }
                )
                + "\n"
            )


def make_demo(out: Path, seed: int, train_videos: int, val_videos: int, duration: float, fps: int, size: int) -> dict:
    rng = random.Random(seed)
    # A mild long tail over the 64 actions so head/tail breakdowns mean something.
    action_weights = [1.0 / (1 + k) ** 0.5 for k in range(len(VERBS) * len(NOUNS))]
    rng.shuffle(action_weights)
    videos = []  # (split, participant, video_id)
    for i in range(train_videos):
        participant = TRAIN_PARTICIPANTS[i % len(TRAIN_PARTICIPANTS)]
        videos.append(("train", participant, f"{participant}_{101 + i // len(TRAIN_PARTICIPANTS)}"))
    for i in range(val_videos):
        participant = UNSEEN_PARTICIPANT if i % 4 == 3 else TRAIN_PARTICIPANTS[i % len(TRAIN_PARTICIPANTS)]
        videos.append(("validation", participant, f"{participant}_{201 + i}"))
    rows = {"train": [], "validation": []}
    verb_counts, noun_counts = [0] * len(VERBS), [0] * len(NOUNS)
    annotations = out / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    for k, (split, participant, video_id) in enumerate(tqdm(videos, desc="render", unit="video")):
        segments = plan_video(video_id, duration, random.Random(f"{seed}:{video_id}"), action_weights)
        write_video(out / "videos" / participant / f"{video_id}.MP4", segments, duration, fps, size, seed * 1000 + k)
        rows[split] += [segment_row(s, participant, fps) for s in segments]
        if split == "train":
            for s in segments:
                verb_counts[s.verb] += 1
                noun_counts[s.noun] += 1
    for split, filename in (("train", "EPIC_100_train.csv"), ("validation", "EPIC_100_validation.csv")):
        write_csv(annotations / filename, list(SEGMENT_COLUMNS), rows[split])
    write_csv(
        annotations / "EPIC_100_verb_classes.csv",
        ["id", "key", "instances", "category"],
        [[i, v, str([v]), "motion"] for i, v in enumerate(VERBS)],
    )
    write_csv(
        annotations / "EPIC_100_noun_classes.csv",
        ["id", "key", "instances", "category"],
        [[i, n, str([n]), "object"] for i, n in enumerate(NOUNS)],
    )
    write_csv(annotations / "EPIC_100_tail_verbs.csv", ["verb"], [[c] for c in tail_classes(verb_counts)])
    write_csv(annotations / "EPIC_100_tail_nouns.csv", ["noun"], [[c] for c in tail_classes(noun_counts)])
    write_csv(
        annotations / "EPIC_100_unseen_participant_ids_validation.csv", ["participant_id"], [[UNSEEN_PARTICIPANT]]
    )
    write_csv(
        annotations / "EPIC_100_video_info.csv",
        ["video_id", "duration", "fps", "resolution"],
        [[v, duration, float(fps), f"{size}x{size}"] for _, _, v in videos],
    )
    write_descriptions(out / "descriptions" / "train.jsonl", rows["train"])
    class_texts = list(VERBS) + [noun_text(n) for n in NOUNS]
    narrations = [row[SEGMENT_COLUMNS.index("narration")] for split_rows in rows.values() for row in split_rows]
    tokenizer = build_tokenizer(sorted(set(class_texts + narrations)))
    tokenizer.save_pretrained(out / "tokenizer")  # every tiny preset's: each appends its family's special tokens

    return {"train_segments": len(rows["train"]), "validation_segments": len(rows["validation"]), "videos": len(videos)}


@dataclass(frozen=True)
class DemoOptions:
    """A synthetic kitchen in exactly the EK-100 format (videos, CSVs, class files) and the tiny models' tokenizer.

    Args:
        out: the dataset's folder.
        seed: seed of everything drawn.
        train_videos: videos of the training split.
        val_videos: videos of the validation split (their participants are unseen in training).
        duration: seconds per video.
        fps: frames per second of the videos.
        size: frame side in pixels (a multiple of 16).
    """

    out: Path
    seed: int = 0
    train_videos: int = 96
    val_videos: int = 8
    duration: float = 60.0
    fps: int = 24
    size: int = 64

    def __post_init__(self):
        for name in ("train_videos", "val_videos", "fps", "size"):
            check_count(name, getattr(self, name), minimum=1)
        if self.size % 16:
            raise ValueError(f"--size must be a multiple of 16, got {self.size}")
        if not self.duration > 0:
            raise ValueError(f"--duration must be positive, got {self.duration}")


def run(args: DemoOptions) -> int:
    summary = make_demo(args.out, args.seed, args.train_videos, args.val_videos, args.duration, args.fps, args.size)
    print(
        f"{summary['videos']} videos, {summary['train_segments']} train and {summary['validation_segments']} "
        f"validation segments -> {args.out}",
        file=sys.stderr,
    )
    return 0


main = main_of(DemoOptions, run, "python -m data_prep.make_demo", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
