"""Train, validate and test video LLMs on EPIC-KITCHENS-100 shards (llavaction.cli.train; `llavaction train` is the
same command).

python train.py fit --config experiments/demo.yaml
python train.py fit --config experiments/demo.yaml --ckpt_path last      # resume the newest checkpoint
python train.py validate --config experiments/demo.yaml --ckpt_path last
python train.py fit --config experiments/llavaction_7b.yaml --print_config
"""

from llavaction.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
