"""`llavaction analyze`: what a model gets wrong, an HTML report of an EK-100-MQA evaluation that opens from disk
(llavaction.evaluation.report).

    llavaction analyze results/val_mqa --shards shards/val_mqa --annotations epic-kitchens-100-annotations \
        [--compare results/other_model [--intersection]] --out report/
"""

from __future__ import annotations

import sys

from llavaction.evaluation.report import ReportOptions, analyze
from llavaction.utils.options import main_of


def run(options: ReportOptions) -> int:
    result = analyze(options)
    print(f"report of {result['count']} questions -> {options.out / 'index.html'}", file=sys.stderr)
    return 0


main = main_of(ReportOptions, run, "llavaction analyze", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
