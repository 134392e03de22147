"""Train, validate and test video LLMs on EPIC-KITCHENS-100 shards.

    python train.py fit --config experiments/demo.yaml
    python train.py validate --config experiments/demo.yaml --ckpt_path runs/demo/.../last.ckpt
    python train.py fit --print_config --config experiments/llavaction_7b.yaml
"""

from llavaction.cli import main

if __name__ == "__main__":
    main()
