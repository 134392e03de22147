"""A family in transformers' layout (Qwen2.5-VL, InternVL) through every evaluation path: its training checkpoint and
its export answer alike in `evaluate mqa`, `predict` answers about a video file, `lmms-export` names the family's
lmms-eval model, and a checkpoint by hub id loads from an offline cache."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llavaction.cli.evaluate import main as evaluate
from llavaction.cli.predict import main as predict
from llavaction.cli.train import cli
from tests.fit_helpers import demo_args
from tests.helpers import ROOT, hub_cache


@pytest.fixture(scope="module", params=["qwen2_5_vl", "internvl"])
def family_run(demo_dir, demo_shards, tmp_path_factory, request):
    """A tiny model of the family trained one short epoch on the demo, with its action token, and its export."""
    root = tmp_path_factory.mktemp(f"{request.param}_run")
    cli(
        demo_args(
            demo_dir,
            demo_shards,
            root,
            f"--model.backbone={request.param}",
            f"--model.tokenizer={demo_dir / 'tokenizer'}",
            "--model.action.mode=one_token",
            "--model.action.types=[8, 8, 64]",
            "--trainer.max_epochs=1",
            "--data.loader.samples_per_epoch=16",
            "--trainer.check_val_every_n_epoch=100",
            f"--model.export_dir={root / 'export'}",
        )
    )
    return root


def evaluated(demo_questions, demo_shards, checkpoint, out) -> list[dict]:
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    args = ["mqa", *common, "--checkpoint", str(checkpoint), "--max-new-tokens", "3", "--num-workers", "0"]
    assert evaluate([*args, "--out", str(out)]) == 0
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_a_checkpoint_and_its_export_answer_alike(family_run, demo_questions, demo_shards, tmp_path, capsys):
    from_checkpoint = evaluated(demo_questions, demo_shards, family_run / "checkpoints" / "last.ckpt", tmp_path / "a")
    from_export = evaluated(demo_questions, demo_shards, family_run / "export", tmp_path / "b")
    assert len(from_checkpoint) == 8
    for ours, theirs in zip(from_checkpoint, from_export):
        assert ours["generation"] == theirs["generation"]
        assert ours["scores"] == pytest.approx(theirs["scores"], abs=1e-4)
    heads = [np.load(tmp_path / run / "head_scores.npz")["verb_output"] for run in ("a", "b")]
    assert heads[0].shape == (8, 8) and np.allclose(heads[0], heads[1], atol=1e-4)
    task = tmp_path / "task"
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    assert evaluate(["lmms-export", *common, "--checkpoint", str(family_run / "export"), "--out", str(task)]) == 0
    model = {"qwen2_5_vl": "qwen2_5_vl", "internvl": "internvl_hf"}[family_run.name.split("_run")[0]]
    assert f"--model {model} --model_args pretrained=" in (task / "ek100_mqa.yaml").read_text().splitlines()[0]


def test_predict_answers_with_an_export(family_run, demo_dir, capsys):
    video = demo_dir / "videos" / "D01" / "D01_101.MP4"
    args = ["--checkpoint", str(family_run / "export"), "--video", str(video), "--start", "1", "--end", "3"]
    assert predict([*args, "--options", "lift plate", "lower cup", "--max-new-tokens", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "mqa" and "top_verbs" in result and len(result["top_actions"]) == 5


@pytest.mark.slow
def test_a_checkpoint_by_hub_id_offline(family_run, demo_questions, demo_shards, tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    cache = hub_cache(tmp_path / "hub", family_run / "export", "lab/tiny-qwen", revision)
    env = os.environ | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    command = [sys.executable, "-m", "llavaction.cli.evaluate", "mqa", *common, "--checkpoint", "lab/tiny-qwen"]
    command += ["--max-new-tokens", "3", "--num-workers", "0", "--out", str(tmp_path / "eval")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["count"] == 8


def test_llavaction_export_writes_the_fit_export_from_the_training_checkpoint(family_run, tmp_path, capsys):
    from safetensors.torch import load_file

    from llavaction.cli.export import main as export

    out = tmp_path / "export"
    checkpoint = family_run / "checkpoints" / "last.ckpt"
    assert export(["--checkpoint", str(checkpoint), "--layout", "transformers", "--out", str(out)]) == 0
    for name in ("model.safetensors", "action_heads.safetensors"):
        ours, fits = load_file(out / name), load_file(family_run / "export" / name)
        assert ours.keys() == fits.keys() and all(np.array_equal(ours[k].numpy(), fits[k].numpy()) for k in ours)
    for name in ("video_preprocessor_config.json", "config.json", "action_heads.json"):
        assert (out / name).read_text() == (family_run / "export" / name).read_text()
