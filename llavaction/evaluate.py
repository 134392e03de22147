"""Evaluation command line over llavaction.evaluation.

    python -m llavaction.evaluate mqa --questions val_mqa.jsonl --shards shards/val_mqa --checkpoint DIR_OR_CKPT \
        [--mode generate|score] [--scoring letter|likelihood] [--devices N] --out results/
    python -m llavaction.evaluate class-scores --predictions results/predictions.jsonl --out scores.npz
    python -m llavaction.evaluate ek100 --scores scores.npz --annotations DIR --split validation --out ek100.json
    python -m llavaction.evaluate submission --scores test_scores.npz --sls-pt 2 --sls-tl 3 --sls-td 4 --out test.zip
    python -m llavaction.evaluate lmms-export --questions val_mqa.jsonl --shards shards/val_mqa --out tasks/ek100_mqa
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from llavaction.cli_errors import ArgumentParser, add_debug_flag, count, run_cli
from llavaction.evaluation.checkpoints import PRECISIONS
from llavaction.files import atomic_output, exclusive_output
from llavaction.jsonl import read_jsonl, write_json
from llavaction.metrics import METRIC_KEYS


def run_mqa(args: argparse.Namespace) -> int:
    from llavaction.evaluation.mqa import MQAEvaluation, evaluate_mqa

    results = evaluate_mqa(
        MQAEvaluation(
            questions=args.questions,
            shards=[str(s) for s in args.shards],
            checkpoint=args.checkpoint,
            out=args.out,
            tokenizer=args.tokenizer,
            mode=args.mode,
            scoring=args.scoring,
            num_frames=args.num_frames,
            time_instruction=args.time_instruction,
            frame_times=args.frame_times,
            prior_actions=args.prior_actions,
            pseudo_predictions=args.pseudo_predictions,
            max_new_tokens=args.max_new_tokens,
            candidates=args.candidates,
            devices=args.devices,
            num_nodes=args.num_nodes,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            precision=args.precision,
        )
    )
    if results is None:  # not the global-zero process
        return 0
    rule = "the paper's rule (greedy answers)" if args.mode == "generate" else f"{args.scoring} scoring (proxy)"
    extra = (
        f"; letter parse {results['letter_accuracy']:.2f}%, parse failures {results['parse_failures']}"
        if args.mode == "generate"
        else ""
    )
    print(
        f"EK-100-MQA accuracy: {results['accuracy']:.2f}% on {results['count']} questions by {rule}{extra} "
        f"-> {args.out}"
    )
    return 0


def run_class_scores(args: argparse.Namespace) -> int:
    from llavaction.evaluation.candidates import candidate_class_scores

    if args.out.exists() and args.out.is_dir():
        raise IsADirectoryError(f"{args.out}: --out is a directory; give a .npz file name")
    scores = candidate_class_scores(read_jsonl(args.predictions), source=str(args.predictions))
    with atomic_output(args.out, "wb") as stream:
        np.savez(stream, **scores)
    print(f"class scores of {len(scores['narration_id'])} segments -> {args.out}")
    return 0


def run_ek100(args: argparse.Namespace) -> int:
    from llavaction.evaluation.ek100 import ek100_metrics, load_scores

    figures = ek100_metrics(
        load_scores(args.scores), args.annotations, args.split, partial=args.partial, source=str(args.scores)
    )
    write_json(args.out, figures)
    for key in METRIC_KEYS:
        print(f"{key:32s} {figures[key]:7.2f}")
    print(f"over {figures['segments']} of the {figures['split_segments']} segments of the {args.split} split")
    return 0


def run_submission(args: argparse.Namespace) -> int:
    from llavaction.evaluation.ek100 import load_scores, write_submission

    write_submission(load_scores(args.scores), args.out, args.sls_pt, args.sls_tl, args.sls_td)
    print(f"submission -> {args.out}")
    return 0


def run_lmms_export(args: argparse.Namespace) -> int:
    from llavaction.evaluation.checkpoints import LoadedCheckpoint, TrainedSettings, question_settings
    from llavaction.evaluation.lmms_eval import ExportSettings, export_task
    from llavaction.evaluation.questions import check_against_shards, read_questions

    questions = read_questions(args.questions)
    check_against_shards(questions, args.shards)
    trained = LoadedCheckpoint.open(args.checkpoint).settings if args.checkpoint else TrainedSettings()
    asked = question_settings(trained, args.shards, args.num_frames, args.time_instruction, args.frame_times)
    settings = ExportSettings(
        **asdict(asked),
        prior_actions=args.prior_actions,
        pseudo_predictions=args.pseudo_predictions,
        visual=args.visual,
    )
    with exclusive_output(args.out):
        exported = export_task(questions, args.shards, args.out, settings)
    print(f"{exported} questions -> lmms-eval task folder {args.out} ({settings})")
    return 0


def add_prompt_flags(command: argparse.ArgumentParser) -> None:
    """How the questions are asked; what is not given follows the checkpoint's training."""
    command.add_argument(
        "--num-frames", type=count(1), help="default: the checkpoint's training frames, else the shards'"
    )
    command.add_argument(
        "--time-instruction",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="state the clip's duration and frame count (default: as the checkpoint was trained)",
    )
    command.add_argument("--frame-times", action=argparse.BooleanOptionalAction, default=None)
    command.add_argument(
        "--prior-actions",
        choices=("none", "oracle", "pseudo"),
        default="none",
        help="show the two previous actions: none (the paper's evaluation), the ground truth, or the "
        "model's own answers from --pseudo-predictions",
    )
    command.add_argument("--pseudo-predictions", help="predictions.jsonl of an earlier run, for --prior-actions pseudo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    mqa = commands.add_parser("mqa", help="EK-100-MQA accuracy of a checkpoint")
    mqa.add_argument("--questions", type=Path, nargs="+", required=True)
    mqa.add_argument("--shards", nargs="+", required=True, help="shard sets: directories or URLs")
    mqa.add_argument("--checkpoint", required=True, help="Lightning .ckpt or original checkpoint directory")
    mqa.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint's)")
    mqa.add_argument(
        "--mode",
        choices=("generate", "score"),
        default="generate",
        help="generate: greedy answers scored by the paper's rule; score: a fast proxy",
    )
    mqa.add_argument("--scoring", choices=("letter", "likelihood"), default="letter", help="score mode's rule")
    add_prompt_flags(mqa)
    mqa.add_argument(
        "--max-new-tokens", type=count(1), default=4096, help="longest answer (the reference's 4096; stops at EOS)"
    )
    mqa.add_argument("--devices", type=count(1), default=1, help="processes a node: GPUs when present, else CPU")
    mqa.add_argument(
        "--num-nodes", type=count(1), default=1, help="nodes (torchrun, SLURM, or NODE_RANK/MASTER_ADDR as training)"
    )
    mqa.add_argument("--batch-size", type=count(1), default=8)
    mqa.add_argument("--num-workers", type=count(0), default=2)
    mqa.add_argument("--precision", choices=PRECISIONS, help="Lightning's precision name (default: the checkpoint's)")
    mqa.add_argument(
        "--candidates", type=count(1), default=10, help="with action heads: actions per segment in head_candidates.json"
    )
    mqa.add_argument("--out", type=Path, required=True)
    mqa.set_defaults(func=run_mqa)
    ek100 = commands.add_parser("ek100", help="EPIC action-recognition metrics of a scores file")
    ek100.add_argument("--scores", type=Path, required=True)
    ek100.add_argument("--annotations", type=Path, required=True)
    ek100.add_argument("--split", choices=("train", "validation"), default="validation")
    ek100.add_argument("--partial", action="store_true", help="figures over a file covering part of the split")
    ek100.add_argument("--out", type=Path, required=True)
    ek100.set_defaults(func=run_ek100)
    class_scores = commands.add_parser("class-scores", help="MQA predictions over candidate actions -> class scores")
    class_scores.add_argument("--predictions", type=Path, required=True, help="predictions.jsonl of `mqa`")
    class_scores.add_argument("--out", type=Path, required=True, help="scores .npz for `ek100` and `submission`")
    class_scores.set_defaults(func=run_class_scores)
    submission = commands.add_parser("submission", help="EPIC challenge submission zip")
    submission.add_argument("--scores", type=Path, required=True)
    submission.add_argument("--sls-pt", type=int, required=True, help="supervision level: pretraining")
    submission.add_argument("--sls-tl", type=int, required=True, help="supervision level: training labels")
    submission.add_argument("--sls-td", type=int, required=True, help="supervision level: training data")
    submission.add_argument("--out", type=Path, required=True)
    submission.set_defaults(func=run_submission)
    lmms = commands.add_parser("lmms-export", help="an lmms-eval task folder of a question file")
    lmms.add_argument("--questions", type=Path, nargs="+", required=True)
    lmms.add_argument("--shards", nargs="+", required=True, help="shard sets: directories or URLs")
    lmms.add_argument("--out", type=Path, required=True, help="the task folder (for lmms-eval's --include_path)")
    lmms.add_argument("--checkpoint", help="ask what this checkpoint was trained with (time instruction, frames)")
    add_prompt_flags(lmms)
    lmms.add_argument(
        "--visual",
        choices=("video", "frames"),
        default="video",
        help="an MP4 per question (video models such as llava_vid) or its JPEG frames",
    )
    lmms.set_defaults(func=run_lmms_export)
    for command in (mqa, ek100, class_scores, submission, lmms):
        add_debug_flag(command)
    args = parser.parse_args(argv)
    if args.command in ("mqa", "lmms-export") and (args.prior_actions == "pseudo") != (
        args.pseudo_predictions is not None
    ):
        parser.error("--pseudo-predictions goes with --prior-actions pseudo, and only with it")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
