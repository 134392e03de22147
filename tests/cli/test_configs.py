"""The experiment configs: one stacking rule, every config and ablation row resolves, the 7B recipe is the published
run."""

import warnings

import pytest
import yaml

from llavaction.cli.train import cli
from tests.helpers import ROOT

EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))


def resolved(args: list[str], capsys, expand: bool = True) -> dict:
    """The config `fit ARGS --print_config` resolves, through llavaction's CLI (its `# base:` chains expanded) or
    with the arguments as given (LightningCLI stacking the --config files itself)."""
    from llavaction.cli.train import LlavaActionCLI
    from llavaction.data.datamodule import EpicDataModule
    from llavaction.training.module import LlavaActionModule

    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        if expand:
            cli(["fit", *args, "--print_config"])
        else:
            LlavaActionCLI(LlavaActionModule, EpicDataModule, args=["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_config_resolves_as_the_explicit_stack_of_its_chain(path, capsys):
    """The one stacking rule (llavaction.utils.configs): `--config ROW` resolves to exactly what LightningCLI resolves
    from the row's chain given as repeated --config, farthest base first; and the YAML-only merge that `ablate
    --dry_run` shows gives the same value for every key the chain sets."""
    from llavaction.utils.configs import config_chain, flat, merged_config

    chain = config_chain(path)
    alone = resolved(["--config", str(path)], capsys)
    stacked = resolved([arg for config in chain for arg in ("--config", str(config))], capsys, expand=False)
    assert alone == stacked and "model" in alone
    values = flat(alone)
    for key, value in flat(merged_config(chain)).items():
        if key in values and not isinstance(value, list):  # lists of classes gain their defaults when resolved
            assert values[key] == value, key


def test_config_chains_stack_in_order(tmp_path):
    from llavaction.utils.configs import ConfigChainError, config_chain, expand_config_args

    row = ROOT / "experiments" / "ablations" / "7b" / "03_temporal_detection.yaml"
    assert [p.name for p in config_chain(row)] == [
        "trainer.yaml",
        "gpu.yaml",
        "llavaction_7b.yaml",
        "01_random_distractors.yaml",
        "02_hard_distractors.yaml",
        "03_temporal_detection.yaml",
    ]
    args = expand_config_args(["fit", "--config", str(row), f"--config={ROOT / 'experiments' / 'llavaction_7b.yaml'}"])
    assert args.count("--config") == 6  # each file once
    loop = tmp_path / "a.yaml"
    loop.write_text(f"# base: {loop}\n")
    with pytest.raises(ConfigChainError, match="loops"):
        config_chain(loop)


def test_recipe_config_is_the_published_run(capsys):
    import yaml

    with pytest.raises(SystemExit):
        cli(["fit", "--config", str(ROOT / "experiments" / "llavaction_7b.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    model, data, trainer = config["model"], config["data"], config["trainer"]
    assert data["num_frames"] == 64 and data["max_length"] == 32768 and data["prompt"]["time_instruction"]
    assert data["prior_actions"]["train_probability"] == 0.3 and data["prior_actions"]["evaluation"] == "none"
    assert model["action"] == {
        "mode": "one_token",
        "types": [97, 300, 3806],
        "head_layers": "last",
        "loss_weight": 0.1,
        "normalization": "reference",
    }
    assert model["optimizer"]["lr"] == 1e-5 and model["optimizer"]["vision_lr"] == 2e-6
    assert trainer["precision"] == "bf16-mixed" and trainer["max_epochs"] == 1
    tasks = [(s["task"], s.get("descriptions") is not None) for s in data["train"]]
    assert tasks.count(("mqa", False)) == 2 and tasks.count(("qa", True)) == 2
    assert {"temporal", "narration"} <= {t for t, _ in tasks} and ("qa", False) in tasks  # + 178K replay
    assert all(s["weight"] == "size" for s in data["train"]) and data["loader"]["samples_per_epoch"] is None


ABLATIONS = sorted((ROOT / "experiments" / "ablations").rglob("*.yaml"))


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ablation_row_instantiates_the_tiny_model(path, demo_dir):
    from llavaction.cli.train import LlavaActionCLI
    from llavaction.data.datamodule import EpicDataModule
    from llavaction.training.module import LlavaActionModule
    from llavaction.utils.configs import expand_config_args

    tiny = [
        "--model.checkpoint=null",
        "--model.preset_name=tiny",
        f"--model.tokenizer={demo_dir / 'tokenizer'}",
        "--model.compute.attn_implementation=sdpa",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.num_nodes=1",
    ]
    cli = LlavaActionCLI(
        LlavaActionModule, EpicDataModule, run=False, args=expand_config_args(["--config", str(path)]) + tiny
    )
    cli.model.configure_model()
    if cli.model.action.mode:
        assert cli.model.model.verb_head.out_features == cli.model.action.types[0]
    assert cli.datamodule.hparams.num_frames in (2, 4, 8, 16, 32, 64)
