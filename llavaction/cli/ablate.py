"""`llavaction ablate`: ablation rows (small YAML diffs over a base config) trained and collected into one table
(llavaction.training.ablation). Anything after `--` goes to every `train.py fit` call.

    llavaction ablate --base experiments/demo.yaml experiments/ablations/demo/*.yaml --out runs/ablations
    llavaction ablate --base experiments/llavaction_7b.yaml experiments/ablations/7b/*.yaml --out runs/abl --slurm
    llavaction ablate --base experiments/demo.yaml experiments/ablations/demo/*.yaml --out runs/x --dry_run
"""

from __future__ import annotations

import sys

from llavaction.training.ablation import AblationRun, run_ablation
from llavaction.utils.options import main_of


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    extra = args[args.index("--") + 1 :] if "--" in args else []
    args = args[: args.index("--")] if "--" in args else args
    from llavaction.cli.train import config_problem

    run = main_of(
        AblationRun, lambda run: run_ablation(run, extra, config_problem), "llavaction ablate", __doc__.split("\n\n")[0]
    )
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
