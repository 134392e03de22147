"""`llavaction evaluate`: EK-100-MQA accuracy of a checkpoint, EPIC's figures of a scores file, candidate re-ranking to
class scores, the EPIC challenge submission and the lmms-eval task export (llavaction.evaluation).

    llavaction evaluate mqa --questions val_mqa.jsonl --shards shards/val_mqa --checkpoint CKPT --out results/
    llavaction evaluate class-scores --predictions results/predictions.jsonl --out scores.npz
    llavaction evaluate ek100 --scores scores.npz --annotations DIR --split validation --out ek100.json
    llavaction evaluate submission --scores test_scores.npz --sls_pt 2 --sls_tl 3 --sls_td 4 --out test.zip
    llavaction evaluate lmms-export --questions val_mqa.jsonl --shards shards/val_mqa --out tasks/ek100_mqa
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
    extra = (
        f"; letter parse {results['letter_accuracy']:.2f}%, parse failures {results['parse_failures']}"
        if generate
        else ""
    )
    print(
        f"EK-100-MQA accuracy: {results['accuracy']:.2f}% on {results['count']} questions by {rule}{extra} "
        f"-> {options.out}"
    )
    return 0


@dataclass(frozen=True)
class ClassScoresOptions:
    """MQA predictions over candidate actions -> EPIC class scores (per segment the softmax of the option scores).

    Args:
        predictions: predictions.jsonl of `llavaction evaluate mqa`.
        out: the scores .npz (for `ek100` and `submission`).
    """

    predictions: Path
    out: Path


def run_class_scores(options: ClassScoresOptions) -> int:
    import numpy as np

    from llavaction.evaluation.candidates import candidate_class_scores
    from llavaction.utils.files import atomic_output
    from llavaction.utils.jsonl import read_jsonl

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
    from llavaction.utils.jsonl import write_json

    figures = ek100_metrics(
        load_scores(options.scores),
        options.annotations,
        options.split,
        partial=options.partial,
        source=str(options.scores),
    )
    write_json(options.out, figures)
    for key in METRIC_KEYS:
        print(f"{key:32s} {figures[key]:7.2f}")
    print(f"over {figures['segments']} of the {figures['split_segments']} segments of the {options.split} split")
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

    write_submission(load_scores(options.scores), options.out, options.sls_pt, options.sls_tl, options.sls_td)
    print(f"submission -> {options.out}")
    return 0


def run_lmms_export(options: LmmsExport) -> int:
    from llavaction.evaluation.lmms_eval import export_lmms_task

    exported, settings = export_lmms_task(options)
    print(f"{exported} questions -> lmms-eval task folder {options.out} ({settings})")
    print(f"run it with: {settings.command(options.out)}")
    return 0


COMMANDS = {
    "mqa": Command(MQAEvaluation, run_mqa, "EK-100-MQA accuracy of a checkpoint"),
    "ek100": Command(EK100Options, run_ek100, "EPIC action-recognition figures of a scores file"),
    "class-scores": Command(ClassScoresOptions, run_class_scores, "MQA predictions over candidates -> class scores"),
    "submission": Command(SubmissionOptions, run_submission, "the EPIC challenge submission zip"),
    "lmms-export": Command(LmmsExport, run_lmms_export, "an lmms-eval task folder of question files"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(COMMANDS, argv, "llavaction evaluate", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
