"""`llavaction prompts render`: the exact chat text the model reads for every question of a file, asked as a
checkpoint was trained (with --checkpoint) or as the options say.

    llavaction prompts render --questions Q.jsonl --task mqa --num_frames 64 [--time_instruction] \
        [--prior_actions oracle] --out prompts.jsonl
    llavaction prompts render --questions Q.jsonl --checkpoint runs/demo/checkpoints/last.ckpt --out prompts.jsonl
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from llavaction.evaluation.options import QuestionOptions
from llavaction.prompts.tasks import Task
from llavaction.utils.options import Command, dispatch


@dataclass(frozen=True, kw_only=True)
class RenderOptions(QuestionOptions):
    """One line per question, {narration_id, prompt, answer}: the whole chat text up to the answer (`<image>` for
    the visual tokens) and the target text.

    Args:
        questions: a question file of data_prep.build_mqa.
        out: the JSON-lines file written.
        task: the task the prompt asks.
        checkpoint: ask as this checkpoint was trained (unset settings follow it).
    """

    questions: Path
    out: Path
    task: Task = "mqa"
    checkpoint: str | None = None


def run_render(options: RenderOptions) -> int:
    from llavaction.benchmark.answers import chosen_option_texts
    from llavaction.benchmark.questions import read_question_file
    from llavaction.evaluation.checkpoints import LoadedCheckpoint, TrainedSettings, question_settings
    from llavaction.prompts.encoding import render
    from llavaction.utils.files import check_apart
    from llavaction.utils.jsonl import read_jsonl, write_jsonl

    inputs = {"--questions": options.questions, "--checkpoint": options.checkpoint}
    check_apart({"--out": options.out}, inputs | {"--pseudo_predictions": options.pseudo_predictions})
    if options.checkpoint is None and options.num_frames is None:
        raise ValueError("--num_frames is needed without --checkpoint (whose training frames it would follow)")
    trained = LoadedCheckpoint.open(options.checkpoint).settings if options.checkpoint else TrainedSettings()
    settings = question_settings(trained, options)
    pseudo = None
    if options.prior_actions == "pseudo":
        pseudo = chosen_option_texts(read_jsonl(options.pseudo_predictions))
    rows = render(
        read_question_file(options.questions),  # a file that no longer matches its card is refused
        options.task,
        settings.num_frames,
        settings.prompt,
        options.prior_actions != "none",
        pseudo,
    )
    write_jsonl(options.out, rows)
    print(f"{len(rows)} prompts -> {options.out}", file=sys.stderr)
    return 0


COMMANDS = {"render": Command(RenderOptions, run_render, "the exact chat text of every question of a file")}


def main(argv: list[str] | None = None) -> int:
    return dispatch(COMMANDS, argv, "llavaction prompts", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
