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


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_experiment_config_parses(path, capsys):
    """Each config alone: its chain of bases (`# base:` lines) is stacked by the CLI."""
    with pytest.raises(SystemExit) as exit_info:
        cli(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "model:" in capsys.readouterr().out


def test_config_chains_stack_in_order(tmp_path):
    from llavaction.configs import ConfigChainError, config_chain, expand_config_args

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
    from llavaction.cli import LlavaActionCLI
    from llavaction.configs import expand_config_args
    from llavaction.data.datamodule import EpicDataModule
    from llavaction.module import LlavaActionModule

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


def demo_args(demo_dir, demo_shards, root, *extra) -> list[str]:
    train = json.dumps(
        [
            {"path": str(demo_shards["train_mqa"]), "task": "mqa"},
            {"path": str(demo_shards["train_mqa"]), "task": "narration", "weight": 0.5},
        ]
    )
    return [
        "fit",
        "--config",
        str(ROOT / "experiments" / "demo.yaml"),
        f"--model.tokenizer={demo_dir / 'tokenizer'}",
        f"--data.train={train}",
        f"--data.val=[{json.dumps(str(demo_shards['validation_mqa']))}]",
        f"--trainer.default_root_dir={root}",
        "--data.loader.num_workers=0",
        "--data.loader.batch_size=4",
        "--data.loader.eval_batch_size=4",
        *extra,
    ]


def test_demo_fit_validate_export_predict(demo_dir, demo_shards, tmp_path, capsys, monkeypatch):
    export = tmp_path / "export"
    # the tokenizer given relative to where training starts, as a user writes it in a config
    monkeypatch.chdir(demo_dir.parent)
    args = demo_args(
        demo_dir,
        demo_shards,
        tmp_path / "run",
        "--trainer.max_epochs=1",
        "--data.loader.samples_per_epoch=12",
        "--trainer.check_val_every_n_epoch=1",
        f"--model.export_dir={export}",
        f"--model.tokenizer={demo_dir.name}/tokenizer",
    )
    cli(args)
    assert "validation MQA accuracy:" in capsys.readouterr().out
    results = json.loads(next(tmp_path.rglob("validation_results.json")).read_text())
    assert results["val/questions"] == 8 and results["val/chance"] == pytest.approx(20.0)
    assert results["scoring"] == ["generate", "letter", "likelihood"]  # the demo's: the paper's rule first
    assert results["val/mqa_accuracy"] == results["val/mqa_accuracy_generate"]
    assert all(0 <= results[f"val/mqa_accuracy_{m}"] <= 100 for m in ("letter", "likelihood"))
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    last = next(tmp_path.rglob("last.ckpt"))
    # the export is an original-layout checkpoint that loads strictly, with its tokenizer
    model = LlavaVideoModel.from_pretrained(export)
    assert load_tokenizer(export).pad_token == "<|endoftext|>" and model.config.text["num_hidden_layers"] == 4
    predict_args = [a for a in args if not a.startswith("--model.export_dir")]
    predict_args[0] = "predict"
    cli(predict_args + [f"--ckpt_path={last}", "--trainer.callbacks=[]", "--trainer.logger=false"])
    # the evaluation CLI on the Lightning checkpoint, moved away from its run folder and evaluated from another
    # folder, asks what training asked and finds what validation found
    from llavaction.evaluate import main as evaluate

    moved = tmp_path / "elsewhere" / "copy.ckpt"
    moved.parent.mkdir()
    last.rename(moved)
    monkeypatch.chdir(moved.parent)
    questions = next(Path(demo_dir).rglob("validation_mqa.jsonl"))
    import torch

    loads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: loads.append(str(path)) or real_load(path, *a, **k))
    assert (
        evaluate(
            [
                "mqa",
                "--questions",
                str(questions),
                "--shards",
                str(demo_shards["validation_mqa"]),
                "--checkpoint",
                str(moved),
                "--max-new-tokens",
                "24",
                "--num-workers",
                "0",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert loads.count(str(moved)) == 1  # the checkpoint is read once
    # a checkpoint written before checkpoints carried their architecture and tokenizer still evaluates from the
    # folder it was trained in (its hyperparameters' relative tokenizer path)
    state = real_load(moved, map_location="cpu", weights_only=False)
    del state["llavaction_tokenizer_files"], state["hyper_parameters"]["architecture"]
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    monkeypatch.chdir(demo_dir.parent)
    args = ["mqa", "--questions", str(questions), "--shards", str(demo_shards["validation_mqa"])]
    args += ["--checkpoint", str(older), "--max-new-tokens", "24", "--num-workers", "0", "--out", str(tmp_path / "old")]
    assert evaluate(args) == 0
    assert json.loads((tmp_path / "old" / "results.json").read_text())["accuracy"] == pytest.approx(
        results["val/mqa_accuracy_generate"]
    )
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["settings"]["num_frames"] == 8 and evaluated["count"] == 8
    assert evaluated["config"]["precision"] == "32-true"  # the precision it was trained at
    assert evaluated["accuracy"] == pytest.approx(results["val/mqa_accuracy_generate"])


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_precisions_fit_and_validate(demo_dir, demo_shards, tmp_path, precision, capsys):
    cli(
        demo_args(
            demo_dir,
            demo_shards,
            tmp_path,
            f"--trainer.precision={precision}",
            "--trainer.max_epochs=1",
            "--data.loader.samples_per_epoch=8",
            "--trainer.check_val_every_n_epoch=1",
        )
    )
    assert "validation MQA accuracy:" in capsys.readouterr().out


def llm_weights_changed_by_one_step(demo_dir, demo_shards, root, precision) -> float:
    """The share of the LLM's matrix entries that one AdamW step at lr 1e-5 changes."""
    import torch

    from llavaction.cli import LlavaActionCLI
    from llavaction.configs import expand_config_args
    from llavaction.data.datamodule import EpicDataModule
    from llavaction.module import LlavaActionModule

    args = demo_args(
        demo_dir,
        demo_shards,
        root,
        f"--trainer.precision={precision}",
        "--trainer.max_steps=1",
        "--trainer.gradient_clip_val=null",
        "--model.optimizer.lr=1e-5",
        "--model.optimizer.weight_decay=0",
        "--model.optimizer.warmup_ratio=0",
        "--trainer.check_val_every_n_epoch=100",
    )
    initial = LlavaActionCLI(LlavaActionModule, EpicDataModule, run=False, args=expand_config_args(args[1:]))
    initial.model.configure_model()
    # decoder-layer matrices: every entry gets a gradient (unlike embedding rows of tokens absent from the batch)
    before = {k: v.clone() for k, v in initial.model.model.llm.named_parameters() if v.ndim == 2 and ".layers." in k}
    trained = cli(args).model.model.llm
    changed = total = 0
    for name, weight in trained.named_parameters():
        if name in before:
            start = before[name].to(weight.dtype)
            changed += int((weight.detach() != start).sum())
            total += weight.numel()
    assert total and torch.is_tensor(weight)
    return changed / total


def test_recipe_precision_keeps_small_updates(demo_dir, demo_shards, tmp_path):
    """bf16 compute with fp32 master weights (bf16-mixed, the recipe) applies an AdamW step of lr 1e-5 to (nearly)
    every weight; bf16-true weights round most such updates away."""
    mixed = llm_weights_changed_by_one_step(demo_dir, demo_shards, tmp_path / "mixed", "bf16-mixed")
    true = llm_weights_changed_by_one_step(demo_dir, demo_shards, tmp_path / "true", "bf16-true")
    assert mixed > 0.95 and true < 0.5, (mixed, true)


@pytest.mark.parametrize("pack", [False, True])
def test_action_supervision_training(demo_dir, demo_shards, tmp_path, pack):
    cli(
        demo_args(
            demo_dir,
            demo_shards,
            tmp_path,
            "--trainer.max_epochs=1",
            "--data.loader.samples_per_epoch=8",
            "--trainer.check_val_every_n_epoch=1",
            "--model.action.mode=three_tokens",
            "--model.action.types=[8, 8, 64]",
            "--model.action.head_layers=all",
            f"--model.compute.pack_sequences={str(pack).lower()}",
            "--model.evaluation.mqa_scoring=[letter]",
        )
    )
    results = json.loads(next(tmp_path.rglob("validation_results.json")).read_text())
    assert 0 <= results["val/ek100/all_verb_accuracy_at_1"] <= 100
    assert "val/ek100/unseen_action_accuracy_at_1" in results


def read_losses(root: Path) -> dict[int, float]:
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def step_checkpoints(root: Path, every: int) -> str:
    """A config diff adding a checkpoint every `every` steps in root/steps (mid-epoch ones)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "step_checkpoints.yaml"
    path.write_text(f"""trainer:
  callbacks+:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{every_n_train_steps: {every}, save_top_k: -1, dirpath: {root / "steps"}, filename: "{{step}}"}}
""")
    return f"--config={path}"


def csv_logged(root: Path) -> list[str]:
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--trainer.log_every_n_steps=1",
    ]


def record_keys(root: Path) -> str:
    """A config diff recording every training batch's keys in root (tests.helpers.RecordKeys)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "record_keys.yaml"
    path.write_text(f"""trainer:
  callbacks+:
    - class_path: tests.helpers.RecordKeys
      init_args: {{folder: {root}}}
""")
    return f"--config={path}"


def assert_fit_consumed_the_plan(fit_args: list[str], root: Path, epochs: int, world: int = 1) -> None:
    """The keys each rank's training batches held, in order, are the epoch plan's (python -m llavaction.data.plan
    with the fit's own arguments)."""
    from llavaction.data.plan import main as plan

    plan_args = [a for a in fit_args[1:] if not a.startswith("--ckpt_path")]
    for epoch in range(epochs):
        out = root / f"plan-{epoch}.jsonl"
        assert plan([*plan_args, f"--epoch={epoch}", f"--out={out}"]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for rank in range(world):
            planned = {}
            for row in rows:
                if row["rank"] == rank:
                    planned.setdefault(row["batch"], []).append([row["key"], row["padding"]])
            consumed = [json.loads(line) for line in (root / f"keys-rank{rank}.jsonl").read_text().splitlines()]
            consumed = [c["rows"] for c in consumed if c["epoch"] == epoch]
            assert consumed == [planned[b] for b in sorted(planned)], (epoch, rank)


def assert_same_curve(whole: dict[int, float], resumed: dict[int, float], after: int) -> None:
    assert min(resumed) == after and set(resumed) == {s for s in whole if s >= after}
    for step in resumed:
        assert resumed[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6), step


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_continues_the_same_curve(demo_dir, demo_shards, tmp_path, workers):
    """A fit resumed from a checkpoint written after step 4 of a 6-step epoch sees the batches the uninterrupted run
    saw, in order: identical losses at every later step."""
    runs = {}
    for name in ("whole", "resumed"):
        root = tmp_path / name
        extra = [
            step_checkpoints(root, 4),
            *csv_logged(root),
            f"--data.loader.num_workers={workers}",
            "--data.loader.samples_per_epoch=24",
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=10",
            "--trainer.num_sanity_val_steps=0",
        ]
        if name == "whole":
            extra.append(record_keys(root))
        else:
            extra.append(f"--ckpt_path={tmp_path / 'whole' / 'steps' / 'step=4.ckpt'}")
        args = demo_args(demo_dir, demo_shards, root, *extra)
        cli(args)
        runs[name] = read_losses(root)
        if name == "whole":  # the batches a fit consumed are the epoch plan's, in order
            assert_fit_consumed_the_plan(args, root, epochs=2)
            # TensorBoard's (here CSV's) per-epoch accounting: the plan's padding rows, and every skip reason
            rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
            logged = [float(r["train/padding_samples"]) for r in rows if r.get("train/padding_samples")]
            planned = [
                sum(json.loads(line)["padding"] for line in (root / f"plan-{e}.jsonl").read_text().splitlines())
                for e in range(2)
            ]
            assert logged == planned
            reasons = ("unreadable_shard", "bad_sample", "undecodable_frame")
            assert all(f"train/skipped_samples/{reason}" in rows[0] for reason in reasons)
    assert_same_curve(runs["whole"], runs["resumed"], after=4)


def run_fsdp(demo_dir, demo_shards, root, *extra):
    args = demo_args(
        demo_dir,
        demo_shards,
        root,
        "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
        "--trainer.strategy.data_parallel_size=2",
        "--trainer.strategy.tensor_parallel_size=1",
        "--trainer.devices=2",
        *csv_logged(root),
        "--data.loader.samples_per_epoch=24",
        "--trainer.max_epochs=2",
        "--trainer.check_val_every_n_epoch=1",
        "--model.evaluation.mqa_scoring=[letter]",
        *extra,
    )
    root.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "llavaction.train", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result, args


@pytest.mark.slow
def test_fsdp2_two_processes_resume_mid_epoch_from_sharded_checkpoint(demo_dir, demo_shards, tmp_path):
    """World size 2 (FSDP2 on gloo): 3 steps an epoch per rank; the sharded checkpoint after step 2 resumes the
    same curve."""
    root = tmp_path / "whole"
    whole, args = run_fsdp(demo_dir, demo_shards, root, step_checkpoints(root, 2), record_keys(root))
    assert "validation MQA accuracy:" in whole.stdout
    assert_fit_consumed_the_plan(args, root, epochs=2, world=2)
    checkpoint = tmp_path / "whole" / "steps" / "step=2.ckpt"
    assert checkpoint.is_dir()  # a sharded (distributed) checkpoint
    run_fsdp(demo_dir, demo_shards, tmp_path / "resumed", f"--ckpt_path={checkpoint}")
    assert_same_curve(read_losses(tmp_path / "whole"), read_losses(tmp_path / "resumed"), after=2)


def test_action_supervision_needs_class_labels(demo_dir):
    from types import SimpleNamespace

    from llavaction.args import ActionSupervision
    from llavaction.module import LlavaActionModule

    module = LlavaActionModule(
        tokenizer=str(demo_dir / "tokenizer"), action=ActionSupervision(mode="one_token", types=(8, 8, 64))
    )
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(has_class_labels=lambda: False))
    with pytest.raises(ValueError, match="no training source carries verb/noun classes"):
        module.setup("fit")


def test_block_switches_apply_checkpointing_then_compilation(demo_dir, monkeypatch):
    from llavaction import sharding
    from llavaction.args import ComputeOptions
    from llavaction.module import LlavaActionModule

    calls = []
    monkeypatch.setattr(sharding, "checkpoint_blocks", lambda model: calls.append("checkpoint"))
    monkeypatch.setattr(sharding, "compile_blocks", lambda model: calls.append("compile"))
    module = LlavaActionModule(
        tokenizer=str(demo_dir / "tokenizer"),
        compute=ComputeOptions(activation_checkpointing=True, compile_blocks=True),
    )
    module.configure_model()
    assert calls == ["checkpoint", "compile"]
