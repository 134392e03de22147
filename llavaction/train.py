"""Train, validate and test video LLMs on EPIC-KITCHENS-100 shards: the LightningCLI entry point.

    python -m llavaction.train fit --config experiments/demo.yaml      (the same as `python train.py ...`)

A known error before or during the run (missing shards, a bad config value, a bad sample in evaluation) is one line,
`error: ...`, exit status 2; LLAVACTION_DEBUG=1 shows its traceback.
"""

import os


def main(args: list[str] | None = None) -> int:
    # Large CPU tensors (frame batches, activations in CPU runs) on transparent huge pages: far fewer page faults per
    # fresh batch buffer. Torch reads this once, at its first allocation, so it is set before torch is imported.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    from llavaction.cli import main as cli_main
    from llavaction.cli_errors import run_cli

    def run() -> int:
        cli_main(args)
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
