"""Fits of the demo: validate, export and predict; bf16 precisions; action supervision; exact mid-epoch resume."""

import csv
import json
from pathlib import Path

import pytest

from llavaction.cli.train import cli
from llavaction.model.llava_video import LlavaVideoModel
from llavaction.prompts.tokenizer import load_tokenizer
from tests.fit_helpers import (
    assert_fit_consumed_the_plan,
    assert_same_curve,
    csv_logged,
    demo_args,
    read_losses,
    record_keys,
    step_checkpoint,
    step_checkpoints,
)


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
    printed = capsys.readouterr().out
    assert "validation MQA accuracy:" in printed and "; answers matching no option: " in printed
    results = json.loads(next(tmp_path.rglob("validation_results.json")).read_text())
    assert 0 <= results["val/no_option_matched"] <= results["val/questions"]
    assert results["val/questions"] == 8 and results["val/chance"] == pytest.approx(20.0)
    assert results["scoring"] == ["generate", "letter", "likelihood"]  # the demo's: the paper's rule first
    assert results["val/mqa_accuracy"] == results["val/mqa_accuracy_generate"]
    assert all(0 <= results[f"val/mqa_accuracy_{m}"] <= 100 for m in ("letter", "likelihood"))
    # every figure with its 95% interval from a bootstrap over the 2 validation videos
    for name in ("mqa_accuracy", "mqa_accuracy_letter", "mqa_accuracy_likelihood"):
        assert results[f"val/{name}_low"] <= results[f"val/{name}"] <= results[f"val/{name}_high"]
    assert results["val/mqa_accuracy_low"] == results["val/mqa_accuracy_generate_low"] and results["val/videos"] == 2
    assert [card["name"] for card in results["benchmark"].values()] == ["EK-100-MQA/annotations/K5"]
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events.parent)).Reload().Tags()["scalars"]
    assert "val/mqa_accuracy" in tags and "hp_metric" not in tags  # no placeholder -1 on TensorBoard's front page
    assert events.parent.parent.name == "lightning_logs"
    last = next(tmp_path.rglob("last.ckpt"))
    # the export is an original-layout checkpoint that loads strictly, with its tokenizer
    model = LlavaVideoModel.from_pretrained(export)
    assert load_tokenizer(export).pad_token == "<|endoftext|>" and model.config.text["num_hidden_layers"] == 4
    predict_args = [a for a in args if not a.startswith("--model.export_dir")]
    predict_args[0] = "predict"
    cli(predict_args + [f"--ckpt_path={last}", "--trainer.callbacks=[]", "--trainer.logger=false"])
    # the evaluation CLI on the Lightning checkpoint, moved away from its run folder and evaluated from another
    # folder, asks what training asked and finds what validation found
    from llavaction.cli.evaluate import main as evaluate

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
    # metrics once (benchmark.metrics): validation's figures are evaluate mqa's, intervals and breakdowns included
    same = {
        "mqa_accuracy": evaluated["accuracy"],
        "mqa_accuracy_low": evaluated["accuracy_interval"]["low"],
        "mqa_accuracy_high": evaluated["accuracy_interval"]["high"],
        "chance": evaluated["chance"],
        "questions": evaluated["count"],
        "videos": evaluated["videos"],
        "no_option_matched": evaluated["no_option_matched"],
        "parse_failures": evaluated["parse_failures"],
        "reference_exact_accuracy": evaluated["reference_exact_accuracy"],
    }
    for part, figure in evaluated["breakdown"].items():
        if figure["count"]:
            same |= {f"breakdown/{part}": figure["accuracy"], f"breakdown/{part}_low": figure["interval"]["low"]}
    assert any(name.startswith("breakdown/") for name in same)
    assert {name: results[f"val/{name}"] for name in same} == pytest.approx(same)


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

    from llavaction.cli.train import LlavaActionCLI
    from llavaction.data.datamodule import EpicDataModule
    from llavaction.training.module import LlavaActionModule
    from llavaction.utils.configs import expand_config_args

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
    assert "val/ek100/all_action_accuracy_at_1" in results
    # the unseen participant's videos are not among the test's two validation videos: not applicable, not a 0
    assert "val/ek100/unseen_action_accuracy_at_1" not in results


@pytest.mark.parametrize("workers, megabatch_steps", [(0, 0), (2, 0), (2, 2)])
def test_mid_epoch_resume_continues_the_same_curve(demo_dir, demo_shards, tmp_path, workers, megabatch_steps):
    """A fit resumed from a checkpoint written after step 4 of a 6-step epoch sees the batches the uninterrupted run
    saw, in order: identical losses at every later step (also under the reference's megabatch grouping)."""
    runs = {}
    for name in ("whole", "resumed"):
        root = tmp_path / name
        extra = [
            step_checkpoints(root, 4),
            *csv_logged(root),
            f"--data.loader.num_workers={workers}",
            f"--data.loader.megabatch_steps={megabatch_steps}",
            "--data.loader.samples_per_epoch=24",
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=10",
            "--trainer.num_sanity_val_steps=0",
        ]
        if name == "whole":
            extra.append(record_keys(root))
        else:
            extra.append(f"--ckpt_path={step_checkpoint(tmp_path / 'whole', 4)}")
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


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "qwen3_vl"])
def test_a_qwen_backbone_learns_on_the_demo(demo_dir, demo_shards, tmp_path, backbone, capsys):
    """The tiny preset of each Qwen backbone trains on the demo shards (the loss falls) and validates, with the
    action token and its heads, exactly as LLaVA-Video does."""
    args = demo_args(
        demo_dir,
        demo_shards,
        tmp_path,
        f"--model.backbone={backbone}",
        f"--model.tokenizer={demo_dir / 'tokenizer'}",
        "--model.action.mode=one_token",
        "--model.action.types=[8, 8, 64]",
        "--trainer.max_epochs=3",
        "--data.loader.samples_per_epoch=48",
        "--trainer.check_val_every_n_epoch=3",
        "--model.evaluation.mqa_scoring=[likelihood, letter]",
        *csv_logged(tmp_path),
    )
    cli(args)
    losses = list(read_losses(tmp_path).values())
    assert len(losses) == 36 and sum(losses[-6:]) / 6 < sum(losses[:6]) / 6 - 0.5, losses
    results = json.loads(next(tmp_path.rglob("validation_results.json")).read_text())
    assert results["val/questions"] == 8 and 0 <= results["val/mqa_accuracy"] <= 100
    assert "val/ek100/all_verb_accuracy_at_1" in results
