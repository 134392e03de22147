"""Train, validate and test video LLMs on EPIC-KITCHENS-100 shards.

python train.py fit --config experiments/demo.yaml
python train.py fit --config experiments/demo.yaml --ckpt_path last      # resume the newest checkpoint
python train.py validate --config experiments/demo.yaml --ckpt_path last
python train.py fit --config experiments/llavaction_7b.yaml --print_config
"""

from llavaction.train import main

if __name__ == "__main__":
    raise SystemExit(main())
