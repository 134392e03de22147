"""EPIC-KITCHENS-100 knowledge in one place: CSV schema, class texts, action ids, tail/unseen splits, prior actions.

No torch-model imports: data_prep and evaluation both use this module.
"""

from __future__ import annotations

import ast
import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SEGMENT_COLUMNS = (
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
)
OPTIONAL_VALUES = {"narration_timestamp"}  # empty on some official rows
SPLIT_FILES = {"train": "EPIC_100_train.csv", "validation": "EPIC_100_validation.csv"}
VIDEO_INFO_FILE = "EPIC_100_video_info.csv"
VERB_CLASSES_FILE = "EPIC_100_verb_classes.csv"
# The reference reads noun texts from v2 when present; its first 300 keys equal v1's, its 5 extra classes are unused.
NOUN_CLASSES_FILES = ("EPIC_100_noun_classes_v2.csv", "EPIC_100_noun_classes.csv")
NUM_VERBS, NUM_NOUNS = 97, 300  # EK-100's verb and noun classes (the heads' and the challenge's widths)
PRIOR_ACTION_MAX_GAP_SEC = 3.0
NUM_PRIOR_ACTIONS = 2
_TIMESTAMP = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


class AnnotationError(ValueError):
    """A bad annotation row; the message names the file, the line and the reason."""

    def __init__(self, path: Path | str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass(frozen=True)
class Segment:
    """One annotated action segment of EPIC_100_{split}.csv."""

    narration_id: str
    participant_id: str
    video_id: str
    start_sec: float
    stop_sec: float
    start_frame: int
    stop_frame: int
    narration: str
    verb_class: int
    noun_class: int
    row: int = -1  # 0-based data row of the CSV (the key of row-indexed prediction files)

    @property
    def action(self) -> str:
        """The action as "verb_class:noun_class", the form used in prediction files and options."""
        return f"{self.verb_class}:{self.noun_class}"


@dataclass(frozen=True)
class SkippedRow:
    path: str
    line: int
    reason: str
    row: dict


def parse_timestamp(text: str) -> float:
    """'HH:MM:SS.ff' -> seconds."""
    match = _TIMESTAMP.match(text.strip())
    if not match:
        raise ValueError(f"unparseable timestamp {text!r}")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def format_timestamp(seconds: float) -> str:
    """Seconds -> 'HH:MM:SS.ff' as in the EPIC CSVs."""
    hours, rest = divmod(round(seconds * 100), 360000)
    minutes, hundredths = divmod(rest, 6000)
    return f"{hours:02d}:{minutes:02d}:{hundredths / 100:05.2f}"


def verb_text(key: str) -> str:
    """Verb class key as is (e.g. 'put-down')."""
    return key


def noun_text(key: str) -> str:
    """Noun class key as the reference words it: the parts after the first colon, then the first
    ('pan:dust' -> 'dust pan', 'machine:sous:vide' -> 'sous vide machine')."""
    parts = key.split(":")
    return " ".join(parts[1:] + parts[:1])


def action_id(verb_class: int, noun_class: int) -> int:
    """The EPIC action id."""
    return verb_class * 1000 + noun_class


def parse_action(text: str) -> tuple[int, int]:
    """'12:34' -> (12, 34); anything else raises ValueError naming the text."""
    verb, sep, noun = str(text).partition(":")
    if not (sep and verb.isdigit() and noun.isdigit()):
        raise ValueError(f"action {text!r} is not of the form 'verb:noun' (class ids)")
    return int(verb), int(noun)


def read_class_keys(path: Path) -> list[str]:
    """A class CSV (id,key,...) -> keys ordered by id; ids must be 0..N-1."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as err:
        raise AnnotationError(path, 0, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    keys = {}
    for line, row in enumerate(rows, start=2):
        try:
            keys[int(row["id"])] = row["key"]
        except (KeyError, ValueError, TypeError) as err:
            raise AnnotationError(path, line, f"bad class row ({err})") from None
    if sorted(keys) != list(range(len(keys))):
        raise AnnotationError(path, 1, "class ids are not contiguous from 0")
    return [keys[i] for i in range(len(keys))]


def read_id_column(path: Path) -> set[str]:
    """A one-column CSV with a header -> the set of its values (tail classes, unseen participants)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        return {row[0].strip() for row in reader if row and row[0].strip()}


def noun_class_files(root: Path) -> list[Path]:
    """The noun class CSVs present, v2 (the prompts' texts) first; none is an error naming the folder."""
    files = [root / name for name in NOUN_CLASSES_FILES if (root / name).exists()]
    if not files:
        raise FileNotFoundError(f"{root}: no {' or '.join(NOUN_CLASSES_FILES)}")
    return files


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    duration_sec: float


def read_video_info(path: Path) -> dict[str, VideoInfo]:
    """EPIC_100_video_info.csv -> {video_id: VideoInfo}."""
    with open(path, newline="") as f:
        return {row["video_id"]: VideoInfo(float(row["fps"]), float(row["duration"])) for row in csv.DictReader(f)}


def _parse_row(row: dict, num_verbs: int, num_nouns: int, data_row: int) -> Segment:
    missing = [c for c in SEGMENT_COLUMNS if c not in OPTIONAL_VALUES and row.get(c) in (None, "")]
    if missing:
        raise ValueError(f"missing value(s) for {', '.join(missing)}")
    start, stop = parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"])
    if stop < start or int(row["stop_frame"]) < int(row["start_frame"]):
        stops, starts = (f"{row[f'{end}_timestamp']} (frame {row[f'{end}_frame']})" for end in ("stop", "start"))
        raise ValueError(f"stop {stops} is before start {starts}")
    verb_class, noun_class = int(row["verb_class"]), int(row["noun_class"])
    if not 0 <= verb_class < num_verbs:
        raise ValueError(f"verb_class {verb_class} outside the {num_verbs} verb classes")
    if not 0 <= noun_class < num_nouns:
        raise ValueError(f"noun_class {noun_class} outside the {num_nouns} noun classes")
    ast.literal_eval(row["all_noun_classes"])  # the list column must parse
    return Segment(
        narration_id=row["narration_id"],
        participant_id=row["participant_id"],
        video_id=row["video_id"],
        start_sec=start,
        stop_sec=stop,
        start_frame=int(row["start_frame"]),
        stop_frame=int(row["stop_frame"]),
        narration=row["narration"],
        verb_class=verb_class,
        noun_class=noun_class,
        row=data_row,
    )


def read_segments(
    path: Path, num_verbs: int, num_nouns: int, skip_bad: bool = False
) -> tuple[list[Segment], list[SkippedRow]]:
    """Read an EPIC_100_{split}.csv. Bad rows (including bytes that are not UTF-8) raise AnnotationError, or with
    skip_bad are returned as SkippedRow; a file without rows is an error."""
    segments, skipped, seen = [], [], set()
    # surrogateescape keeps undecodable bytes in the row they belong to, so the error can name its line
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        absent = [c for c in SEGMENT_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise AnnotationError(path, 1, f"missing column(s) {', '.join(absent)}")
        for line, row in enumerate(reader, start=2):
            try:
                if any(_not_utf8(value) for value in row.values()):
                    raise ValueError("not UTF-8 text")
                segment = _parse_row(row, num_verbs, num_nouns, line - 2)
                if segment.narration_id in seen:
                    raise ValueError(f"duplicated narration_id {segment.narration_id}")
            except (ValueError, SyntaxError) as err:
                if not skip_bad:
                    raise AnnotationError(path, line, str(err)) from None
                skipped.append(SkippedRow(str(path), line, str(err), _readable(row)))
                continue
            seen.add(segment.narration_id)
            segments.append(segment)
    if not segments and not skipped:
        raise AnnotationError(path, 2, "the file holds no segment rows")
    return segments, skipped


def _readable(row: dict) -> dict:
    """A row as text that can be written out again: undecodable bytes become U+FFFD."""

    def text(value):
        if isinstance(value, list):
            return [text(v) for v in value]
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if isinstance(value, str) else value

    return {key: text(value) for key, value in row.items()}


def _not_utf8(value) -> bool:
    values = value if isinstance(value, list) else [value]  # csv puts a row's extra fields in a list
    return any(isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in values)


@dataclass(frozen=True)
class PriorAction:
    """An earlier segment of the same video, as context for the current one."""

    narration_id: str
    action: str
    text: str  # in the questions' representation: the class text ('official_key') or the narration
    offset_sec: float  # current start minus this segment's start, rounded to 2 decimals as the reference


Representation = Literal["official_key", "narration"]


def find_prior_actions(
    segments: list[Segment], verbs: list[str], nouns: list[str], representation: Representation = "official_key"
) -> dict[str, list[PriorAction]]:
    """Per segment, the reference's rule: in its video's segments ordered by stop time (ties by narration_id, the
    order of the official CSVs, which the reference's stable sort keeps), the two
    before it when both gaps (next start minus previous stop) are at most 3 s; otherwise an empty list. Unlike the
    reference, a chain whose offsets would be negative (a prior that starts after the current segment) is left out
    rather than shown as "-0.4 seconds ago"."""
    by_video: dict[str, list[Segment]] = defaultdict(list)
    for segment in segments:
        by_video[segment.video_id].append(segment)
    priors: dict[str, list[PriorAction]] = {}
    for video_segments in by_video.values():
        video_segments.sort(key=lambda s: (s.stop_sec, s.narration_id))
        for i, current in enumerate(video_segments):
            chain = video_segments[max(0, i - NUM_PRIOR_ACTIONS) : i + 1]
            usable = (
                len(chain) == NUM_PRIOR_ACTIONS + 1
                and all(
                    later.start_sec - earlier.stop_sec <= PRIOR_ACTION_MAX_GAP_SEC
                    for earlier, later in zip(chain, chain[1:])
                )
                and all(round(current.start_sec - p.start_sec, 2) >= 0 for p in chain[:-1])
            )
            priors[current.narration_id] = (
                [
                    PriorAction(
                        narration_id=p.narration_id,
                        action=p.action,
                        text=p.narration
                        if representation == "narration"
                        else f"{verb_text(verbs[p.verb_class])} {noun_text(nouns[p.noun_class])}",
                        offset_sec=round(current.start_sec - p.start_sec, 2),
                    )
                    for p in chain[:-1]
                ]
                if usable
                else []
            )
    return priors


@dataclass
class ActionVocabulary:
    """The dense action index over the (verb, noun) pairs present, ordered as the strings "verb:noun" sort ("0:0",
    "0:1", "0:10", ...): the order of the reference's label map, hence of the published checkpoints' action heads."""

    pairs: list[tuple[int, int]]
    index: dict[tuple[int, int], int] = field(init=False, repr=False)

    def __post_init__(self):
        self.pairs = sorted(set(self.pairs), key=lambda pair: f"{pair[0]}:{pair[1]}")
        self.index = {pair: i for i, pair in enumerate(self.pairs)}

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass
class EpicAnnotations:
    """Everything EPIC-KITCHENS-100 says about one split, read from the official annotation directory."""

    root: Path
    split: str
    segments: list[Segment]
    verbs: list[str]
    nouns: list[str]
    vocabulary: ActionVocabulary
    action_counts: dict[tuple[int, int], int]  # over the training split when present, else over this split
    narration_counts: dict[tuple[int, int], Counter]  # per action, how often each narration occurs in every split
    tail_verbs: set[int]
    tail_nouns: set[int]
    unseen_participants: set[str]
    videos: dict[str, VideoInfo]
    skipped: list[SkippedRow]

    @classmethod
    def load(cls, root: Path | str, split: str, skip_bad: bool = False) -> EpicAnnotations:
        """Read a split and its context. The action vocabulary and narration pools span every split CSV present."""
        root = Path(root)
        if split not in SPLIT_FILES:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
        split_path = root / SPLIT_FILES[split]
        if not split_path.exists():
            raise FileNotFoundError(f"{split_path} not found (the {split} split of the EPIC-KITCHENS-100 annotations)")
        verbs = read_class_keys(root / VERB_CLASSES_FILE)
        noun_files = noun_class_files(root)
        nouns = read_class_keys(noun_files[0])
        num_nouns = len(read_class_keys(noun_files[-1]))  # v1's 300 classes when present
        per_split, skipped = {}, []
        for name, filename in SPLIT_FILES.items():
            if (root / filename).exists():
                # the other split's rows feed the vocabulary and the narration pools: its bad rows are reported too
                per_split[name], bad = read_segments(root / filename, len(verbs), num_nouns, skip_bad=skip_bad)
                skipped += bad
        everything = [s for segments in per_split.values() for s in segments]
        counted = per_split.get("train", per_split[split])
        counts: dict[tuple[int, int], int] = defaultdict(int)
        for s in counted:
            counts[(s.verb_class, s.noun_class)] += 1
        narrations: dict[tuple[int, int], Counter] = defaultdict(Counter)
        for s in everything:
            narrations[(s.verb_class, s.noun_class)][s.narration] += 1
        return cls(
            root=root,
            split=split,
            segments=per_split[split],
            verbs=verbs,
            nouns=nouns,
            vocabulary=ActionVocabulary([(s.verb_class, s.noun_class) for s in everything]),
            action_counts=dict(counts),
            narration_counts=dict(narrations),
            tail_verbs={int(v) for v in _optional_ids(root / "EPIC_100_tail_verbs.csv")},
            tail_nouns={int(n) for n in _optional_ids(root / "EPIC_100_tail_nouns.csv")},
            unseen_participants=_optional_ids(root / f"EPIC_100_unseen_participant_ids_{split}.csv"),
            videos=read_video_info(root / VIDEO_INFO_FILE) if (root / VIDEO_INFO_FILE).exists() else {},
            skipped=skipped,
        )

    def fps(self, video_id: str) -> float | None:
        """The video's fps from EPIC_100_video_info.csv, None when it is not listed."""
        return self.videos[video_id].fps if video_id in self.videos else None

    def action_text(self, verb_class: int, noun_class: int) -> str:
        """The official-key text of an action: 'verb noun'."""
        return f"{verb_text(self.verbs[verb_class])} {noun_text(self.nouns[noun_class])}"

    def prior_actions(self, representation: Representation = "official_key") -> dict[str, list[PriorAction]]:
        return find_prior_actions(self.segments, self.verbs, self.nouns, representation)

    def is_tail(self, verb_class: int, noun_class: int) -> bool:
        """EPIC's definition: a segment is tail if its verb or its noun is a tail class."""
        return verb_class in self.tail_verbs or noun_class in self.tail_nouns


def _optional_ids(path: Path) -> set[str]:
    return read_id_column(path) if path.exists() else set()
