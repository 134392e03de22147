import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llavaction.cli import main as cli
from llavaction.model import LlavaVideoModel, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))


def config_chain(path: Path) -> list[str]:
    """A diff config names its base on its first line ('# base: experiments/X.yaml')."""
    first = path.read_text().splitlines()[0]
    chain = config_chain(ROOT / first.split(":", 1)[1].strip()) if first.startswith("# base:") else []
    return chain + ["--config", str(path)]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_experiment_config_parses(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["fit", *config_chain(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "model:" in capsys.readouterr().out


ABLATIONS = sorted((ROOT / "experiments" / "ablations").rglob("*.yaml"))


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ablation_row_instantiates_the_tiny_model(path, demo_dir):
    from llavaction.cli import LlavaActionCLI
    from llavaction.data.datamodule import EpicDataModule
    from llavaction.module import LlavaActionModule

    tiny = ["--model.checkpoint=null", "--model.preset_name=tiny", f"--model.tokenizer={demo_dir / 'tokenizer'}",
            "--model.attn_implementation=sdpa", "--trainer.accelerator=cpu", "--trainer.devices=1",
            "--trainer.strategy=auto", "--trainer.precision=32-true", "--trainer.num_nodes=1"]
    cli = LlavaActionCLI(LlavaActionModule, EpicDataModule, run=False, args=config_chain(path) + tiny)
    cli.model.configure_model()
    if cli.model.hparams.action_supervision:
        assert cli.model.model.verb_head.out_features == cli.model.hparams.action_types[0]
    assert cli.datamodule.hparams.num_frames in (2, 4, 8, 16, 32, 64)


def demo_args(demo_dir, demo_shards, root, *extra) -> list[str]:
    train = json.dumps([{"path": str(demo_shards["train_mqa"]), "task": "mqa"},
                        {"path": str(demo_shards["train_mqa"]), "task": "narration", "weight": 0.5}])
    return ["fit", "--config", str(ROOT / "experiments" / "demo.yaml"),
            f"--model.tokenizer={demo_dir / 'tokenizer'}", f"--data.train={train}",
            f"--data.val=[{json.dumps(str(demo_shards['validation_mqa']))}]",
            f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
            "--data.num_workers=0", "--data.batch_size=4", "--data.eval_batch_size=4", *extra]


def test_demo_fit_validate_export_predict(demo_dir, demo_shards, tmp_path, capsys):
    export = tmp_path / "export"
    cli(demo_args(demo_dir, demo_shards, tmp_path, "--trainer.max_epochs=1", "--data.samples_per_epoch=12",
                  "--trainer.check_val_every_n_epoch=1", "--model.mqa_scoring=[likelihood, letter]", f"--model.export_dir={export}"))
    assert "validation MQA accuracy:" in capsys.readouterr().out
    results = json.loads(next(tmp_path.rglob("validation_results.json")).read_text())
    assert results["val/questions"] == 8 and results["val/chance"] == pytest.approx(20.0)
    assert results["val/mqa_accuracy"] == results["val/mqa_accuracy_likelihood"]
    assert 0 <= results["val/mqa_accuracy_letter"] <= 100
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    last = next(tmp_path.rglob("last.ckpt"))
    # the export is an original-layout checkpoint that loads strictly, with its tokenizer
    model = LlavaVideoModel.from_pretrained(export)
    assert load_tokenizer(export).pad_token == "<|endoftext|>" and model.config.text["num_hidden_layers"] == 4
    args = demo_args(demo_dir, demo_shards, tmp_path / "predict")
    args[0] = "predict"
    cli(args + [f"--ckpt_path={last}", "--trainer.callbacks=[]", "--trainer.logger=false"])


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_precisions_fit_and_validate(demo_dir, demo_shards, tmp_path, precision, capsys):
    cli(demo_args(demo_dir, demo_shards, tmp_path, f"--trainer.precision={precision}", "--trainer.max_epochs=1",
                  "--data.samples_per_epoch=8", "--trainer.check_val_every_n_epoch=1",
                  "--model.mqa_scoring=[letter, likelihood]"))
    assert "validation MQA accuracy:" in capsys.readouterr().out


@pytest.mark.parametrize("pack", [False, True])
def test_action_supervision_training(demo_dir, demo_shards, tmp_path, pack):
    cli(demo_args(demo_dir, demo_shards, tmp_path, "--trainer.max_epochs=1", "--data.samples_per_epoch=8",
                  "--trainer.check_val_every_n_epoch=1", "--model.action_supervision=three_tokens",
                  "--model.action_types=[8, 8, 64]", "--model.action_head_layers=all",
                  f"--model.pack_sequences={str(pack).lower()}"))
    results = json.loads(next(tmp_path.rglob("validation_results.json")).read_text())
    assert 0 <= results["val/ek100/all_verb_accuracy_at_1"] <= 100
    assert "val/ek100/unseen_action_accuracy_at_1" in results


def read_losses(root: Path) -> dict[int, float]:
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def run_fsdp(demo_dir, demo_shards, root, *extra):
    args = demo_args(
        demo_dir, demo_shards, root,
        "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
        "--trainer.strategy.data_parallel_size=2", "--trainer.strategy.tensor_parallel_size=1",
        "--trainer.devices=2", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}", "--trainer.log_every_n_steps=1", "--data.samples_per_epoch=24",
        "--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=1", *extra,
    )
    root.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_fsdp2_two_processes_resume_from_sharded_checkpoint(demo_dir, demo_shards, tmp_path):
    whole = run_fsdp(demo_dir, demo_shards, tmp_path / "whole")
    assert "validation MQA accuracy:" in whole.stdout
    first_epoch = sorted((tmp_path / "whole").rglob("epoch=0-*.ckpt"))
    assert first_epoch and first_epoch[0].is_dir()  # a sharded (distributed) checkpoint
    run_fsdp(demo_dir, demo_shards, tmp_path / "resumed", f"--ckpt_path={first_epoch[0]}")
    uninterrupted, resumed = read_losses(tmp_path / "whole"), read_losses(tmp_path / "resumed")
    second_epoch = [s for s in resumed if s >= min(resumed)]
    assert second_epoch and min(resumed) > 0
    for step in second_epoch:
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-5, abs=1e-6)


def test_action_supervision_needs_class_labels(demo_dir):
    from types import SimpleNamespace

    from llavaction.module import LlavaActionModule

    module = LlavaActionModule(tokenizer=str(demo_dir / "tokenizer"), action_supervision="one_token",
                               action_types=(8, 8, 64))
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(has_class_labels=lambda: False))
    with pytest.raises(ValueError, match="no training source carries verb/noun classes"):
        module.setup("fit")


def test_block_switches_apply_checkpointing_then_compilation(demo_dir, monkeypatch):
    from llavaction import sharding
    from llavaction.module import LlavaActionModule

    calls = []
    monkeypatch.setattr(sharding, "checkpoint_blocks", lambda model: calls.append("checkpoint"))
    monkeypatch.setattr(sharding, "compile_blocks", lambda model: calls.append("compile"))
    module = LlavaActionModule(tokenizer=str(demo_dir / "tokenizer"), activation_checkpointing=True,
                               compile_blocks=True)
    module.configure_model()
    assert calls == ["checkpoint", "compile"]
