"""Print the newest validation result under a run folder: python -m llavaction.report runs/demo"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llavaction.callbacks import RESULTS_FILE, format_results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    found = sorted(Path(argv[0]).rglob(RESULTS_FILE), key=lambda p: p.stat().st_mtime)
    if not found:
        print(f"no {RESULTS_FILE} under {argv[0]}: has a validation run finished?", file=sys.stderr)
        return 1
    print(format_results(json.loads(found[-1].read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
