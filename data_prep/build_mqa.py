"""EPIC-KITCHENS-100 annotations -> EK-100-MQA questions (and the direct-narration and temporal-detection tasks).

Every random choice is seeded from (seed, narration_id), so a file is identical whatever the row order or worker count.

    python -m data_prep.build_mqa --annotations DIR --split validation --distractors predictions \
        --predictions avion_val.json --benchmark --seed 0 --out val_mqa.jsonl
"""

from __future__ import annotations

import random
import string
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from data_prep.distractors import (
    Action,
    ActionPredictions,
    annotation_distractors,
    prediction_options,
    random_distractors,
)
from llavaction.benchmark.card import TIERS, card_path, make_card
from llavaction.benchmark.questions import QuestionRecord
from llavaction.ek100.annotations import EpicAnnotations, Segment, action_id, noun_text, verb_text
from llavaction.ek100.inputs import absent_inputs, drop_past_video_end
from llavaction.prompts.wording import reference_number
from llavaction.utils.files import check_apart, exclusive_output
from llavaction.utils.jsonl import write_json, write_jsonl
from llavaction.utils.options import main_of
from llavaction.utils.version import code_version

Distractors = Literal[TIERS]  # one list of tiers: the card checks its own against it
Representation = Literal["narration", "official_key"]
TEMPORAL_PAD_SEC = 5.0
SWEEP_SUFFIX = ".sweep.json"


def item_rng(seed: int, narration_id: str, purpose: str) -> random.Random:
    """A generator private to one item and one purpose; str seeds hash with SHA-512, stable across processes."""
    return random.Random(f"{seed}:{narration_id}:{purpose}")


def narration_distractor(action: Action, taken: set[str], ann: EpicAnnotations, rng: random.Random) -> str:
    """One narration of the action, drawn with probability proportional to how often it is annotated for the action in
    every split CSV (the reference draws from the list of narrations with repeats); texts already taken are left out so
    that options stay distinct; the action's class text when none is free."""
    counts = ann.narration_counts.get(action, {})
    free = sorted(text for text in counts if text not in taken)
    if not free:
        return ann.action_text(*action)
    return rng.choices(free, weights=[counts[text] for text in free])[0]


def option_texts(
    actions: list[Action], segment: Segment, ann: EpicAnnotations, representation: str, rng: random.Random
) -> list[str]:
    """Distinct texts for the options. official_key: the class texts. narration (the reference's
    GT_random_narration): the ground truth is the segment's own narration, each other action one of its narrations."""
    gt = (segment.verb_class, segment.noun_class)
    if representation == "official_key":
        texts = [ann.action_text(*action) for action in actions]
    else:
        taken = {segment.narration}
        texts = []
        for action in actions:
            text = segment.narration if action == gt else narration_distractor(action, taken, ann, rng)
            taken.add(text)
            texts.append(text)
    if len(set(texts)) != len(texts):
        duplicate = next(t for t in texts if texts.count(t) > 1)
        raise ValueError(f"{segment.narration_id}: two options share the text {duplicate!r}")
    return texts


def base_record(segment: Segment, ann: EpicAnnotations, task: str) -> QuestionRecord:
    """The fields every task file carries; clip_{start,stop}_sec is the window whose frames the sample shows."""
    return {
        "task": task,
        "narration_id": segment.narration_id,
        "video_id": segment.video_id,
        "participant_id": segment.participant_id,
        "start_sec": segment.start_sec,
        "stop_sec": segment.stop_sec,
        "clip_start_sec": segment.start_sec,
        "clip_stop_sec": segment.stop_sec,
        "start_frame": segment.start_frame,
        "stop_frame": segment.stop_frame,
        "fps": ann.fps(segment.video_id),
        "narration": segment.narration,
        "verb_class": segment.verb_class,
        "noun_class": segment.noun_class,
        "action_id": action_id(segment.verb_class, segment.noun_class),
        "action_index": ann.vocabulary.index[(segment.verb_class, segment.noun_class)],
        "action_text": ann.action_text(segment.verb_class, segment.noun_class),
        "verb_text": verb_text(ann.verbs[segment.verb_class]),
        "noun_text": noun_text(ann.nouns[segment.noun_class]),
        "verb_tail": segment.verb_class in ann.tail_verbs,
        "noun_tail": segment.noun_class in ann.tail_nouns,
        "unseen_participant": segment.participant_id in ann.unseen_participants,
    }


def mqa_record(
    segment: Segment,
    ann: EpicAnnotations,
    priors: list,
    predictions: ActionPredictions | None,
    *,
    num_options: int,
    distractors: str,
    benchmark: bool,
    representation: str,
    seed: int,
) -> QuestionRecord:
    rng = item_rng(seed, segment.narration_id, "mqa")
    gt = (segment.verb_class, segment.noun_class)
    if distractors == "random":
        actions = [gt] + random_distractors(gt, ann.vocabulary.pairs, num_options - 1, rng)
    elif distractors == "annotations":
        actions = [gt] + annotation_distractors(gt, ann.vocabulary.pairs, ann.action_counts, num_options - 1, rng)
    else:
        assert predictions is not None
        actions = prediction_options(
            gt,
            predictions.ranked(segment, (len(ann.verbs), len(ann.nouns))),
            num_options,
            ann.split == "train",
            benchmark,
            rng,
            f"{predictions.path}: {segment.narration_id}",
        )
    rng.shuffle(actions)
    texts = option_texts(actions, segment, ann, representation, rng)
    answer = actions.index(gt) if gt in actions else None
    return base_record(segment, ann, "mqa") | {
        "options": texts,
        "option_actions": [f"{v}:{n}" for v, n in actions],
        "answer_index": answer,
        "answer_letter": None if answer is None else string.ascii_uppercase[answer],
        "prior_actions": [asdict(p) for p in priors],
    }


def narration_record(segment: Segment, ann: EpicAnnotations, priors: list) -> QuestionRecord:
    """Direct narration: the answer is the segment's narration."""
    return base_record(segment, ann, "narration") | {
        "answer": segment.narration,
        "prior_actions": [asdict(p) for p in priors],
    }


def temporal_record(segment: Segment, ann: EpicAnnotations, seed: int) -> QuestionRecord:
    """Temporal detection as the reference builds it: the segment padded by 5 s in total, split at random before and
    after, the window's bounds rounded to 2 decimals; the answer is "start, end" relative to the window, each rounded to
    2 decimals and printed as Python prints a float ("2.13, 4.5"). Unlike the reference, the window also stops at the
    video's end (EPIC_100_video_info.csv), where there are no frames to show."""
    rng = item_rng(seed, segment.narration_id, "temporal")
    before = rng.uniform(0.0, TEMPORAL_PAD_SEC)
    clip_start = round(max(0.0, segment.start_sec - before), 2)
    clip_stop = segment.stop_sec + TEMPORAL_PAD_SEC - before
    if segment.video_id in ann.videos:
        clip_stop = min(clip_stop, max(ann.videos[segment.video_id].duration_sec, segment.stop_sec))
    record = base_record(segment, ann, "temporal")
    record["clip_start_sec"], record["clip_stop_sec"] = clip_start, round(clip_stop, 2)
    start, stop = round(segment.start_sec, 2), round(segment.stop_sec, 2)
    record["answer"] = f"{reference_number(start - clip_start)}, {reference_number(stop - clip_start)}"
    return record


@dataclass(frozen=True)
class BuildOptions:
    """EPIC-KITCHENS-100 annotations -> EK-100-MQA questions (and the direct-narration and temporal-detection tasks).

    Args:
        annotations: the EPIC-KITCHENS-100 annotation folder.
        split: the split the questions ask about.
        out: the MQA questions (JSON lines).
        num_options: options per question (K).
        distractors: where the wrong options come from: an action model's 'predictions', actions sharing the verb or
            the noun in the 'annotations', or 'random' actions.
        predictions: the action model's predictions JSON (for distractors 'predictions').
        benchmark: validation: the ground truth is always an option (in place of the K-th prediction when absent).
        representation: option texts: narrations as the published recipe (GT_random_narration) or class keys.
        seed: seed of every random choice (drawn per question, so files do not depend on row order).
        sweep: build the difficulty matrix instead of one file: every tier of sweep_tiers with every K of
            sweep_options over the same segments, each as OUT's name with '.<tier>.K<k>' (val.random.K2.jsonl), with
            its card, listed in OUT's name with '.sweep.json'.
        sweep_tiers: the distractor sources of a sweep ('predictions' needs --predictions).
        sweep_options: the numbers of options of a sweep.
        skip_bad: skip bad rows of the CSVs, listed in OUT.skipped.jsonl (default: a bad row is an error).
        narration_out: also write the direct-narration task here.
        temporal_out: also write the temporal-detection task here.
    """

    annotations: Path
    split: Literal["train", "validation"]
    out: Path
    num_options: int = 5
    distractors: Distractors = "annotations"
    predictions: Path | None = None
    benchmark: bool = False
    representation: Representation = "narration"
    seed: int = 0
    sweep: bool = False
    sweep_tiers: tuple[Distractors, ...] = ("random", "annotations")
    sweep_options: tuple[int, ...] = (2, 3, 5, 10)
    skip_bad: bool = False
    narration_out: Path | None = None
    temporal_out: Path | None = None

    def __post_init__(self):
        option, tier_option = ("--sweep_options", "--sweep_tiers") if self.sweep else ("--num_options", "--distractors")
        for k in self.sweep_options if self.sweep else (self.num_options,):
            if isinstance(k, bool) or not 2 <= k <= 26:
                raise ValueError(f"{option} must be between 2 and 26, got {k}")
        tiers = self.sweep_tiers if self.sweep else (self.distractors,)
        if self.sweep and not (tiers and self.sweep_options):
            raise ValueError("--sweep needs at least one tier (--sweep_tiers) and one K (--sweep_options)")
        if ("predictions" in tiers) != (self.predictions is not None):
            raise ValueError(f"--predictions FILE goes with {tier_option} predictions, and only with it")
        if self.benchmark and self.split != "validation":
            raise ValueError("--benchmark applies to the validation split")


def check_sizes(ann: EpicAnnotations, num_options: int) -> None:
    """Enough distinct actions for every question, whatever the distractor mode."""
    if len(ann.vocabulary) < num_options:
        raise ValueError(
            f"--num-options {num_options} needs at least {num_options} distinct actions; the annotations "
            f"in {ann.root} hold {len(ann.vocabulary)}"
        )
    if not ann.segments:
        raise ValueError(f"{ann.root}: every row of the {ann.split} split was skipped; no question to build")


def run(options: BuildOptions) -> int:
    check_apart(written_files(options), {"--annotations": options.annotations, "--predictions": options.predictions})
    with exclusive_output(options.out):  # one writer of these questions at a time
        return build(options)


def written_files(args: BuildOptions) -> dict[str, list[Path]]:
    """Every file the command writes, by the option that names it (none may be an input, nor two the same)."""
    files = [path for _, _, out in builds(args) for path in (out, card_path(out))]
    files += [args.out.with_name(args.out.stem + SWEEP_SUFFIX)] if args.sweep else []
    files += [args.out.with_suffix(".skipped.jsonl")] if args.skip_bad else []
    return {"--out": files, "--narration_out": [args.narration_out], "--temporal_out": [args.temporal_out]}


def sweep_path(out: Path, tier: str, num_options: int) -> Path:
    """Where a sweep puts one build: 'val.jsonl' -> 'val.random.K2.jsonl'."""
    return out.with_name(f"{out.stem}.{tier}.K{num_options}{out.suffix}")


def builds(args: BuildOptions) -> list[tuple[str, int, Path]]:
    """(tier, K, file) of every question file the command writes."""
    if not args.sweep:
        return [(args.distractors, args.num_options, args.out)]
    return [(t, k, sweep_path(args.out, t, k)) for t in dict.fromkeys(args.sweep_tiers) for k in args.sweep_options]


def build(args: BuildOptions) -> int:
    for out in (args.out, args.narration_out, args.temporal_out):
        if out is not None and out.is_dir():
            raise IsADirectoryError(f"{out}: an existing directory; --out takes a .jsonl file name")
    ann = EpicAnnotations.load(args.annotations, args.split, skip_bad=args.skip_bad)
    drop_past_video_end(ann, args.skip_bad)  # no frames exist after a video's end
    if absent := absent_inputs(ann):  # the breakdowns they feed would silently read as all head, all seen
        print(f"note: {args.annotations} lacks {'; '.join(absent)}", file=sys.stderr)
    for _, num_options, _ in builds(args):
        check_sizes(ann, num_options)
    predictions = ActionPredictions(args.predictions) if args.predictions else None
    priors = ann.prior_actions(args.representation)
    built = []
    for tier, num_options, out in builds(args):
        options = dict(num_options=num_options, distractors=tier, benchmark=args.benchmark, seed=args.seed)
        options["representation"] = args.representation
        mqa = []
        with tqdm(ann.segments, desc=f"build {args.split} {tier} K{num_options}", mininterval=1) as segments:
            for segment in segments:  # the bar closed before an error's line
                mqa.append(mqa_record(segment, ann, priors[segment.narration_id], predictions, **options))
        write_jsonl(out, mqa)
        missing = sum(r["answer_index"] is None for r in mqa)
        card = build_card(args, out, tier, num_options, len(mqa), missing)
        write_json(card_path(out), card)
        built.append({"file": out.name, "tier": tier, "num_options": num_options, "name": card["name"]})
        print(
            f"{len(mqa)} questions -> {out} ({len(ann.skipped)} bad rows skipped in the CSVs read, "
            f"{missing} without the ground truth among the options)",
            file=sys.stderr,
        )
    if args.sweep:
        write_json(args.out.with_name(args.out.stem + SWEEP_SUFFIX), {"split": args.split, "builds": built})
    for path, task in ((args.narration_out, "narration"), (args.temporal_out, "temporal")):
        if path:
            write_jsonl(path, [task_record(task, segment, ann, priors, args.seed) for segment in ann.segments])
    if args.skip_bad:
        write_jsonl(args.out.with_suffix(".skipped.jsonl"), [asdict(s) for s in ann.skipped])
    sizes = f"[{len(ann.verbs)}, {len(ann.nouns)}, {len(ann.vocabulary)}]"
    print(f"class counts (verbs, nouns, actions in the vocabulary): {sizes}, model.action.types", file=sys.stderr)
    return 0


def task_record(task: str, segment: Segment, ann: EpicAnnotations, priors: dict, seed: int) -> QuestionRecord:
    if task == "narration":
        return narration_record(segment, ann, priors[segment.narration_id])
    return temporal_record(segment, ann, seed)


def build_card(args: BuildOptions, out: Path, tier: str, num_options: int, count: int, missing: int) -> dict:
    """The card of questions just written: every annotation CSV of the folder and the predictions file digested
    (llavaction.benchmark.card)."""
    used = [args.predictions] if tier == "predictions" else []
    inputs = sorted(Path(args.annotations).glob("EPIC_100_*.csv")) + used
    return make_card(
        questions=out,
        split=args.split,
        tier=tier,
        num_options=num_options,
        benchmark=args.benchmark,
        seed=args.seed,
        representation=args.representation,
        predictions=args.predictions if tier == "predictions" else None,
        inputs=inputs,
        counts={"count": count, "without_ground_truth": missing},
        code=code_version(),
    )


main = main_of(BuildOptions, run, "python -m data_prep.build_mqa", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
