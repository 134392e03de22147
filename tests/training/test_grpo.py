"""The GRPO stage through `train.py fit`: a few steps on every backbone's tiny preset (each with other options), an
exact mid-epoch resume, a start from a supervised run's `.ckpt` whose checkpoints load wherever an SFT one does, and
bad inputs refused in one line before any rollout."""

import json
import subprocess
import sys

import pytest
import torch

from llavaction.cli.train import cli
from tests.fit_helpers import (
    csv_logged,
    demo_args,
    grpo_args,
    read_losses,
    read_metrics,
    step_checkpoint,
    step_checkpoints,
)
from tests.helpers import ROOT, one_line_exit

FIGURES = [
    "rl/reward",
    "rl/accuracy",
    "rl/reward/accuracy",
    "rl/frac_all_correct",
    "rl/frac_all_wrong",
    "rl/kl",
    "rl/entropy",
    "rl/clip_fraction",
    "rl/completion_length",
    "rl/no_option_matched",
    "rl/zero_variance_groups",
    "rl/time/push",
    "rl/time/rollout",
    "rl/time/reference",
    "rl/time/update",
]

# each backbone with other options, so that each path runs once
BACKBONES = {
    "llava_video": [
        "--model.rewards.weights={accuracy: 1.0, temporal: 1.0}",
        "--model.objective.beta=0.04",
        "--model.rollout.dynamic_sampling=refill",
        "--model.rollout.refill_attempts=2",
    ],
    "qwen2_5_vl": ["--model.objective.loss=gspo", "--model.objective.scale_rewards=batch"],
    "qwen3_vl": ["--model.objective.loss=sequence", "--model.objective.ppo_epochs=2"],
    "internvl": [
        "--model.reasoning=true",
        "--model.rewards.weights={accuracy: 1.0, format: 1.0}",
        "--model.objective.sft_weight=0.5",
        "--model.rollout.dynamic_sampling=skip",
    ],
}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_grpo_steps_and_validates_on_every_backbone(backbone, demo_dir, demo_shards, tmp_path, capsys):
    args = grpo_args(
        demo_dir,
        demo_shards,
        tmp_path,
        f"--model.backbone={backbone}",
        "--data.loader.samples_per_epoch=4",
        "--trainer.check_val_every_n_epoch=1",
        "--model.log_completions_every_n_steps=1",
        *csv_logged(tmp_path),
        *BACKBONES[backbone],
    )
    cli(args)
    figures = read_metrics(tmp_path)
    steps = 4 if backbone == "qwen3_vl" else 2  # two ppo epochs: two optimizer steps a batch
    assert set(FIGURES) <= set(figures), sorted(set(FIGURES) - set(figures))
    assert len(figures["rl/reward"]) == 2 and all(0 <= v <= 2 for v in figures["rl/reward"].values())
    assert all(t > 0 for t in figures["rl/time/rollout"].values())
    assert all(0 <= v < 10 for name in ("rl/entropy", "rl/kl") for v in figures[name].values())  # finite, not NaN
    if "--model.objective.beta=0.04" in BACKBONES[backbone]:
        assert "rl/reward/temporal" in figures and all(t > 0 for t in figures["rl/time/reference"].values())
        assert all(m > 0 for m in figures["rl/reference_memory_gib"].values())
    else:
        assert "rl/reference_memory_gib" not in figures
    results = json.loads(next(tmp_path.rglob("validation_results.json")).read_text())
    assert results["val/questions"] == 8 and results["step"] == steps
    assert "validation MQA accuracy:" in capsys.readouterr().out
    if "--model.reasoning=true" in BACKBONES[backbone]:  # evaluate mqa would ask without the reasoning format
        from llavaction.cli.evaluate import main as evaluate

        questions = next(demo_dir.rglob("validation_mqa.jsonl"))
        ask = ["mqa", "--questions", str(questions), "--shards", str(demo_shards["validation_mqa"])]
        ask += ["--checkpoint", str(tmp_path / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "eval")]
        assert "trained to reason in <think> </think>" in one_line_exit(capsys, lambda: evaluate(ask))


def test_a_resumed_run_samples_and_trains_as_the_uninterrupted_run(demo_dir, demo_shards, tmp_path):
    """A run resumed from its checkpoint after 2 of 4 batches (two optimizer steps each) draws the same rollouts
    (rewards, lengths, losses at every later step) and ends with the same weights; a batch whose groups are all
    skipped trains on a loss of 0, not NaN."""
    runs = {}
    for name in ("whole", "resumed"):
        root = tmp_path / name
        extra = [
            step_checkpoints(root, 4),
            *csv_logged(root),
            "--model.objective.ppo_epochs=2",
            "--model.objective.beta=0.04",
            "--model.objective.sft_weight=0.5",  # a gradient even where the random model's rewards are all 0
            "--model.rollout.dynamic_sampling=refill",
            "--model.rollout.refill_attempts=1",
        ]
        if name == "resumed":
            extra.append(f"--ckpt_path={step_checkpoint(tmp_path / 'whole', 4)}")
        cli(grpo_args(demo_dir, demo_shards, root, *extra))
        runs[name] = (read_metrics(root), read_losses(root), next(root.rglob("last.ckpt")))
    (whole, whole_losses, whole_last), (resumed, resumed_losses, resumed_last) = runs["whole"], runs["resumed"]
    for figure in ("rl/reward", "rl/completion_length", "rl/entropy", "rl/zero_variance_groups"):
        later = {step: value for step, value in whole[figure].items() if step >= min(resumed[figure])}
        assert resumed[figure] == pytest.approx(later, rel=1e-6), figure
    assert len(resumed["rl/reward"]) == 2 and resumed_losses == pytest.approx(
        {s: v for s, v in whole_losses.items() if s in resumed_losses}, rel=1e-5
    )
    a = torch.load(whole_last, map_location="cpu", weights_only=False)
    b = torch.load(resumed_last, map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.isfinite(value).all() and torch.allclose(value, b["state_dict"][key], atol=1e-6), key


@pytest.fixture(scope="module")
def sft_checkpoint(demo_dir, demo_shards, tmp_path_factory):
    """A supervised demo run's last.ckpt (tiny LLaVA-Video, one short epoch)."""
    root = tmp_path_factory.mktemp("sft")
    cli(demo_args(demo_dir, demo_shards, root, "--trainer.max_epochs=1", "--data.loader.samples_per_epoch=8"))
    return next(root.rglob("last.ckpt"))


def test_grpo_from_a_supervised_checkpoint_loads_everywhere(sft_checkpoint, demo_dir, demo_shards, tmp_path):
    """GRPO starts from an SFT .ckpt (its weights, tokenizer and format); its checkpoints then evaluate, export,
    predict and resume with --ckpt_path last; an SFT fit starts from the same .ckpt alike."""
    from llavaction.cli.evaluate import main as evaluate
    from llavaction.cli.export import main as export

    root = tmp_path / "grpo"
    start = [f"--model.checkpoint={sft_checkpoint}", "--model.tokenizer=null", "--data.loader.samples_per_epoch=4"]
    cli(grpo_args(demo_dir, demo_shards, root, *start))
    last = root / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["_class_path"] == "llavaction.training.grpo.GRPOModule"  # the recipe's path
    assert (
        state["hyper_parameters"]["checkpoint"] == str(sft_checkpoint) and "tokenizer" not in state["hyper_parameters"]
    )
    questions = next(demo_dir.rglob("validation_mqa.jsonl"))
    common = ["--questions", str(questions), "--shards", str(demo_shards["validation_mqa"])]
    common += ["--max-new-tokens", "6", "--num-workers", "0"]
    assert evaluate(["mqa", *common, "--checkpoint", str(last), "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["count"] == 8
    assert export(["--checkpoint", str(last), "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "config.json").exists()
    predict = grpo_args(demo_dir, demo_shards, root, *start, "--ckpt_path=last", "--trainer.logger=false")
    predict[0] = "predict"
    cli([*predict, "--trainer.callbacks=[]"])
    cli(grpo_args(demo_dir, demo_shards, root, *start, "--ckpt_path=last", "--trainer.max_epochs=2"))
    resumed = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 4 and state["global_step"] == 2
    # a supervised fit starts from the .ckpt alike: at learning rate 0 its checkpoint holds the start's weights
    sft = tmp_path / "sft_again"
    frozen = ["--model.optimizer.lr=0", "--model.optimizer.vision_lr=0", "--trainer.max_steps=1"]
    cli(demo_args(demo_dir, demo_shards, sft, *start[:2], *frozen))
    started = torch.load(sft / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    source = torch.load(sft_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert started.keys() == source.keys()
    assert all(torch.equal(value, source[key]) for key, value in started.items())


def refused(capsys, args) -> str:
    from llavaction.cli.train import main

    return one_line_exit(capsys, lambda: main(args))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.rollout.group_size=1"], "model.rollout.group_size must be an integer >= 2, got 1"),
        (["--model.rollout.temperature=0"], "model.rollout.temperature 0 samples 4 equal completions"),
        (["--model.objective.beta=-0.1"], "model.objective.beta must be a number >= 0"),
        (["--model.objective.epsilon_low=-0.2"], "model.objective.epsilon_low must be a number >= 0"),
        (["--model.objective.epsilon_high=-1"], "model.objective.epsilon_high must be a number >= 0"),
        (["--model.optimizer.lr=-1e-6"], "model.optimizer.lr must be a number >= 0"),
        (["--model.rollout.max_new_tokens=0"], "model.rollout.max_new_tokens must be an integer >= 1"),
        (["--model.rewards.weights={acuracy: 1.0}"], "unknown reward 'acuracy'; known: accuracy, format, temporal"),
        (["--model.backbone=qwen2_5_vl"], "is a llava_video checkpoint but model.backbone is qwen2_5_vl"),
        (["--model.rollout.group_sise=4"], "error: unrecognized arguments: --model.rollout.group_sise=4"),
    ],
)
def test_bad_options_are_refused_in_one_line(extra, message, sft_checkpoint, demo_dir, demo_shards, tmp_path, capsys):
    start = [f"--model.checkpoint={sft_checkpoint}", "--model.tokenizer=null"] if "backbone" in extra[0] else []
    assert message in refused(capsys, grpo_args(demo_dir, demo_shards, tmp_path, *start, *extra))
    assert not (tmp_path / "checkpoints").exists()


def test_training_data_without_answers_or_not_mqa_is_refused_before_any_rollout(
    demo_dir, demo_questions, demo_shards, tmp_path, capsys
):
    unanswered = tmp_path / "unanswered.jsonl"
    lines = demo_questions["train_mqa"].read_text().splitlines()
    records = [json.loads(line) for line in lines]
    records[2].pop("answer_index")
    unanswered.write_text("".join(json.dumps(r) + "\n" for r in records))
    source = {"frames": str(demo_shards["train_mqa"]), "questions": str(unanswered), "task": "mqa", "weight": 1.0}
    args = grpo_args(demo_dir, demo_shards, tmp_path, f"--data.train=[{json.dumps(source)}]")
    assert f"{unanswered}:3: question {records[2]['narration_id']} has no answer_index" in refused(capsys, args)
    narration = json.dumps([{"path": str(demo_shards["train_mqa"]), "task": "narration"}])
    args = grpo_args(demo_dir, demo_shards, tmp_path, f"--data.train={narration}")
    assert "is task 'narration': the GRPO stage learns from multiple-choice questions' rewards only" in refused(
        capsys, args
    )
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_two_process_fsdp2_grpo(demo_dir, demo_shards, tmp_path):
    """GRPO under FSDP2 on two gloo processes: generation on sharded parameters, the reference sharded alike, a
    checkpoint that resumes the same rollouts."""
    from tests.helpers import free_port

    def run(root, *extra):
        args = grpo_args(
            demo_dir,
            demo_shards,
            root,
            *csv_logged(root),
            "--trainer.devices=2",
            "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
            "--trainer.strategy.data_parallel_size=2",
            "--trainer.strategy.tensor_parallel_size=1",
            "--model.objective.beta=0.04",
            "--model.objective.scale_rewards=batch",
            "--model.rollout.dynamic_sampling=refill",
            "--trainer.max_epochs=2",
            *extra,
        )
        env = {"PYTHONPATH": str(ROOT), "MASTER_PORT": str(free_port())}
        done = subprocess.run(
            [sys.executable, "-m", "llavaction.cli.train", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            env=dict(__import__("os").environ) | env,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return read_metrics(root)

    whole = run(tmp_path / "whole")
    assert len(whole["rl/reward"]) == 4 and all(v >= 0 for v in whole["rl/kl"].values())
    checkpoint = tmp_path / "whole" / "checkpoints" / "epoch=0-step=2.ckpt"
    assert checkpoint.is_dir()  # sharded
    resumed = run(tmp_path / "resumed", f"--ckpt_path={checkpoint}")
    for figure in ("rl/reward", "rl/completion_length"):
        assert resumed[figure] == pytest.approx({s: v for s, v in whole[figure].items() if s in resumed[figure]})
