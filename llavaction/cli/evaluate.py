"""`llavaction evaluate`: EK-100-MQA accuracy of a checkpoint, EPIC's figures of a scores file, candidate re-ranking to
class scores, the EPIC challenge submission, the lmms-eval task export and the paired comparison of two evaluations
(llavaction.evaluation).

    llavaction evaluate mqa --questions val_mqa.jsonl --shards shards/val_mqa --checkpoint CKPT --out results/
    llavaction evaluate class-scores --predictions results/predictions.jsonl --out scores.npz
    llavaction evaluate ek100 --scores scores.npz --annotations DIR --split validation --out ek100.json
    llavaction evaluate submission --scores test_scores.npz --sls_pt 2 --sls_tl 3 --sls_td 4 --out test.zip
    llavaction evaluate lmms-export --questions val_mqa.jsonl --shards shards/val_mqa --out tasks/ek100_mqa
    llavaction evaluate compare results/baseline results/candidate
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llavaction.evaluation.lmms_eval import LmmsExport
from llavaction.evaluation.mqa import MQAEvaluation
from llavaction.utils.options import Command, dispatch


def run_mqa(options: MQAEvaluation) -> int:
    from llavaction.evaluation.mqa import evaluate_mqa

    results = evaluate_mqa(options)
    if results is None:  # not the global-zero process
        return 0
    generate = options.mode == "generate"
    rule = "the paper's rule (greedy answers)" if generate else f"{options.scoring} scoring (proxy)"
    interval = results["accuracy_interval"]
    extra = (
        f"; letter parse {with_interval(results['letter_accuracy_interval'])}, parse failures "
        f"{results['parse_failures']}, answers matching no option {results['no_option_matched']}"
        if generate
        else ""
    )
    print(
        f"EK-100-MQA accuracy: {with_interval(interval)} on {results['count']} questions by {rule}{extra} "
        f"({interval['confidence']:.0%} intervals: bootstrap over {interval['clusters']} videos, "
        f"{interval['resamples']} resamples, seed {interval['seed']}) -> {options.out}"
    )
    asked = results["settings"]
    on = {True: "on", False: "off"}
    print(
        f"asked with {asked['num_frames']} frames a clip, time instruction {on[bool(asked['time_instruction'])]}, "
        f"frame times {on[bool(asked['frame_times'])]}, prior actions {asked['prior_actions']} (unset options follow "
        "the checkpoint's training; results.json records them)"
    )
    return 0


def with_interval(interval: dict) -> str:
    """'71.72% [70.10, 73.31]'."""
    return f"{interval['value']:.2f}% [{interval['low']:.2f}, {interval['high']:.2f}]"


@dataclass(frozen=True)
class ClassScoresOptions:
    """MQA predictions over candidate actions -> EPIC class scores (per segment the softmax of the option scores).

    Args:
        predictions: predictions.jsonl of `llavaction evaluate mqa`.
        out: the scores .npz (for `ek100` and `submission`).
    """

    predictions: Path
    out: Path


@dataclass(frozen=True)
class CandidatesOptions:
    """An action model's verb and noun scores -> the predictions file build_mqa takes (--distractors predictions):
    per segment its top actions, best first. The scores file is `ek100`'s: verb_output [N, 97], noun_output [N, 300]
    and narration_id [N] in a .npz or .pt (save AVION's or TIM's logits so; a checkpoint with action heads writes
    head_scores.npz).

    Args:
        scores: the scores file.
        out: the predictions JSON.
        top: actions per segment (build_mqa takes the top K of validation questions, samples from the top 2K in
            training: 10 serves K = 5).
    """

    scores: Path
    out: Path
    top: int = 10

    def __post_init__(self):
        from llavaction.utils.checks import check_count

        check_count("top", self.top, minimum=1)


def run_candidates(options: CandidatesOptions) -> int:
    from llavaction.evaluation.candidates import ranked_actions
    from llavaction.evaluation.ek100 import load_scores
    from llavaction.utils.files import check_apart
    from llavaction.utils.jsonl import write_json

    check_apart({"--out": options.out}, {"--scores": options.scores})
    scores = load_scores(options.scores)
    ranked = ranked_actions(scores["verb_output"], scores["noun_output"], scores["narration_id"], options.top)
    write_json(options.out, ranked)
    print(f"the top {options.top} actions of {len(ranked)} segments -> {options.out} (build_mqa --predictions)")
    return 0


def run_class_scores(options: ClassScoresOptions) -> int:
    import numpy as np

    from llavaction.evaluation.candidates import candidate_class_scores
    from llavaction.utils.files import atomic_output, check_apart
    from llavaction.utils.jsonl import read_jsonl

    check_apart({"--out": options.out}, {"--predictions": options.predictions})
    if options.out.is_dir():
        raise IsADirectoryError(f"{options.out}: --out is a directory; give a .npz file name")
    scores = candidate_class_scores(read_jsonl(options.predictions), source=str(options.predictions))
    with atomic_output(options.out, "wb") as stream:
        np.savez(stream, **scores)
    print(f"class scores of {len(scores['narration_id'])} segments -> {options.out}")
    return 0


@dataclass(frozen=True)
class EK100Options:
    """EPIC-KITCHENS-100 action-recognition figures of a scores file.

    Args:
        scores: a .npz or .pt of narration_id, verb_output [N, 97] and noun_output [N, 300] (never unpickled).
        annotations: the EPIC-KITCHENS-100 annotation folder.
        out: the figures as JSON.
        split: the split the scores cover.
        partial: give figures over a file that covers part of the split (they say how many segments).
    """

    scores: Path
    annotations: Path
    out: Path
    split: Literal["train", "validation"] = "validation"
    partial: bool = False


def run_ek100(options: EK100Options) -> int:
    from llavaction.ek100.metrics import METRIC_KEYS
    from llavaction.evaluation.ek100 import ek100_metrics, load_scores
    from llavaction.utils.files import check_apart
    from llavaction.utils.jsonl import write_json

    check_apart({"--out": options.out}, {"--scores": options.scores, "--annotations": options.annotations})
    figures = ek100_metrics(
        load_scores(options.scores),
        options.annotations,
        options.split,
        partial=options.partial,
        source=str(options.scores),
    )
    write_json(options.out, figures)
    intervals = figures["intervals"]
    for key in METRIC_KEYS:
        interval = intervals.get(key)
        around = f"  [{interval['low']:.2f}, {interval['high']:.2f}]" if interval else ""
        if figures[key] is None:
            print(f"{key:32s}     n/a  (not applicable: {figures['not_applicable'][key]} in these annotations)")
            continue
        print(f"{key:32s} {figures[key]:7.2f}{around}")
    first = next(iter(intervals.values()))
    print(
        f"over {figures['segments']} of the {figures['split_segments']} segments of the {options.split} split "
        f"({first['confidence']:.0%} intervals: bootstrap over {first['clusters']} videos, {first['resamples']} "
        f"resamples, seed {first['seed']})"
    )
    return 0


@dataclass(frozen=True)
class SubmissionOptions:
    """The EPIC-KITCHENS-100 action-recognition challenge file (test.json in a zip).

    Args:
        scores: the test split's scores (.npz or .pt).
        sls_pt: supervision level of pretraining.
        sls_tl: supervision level of the training labels.
        sls_td: supervision level of the training data.
        out: the zip file.
    """

    scores: Path
    sls_pt: int
    sls_tl: int
    sls_td: int
    out: Path


def run_submission(options: SubmissionOptions) -> int:
    from llavaction.evaluation.ek100 import load_scores, write_submission
    from llavaction.utils.files import check_apart

    check_apart({"--out": options.out}, {"--scores": options.scores})
    write_submission(load_scores(options.scores), options.out, options.sls_pt, options.sls_tl, options.sls_td)
    print(f"submission -> {options.out}")
    return 0


def run_lmms_export(options: LmmsExport) -> int:
    from llavaction.evaluation.lmms_eval import EXPORTED_MODEL, TASK, export_lmms_task

    exported, settings = export_lmms_task(options)
    print(f"{exported} questions -> lmms-eval task folder {options.out} ({settings})")
    if settings.model_folder == EXPORTED_MODEL:
        print(
            f"lmms-eval reads a model folder, not a Lightning .ckpt: first `llavaction export --checkpoint "
            f"{options.checkpoint} --out {EXPORTED_MODEL}` (a folder of your choice, named below)"
        )
    print(f"run it with: {settings.command(options.out, options.group or TASK)}")
    return 0


@dataclass(frozen=True)
class CompareOptions:
    """Two evaluations of the same questions compared: B's accuracy less A's, its 95% interval from a bootstrap over
    videos, and a paired p-value (llavaction.benchmark.uncertainty).

    Args:
        runs: the two output folders of `llavaction evaluate mqa` (or their predictions.jsonl), A then B.
        intersection: compare on the questions both answered (otherwise different question sets are an error).
        out: a JSON file for the comparison.
    """

    POSITIONAL = "runs"

    runs: list[Path]
    intersection: bool = False
    out: Path | None = None

    def __post_init__(self):
        if len(self.runs) != 2:
            raise ValueError(f"compare takes two evaluations, A and B; got {len(self.runs)}")


def run_compare(options: CompareOptions) -> int:
    from llavaction.benchmark.uncertainty import record_interval
    from llavaction.evaluation.report import check_same_rule, compare_records, load_predictions, paired
    from llavaction.utils.files import check_apart
    from llavaction.utils.jsonl import write_json

    folders = [run.parent if run.suffix == ".jsonl" else run for run in options.runs]
    check_apart({"--out": options.out}, {"runs": folders})
    a, b = (load_predictions(folder) for folder in folders)
    rule = check_same_rule((folders[0], a), (folders[1], b))
    b, a_by_id = paired(b, a, options.intersection, folders[0])
    comparison = compare_records(a_by_id, b)
    intervals = [record_interval(list(a_by_id.values())), record_interval(b)]
    for name, folder, interval in zip("AB", folders, intervals):
        print(f"{name}: {interval.text()} {folder}")
    print(f"B - A: {comparison.text()} (both scored by {rule})")
    if options.out:
        result = comparison.as_dict() | {"a": str(folders[0]), "b": str(folders[1]), "rule": rule}
        write_json(options.out, result | {"a_accuracy": intervals[0].as_dict(), "b_accuracy": intervals[1].as_dict()})
    return 0


def run_difficulty(options: MQAEvaluation) -> int:
    from llavaction.evaluation.difficulty import FIGURE_FILE, evaluate_difficulty

    table = evaluate_difficulty(options)
    if table is None:  # not the global-zero process
        return 0
    for row in table["rows"]:
        figure = f"{row['accuracy']:.1f}% [{row['low']:.1f}, {row['high']:.1f}]"
        chance = f"chance {row['chance']:.1f}%"
        print(f"{row['tier']:<16} K={row['num_options']:<3} {figure:<22} {chance}  ({row['count']} questions)")
    print(f"difficulty plot -> {options.out / FIGURE_FILE}")
    return 0


COMMANDS = {
    "mqa": Command(MQAEvaluation, run_mqa, "EK-100-MQA accuracy of a checkpoint"),
    "ek100": Command(EK100Options, run_ek100, "EPIC action-recognition figures of a scores file"),
    "class-scores": Command(ClassScoresOptions, run_class_scores, "MQA predictions over candidates -> class scores"),
    "candidates": Command(CandidatesOptions, run_candidates, "an action model's scores -> build_mqa's predictions"),
    "submission": Command(SubmissionOptions, run_submission, "the EPIC challenge submission zip"),
    "lmms-export": Command(LmmsExport, run_lmms_export, "an lmms-eval task folder of question files"),
    "difficulty": Command(
        MQAEvaluation, run_difficulty, "each build of a sweep evaluated: accuracy against K per tier"
    ),
    "compare": Command(CompareOptions, run_compare, "two evaluations of the same questions: difference, interval, p"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(COMMANDS, argv, "llavaction evaluate", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
