"""Train, validate and test video LLMs on EPIC-KITCHENS-100 shards.

    python train.py fit --config experiments/demo.yaml
    python train.py validate --config experiments/demo.yaml --ckpt_path runs/demo/.../last.ckpt
    python train.py fit --print_config --config experiments/llavaction_7b.yaml
"""

import os

# Large CPU tensors (frame batches, activations in CPU runs) on transparent huge pages: far fewer page faults per
# fresh batch buffer. Torch reads this once, at its first allocation, so it is set before anything imports torch.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from llavaction.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
