"""The `llavaction` console command: one entry point for every command, each also reachable by its `python -m`
path (train.py and data_prep.<step> where the design card puts them)."""

from __future__ import annotations

import importlib
import sys

# command -> (module whose main(argv) runs it, what it does)
COMMANDS = {
    "train": ("llavaction.cli.train", "fit / validate / test / predict with LightningCLI (as python train.py)"),
    "plan": ("llavaction.cli.plan", "the epoch plan of a training config, rank by rank and batch by batch"),
    "evaluate": ("llavaction.cli.evaluate", "mqa, ek100, class-scores, submission, lmms-export, compare"),
    "predict": ("llavaction.cli.predict", "answers about clips of video files"),
    "analyze": ("llavaction.cli.analyze", "the HTML report of what an evaluation gets wrong"),
    "ablate": ("llavaction.cli.ablate", "ablation rows trained and collected into one table"),
    "report": ("llavaction.cli.report", "the newest validation result of a run folder"),
    "export": ("llavaction.cli.export", "a checkpoint as a model folder: the original layout or transformers' own"),
    "prompts": ("llavaction.cli.prompts", "render: the exact chat text of every question of a file"),
    "build-mqa": ("data_prep.build_mqa", "EK-100 annotations -> EK-100-MQA questions (as python -m data_prep...)"),
    "extract-frames": ("data_prep.extract_frames", "videos -> shards of pre-decoded frames"),
    "build-replay": ("data_prep.build_replay", "LLaVA-Video-178K records -> replay questions"),
    "merge-shards": ("data_prep.merge_shards", "the parts of an array of extraction tasks -> one shard set"),
    "make-demo": ("data_prep.make_demo", "the synthetic EPIC-format demo dataset"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        lines = ["usage: llavaction <command> [options]   (llavaction <command> --help)", "", "commands:"]
        lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
        print("\n".join(lines))
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return module.main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
