"""GRPO rollouts by vLLM (`make test-vllm`: vLLM's CPU build in its own environment, --vllm-python): on a tiny
Qwen2.5-VL, greedy rollouts drawn by the engine equal the model's own sampler's before and after new weights are
pushed, and a GRPO fit with `model.rollout.engine: vllm` (T-GRPO's shuffled-frame rollouts too) steps, pushes and
logs."""

from types import SimpleNamespace

import pytest
import torch

from llavaction.cli.train import cli
from tests.fit_helpers import csv_logged, grpo_args, read_metrics
from tests.helpers import datamodule

pytestmark = pytest.mark.vllm


def test_vllm_rollouts_are_the_models_own_before_and_after_a_push(demo_dir, demo_shards, vllm_python):
    from llavaction.data.options import SampleFormat, TaskSource
    from llavaction.training.grpo.module import GRPOModule
    from llavaction.training.grpo.options import RolloutOptions
    from llavaction.training.grpo.rollouts import Sampler, rollout_generator

    greedy = RolloutOptions(group_size=2, top_k=1, max_new_tokens=6, engine="vllm", vllm_python=vllm_python)
    module = GRPOModule(backbone="qwen2_5_vl", tokenizer=str(demo_dir / "tokenizer"), rollout=greedy)
    module.configure_model()
    model = module.model.eval()
    data = datamodule(
        demo_dir,
        demo_shards,
        train=[TaskSource(str(demo_shards["train_mqa"]), "mqa", 1.0)],
        chat_format=module.video_format.as_dict(),
        sample_format=SampleFormat(answers=False),
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    own, served = Sampler(module.tokenizer, greedy), module.collect.sampler
    holder = SimpleNamespace(global_step=0, **{k: getattr(module, k) for k in ("family", "model", "config")})
    holder.tokenizer, holder.video_format = module.tokenizer, module.video_format
    questions = [row for row in range(len(batch)) for _ in range(2)]
    draws = []
    try:
        for step in (0, 1):
            if step:  # an update: every weight moved, then pushed to the engine
                torch.manual_seed(0)
                with torch.no_grad():
                    for parameter in model.parameters():
                        parameter.add_(0.05 * torch.randn_like(parameter))
            holder.global_step = step
            served.serve(holder)
            generator = rollout_generator(0, step, 0, torch.device("cpu"))
            with torch.no_grad():
                visual = model.encode_video(model.preprocess(batch.frames, batch.clips))
                mine = own.draw(model, batch, visual, questions, generator)
            theirs = served.draw(None, batch, None, questions, generator)
            assert theirs.tokens == mine.tokens and theirs.ended == mine.ended
            draws.append(mine.tokens)
    finally:
        served.close()
    assert draws[0] != draws[1]  # the push mattered: the old weights would have answered as before


def test_a_grpo_fit_with_vllm_rollouts_steps_and_logs(demo_dir, demo_shards, vllm_python, tmp_path):
    root = tmp_path / "run"
    vllm = ["--model.backbone=qwen2_5_vl", "--model.rollout.engine=vllm", f"--model.rollout.vllm_python={vllm_python}"]
    temporal = "--model.rewards.weights={accuracy: 1.0, temporal: 1.0}"  # rollouts on shuffled frames too
    cli(grpo_args(demo_dir, demo_shards, root, *vllm, temporal, "--data.loader.samples_per_epoch=4", *csv_logged(root)))
    metrics = read_metrics(root)
    assert "rl/reward/temporal" in metrics
    assert sorted(metrics["rl/time/push"]) == sorted(metrics["rl/accuracy"]) and len(metrics["rl/accuracy"]) == 2
    assert all(0 <= value <= 1 for value in metrics["rl/accuracy"].values())
    assert (root / "checkpoints" / "last.ckpt").exists()
