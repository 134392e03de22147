"""The experiment configs: one stacking rule, every config and ablation row resolves, the 7B recipe is the published
run."""

import warnings

import pytest
import yaml

from llavaction.cli.train import cli
from tests.helpers import ROOT, one_line_exit

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
    assert model["preset_name"] is None and model["checkpoint"] == "checkpoints/LLaVA-Video-7B-Qwen2"
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
    # validation once, at the end of the one epoch, as the reference
    assert trainer["val_check_interval"] in (None, 1.0) and trainer["check_val_every_n_epoch"] == 1
    tasks = [(s["task"], s.get("descriptions") is not None) for s in data["train"]]
    assert tasks.count(("mqa", False)) == 2 and tasks.count(("qa", True)) == 2
    assert {"temporal", "narration"} <= {t for t, _ in tasks} and ("qa", False) in tasks  # + 178K replay
    assert all(s["weight"] == "size" for s in data["train"]) and data["loader"]["samples_per_epoch"] is None


def test_a_later_list_of_training_sources_replaces_the_earlier_whole(capsys):
    """A replacing source takes TaskSource's defaults for what it does not name, not the fields of the earlier
    source at its position: the demo's hard-distractor row does not keep the random row's question file."""
    demo = ROOT / "experiments" / "ablations" / "demo"
    hard = resolved(["--config", str(demo / "02_hard_distractors.yaml")], capsys)["data"]["train"]
    assert [s["questions"] for s in hard] == ["demo_data/questions/train_mqa.jsonl"]
    given = resolved(["--config", str(demo / "01_random_distractors.yaml"), '--data.train=[{"path": "x"}]'], capsys)
    assert given["data"]["train"] == [
        {"path": "x", "task": "mqa", "weight": 1.0, "descriptions": None, "questions": None, "frames": None}
    ]
    appended = resolved(["--config", str(demo / "01_random_distractors.yaml"), '--data.train+={"path": "x"}'], capsys)
    assert [s["questions"] for s in appended["data"]["train"]] == ["demo_data/questions/train_mqa_random.jsonl", None]


ABLATIONS = sorted((ROOT / "experiments" / "ablations").rglob("*.yaml"))
RECIPES = [
    ROOT / "experiments" / name
    for name in ("qwen2_5_vl_7b.yaml", "qwen3_vl_8b.yaml", "internvl3_5_8b.yaml", "demo_qwen2_5_vl.yaml")
]
# each row on each backbone: the row's own config, and with `--model.backbone` (one override, the tiny preset)
ROWS_ON_BACKBONES = (
    [(row, None) for row in ABLATIONS]
    + [(row, backbone) for row in ABLATIONS if "7b" in row.parts for backbone in ("qwen2_5_vl", "qwen3_vl", "internvl")]
    + [(recipe, None) for recipe in RECIPES]
)


def tiny_cli(path, demo_dir, backbone: str | None):
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
    ] + ([f"--model.backbone={backbone}"] if backbone else [])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return LlavaActionCLI(
            LlavaActionModule, EpicDataModule, run=False, args=expand_config_args(["--config", str(path)]) + tiny
        )


@pytest.mark.parametrize(
    "path, backbone", ROWS_ON_BACKBONES, ids=lambda v: str(v.relative_to(ROOT)) if hasattr(v, "parts") else str(v)
)
def test_every_row_and_recipe_instantiates_the_tiny_model_of_its_backbone(path, backbone, demo_dir):
    cli = tiny_cli(path, demo_dir, backbone)
    cli.model.configure_model()
    if cli.model.action.mode:
        assert cli.model.model.verb_head.out_features == cli.model.action.types[0]
    assert cli.datamodule.hparams.num_frames in (2, 4, 8, 16, 32, 64)
    named = {"qwen3": "qwen3_vl", "qwen2_5": "qwen2_5_vl", "internvl": "internvl"}
    expected = backbone or next((family for part, family in named.items() if part in path.name), None)
    assert cli.model.family.name == (expected or "llava_video")
    assert cli.datamodule.chat_format == cli.model.config.chat_format()  # the data reads samples as the model does


def test_options_a_backbone_lacks_are_refused_in_one_line(demo_dir, capsys):
    from llavaction.cli.train import main

    base = ["fit", "--config", str(ROOT / "experiments" / "demo_qwen2_5_vl.yaml"), "--print_config"]
    for extra, message in (
        (["--model.action.mode=newline"], "'newline' reads LLaVA-Video's newline token"),
        (
            ["--model.family_options={spatial_pool_mode: average}"],
            "model.family_options ['spatial_pool_mode']: not qwen2_5_vl settings (it has: none)",
        ),
        (["--model.backbone=qwen4"], "--model.backbone: expected one of internvl, llava_video, qwen2_5_vl, qwen3_vl"),
    ):
        args = [*base[:-1], f"--model.tokenizer={demo_dir / 'tokenizer'}", *extra]
        assert message in one_line_exit(capsys, lambda args=args: main(args))


def test_no_preset_and_no_checkpoint_is_refused_in_one_line(demo_dir, capsys):
    from llavaction.cli.train import main

    args = ["fit", "--config", str(ROOT / "experiments" / "demo.yaml"), f"--model.tokenizer={demo_dir / 'tokenizer'}"]
    error = one_line_exit(capsys, lambda: main([*args, "--model.preset_name=null"]))
    assert "model.preset_name is null and no model.checkpoint is given" in error
