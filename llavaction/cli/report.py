"""`llavaction report`: the newest validation result under a run folder, as the run printed it.

llavaction report runs/demo
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llavaction.training.validation import RESULTS_FILE, format_results
from llavaction.utils.options import main_of


@dataclass(frozen=True)
class ReportRun:
    """The newest validation result under a run folder.

    Args:
        run: the run folder (trainer.default_root_dir).
    """

    POSITIONAL = "run"

    run: Path


def report(options: ReportRun) -> int:
    if not options.run.is_dir():
        raise FileNotFoundError(f"{options.run}: no such run folder")
    found = sorted(options.run.rglob(RESULTS_FILE), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {options.run}: has a validation run finished?")
    print(format_results(json.loads(found[-1].read_text())))
    return 0


main = main_of(ReportRun, report, "llavaction report", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
