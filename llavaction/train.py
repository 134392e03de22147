"""Train, validate and test video LLMs on EPIC-KITCHENS-100 shards: the LightningCLI entry point.

python -m llavaction.train fit --config experiments/demo.yaml      (the same as `python train.py ...`)
"""

import os


def main(args: list[str] | None = None):
    # Large CPU tensors (frame batches, activations in CPU runs) on transparent huge pages: far fewer page faults per
    # fresh batch buffer. Torch reads this once, at its first allocation, so it is set before torch is imported.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    from llavaction.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    main()
