"""Several processes: FSDP2 resumed mid-epoch from a sharded checkpoint (on as many processes, and on half as many),
MQA at world sizes 1-3 and on two nodes."""

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.fit_helpers import (
    assert_fit_consumed_the_plan,
    assert_same_curve,
    config_diff,
    csv_logged,
    demo_args,
    read_losses,
    record_keys,
    step_checkpoint,
    step_checkpoints,
)
from tests.helpers import ROOT, free_port, run_mqa


@pytest.mark.slow
def test_two_nodes_of_one_process_on_one_machine(demo_dir, demo_shards, tmp_path):
    """num_nodes=2 x 1 process (NODE_RANK, MASTER_ADDR=127.0.0.1), FSDP2 on gloo: a few steps and a validation where
    every question counts once, and the sharded checkpoint resumes the same curve."""
    port = free_port()

    def two_nodes(root: Path, *extra) -> None:
        args = demo_args(
            demo_dir,
            demo_shards,
            root,
            *csv_logged(root),
            "--trainer.num_nodes=2",
            "--trainer.devices=1",
            "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
            "--trainer.strategy.data_parallel_size=2",
            "--trainer.strategy.tensor_parallel_size=1",
            "--data.loader.samples_per_epoch=24",
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1",
            "--model.evaluation.mqa_scoring=[letter]",
            *extra,
        )
        processes = []
        for node in (0, 1):
            env = os.environ | {
                "PYTHONPATH": str(ROOT),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NODE_RANK": str(node),
                "WORLD_SIZE": "2",
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "llavaction.cli.train", *args],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=600) for p in processes]
        assert all(p.returncode == 0 for p in processes), outputs[0][1][-3000:] + outputs[1][1][-3000:]
        return outputs

    outputs = two_nodes(tmp_path / "whole")
    results = json.loads(next((tmp_path / "whole").rglob("validation_results.json")).read_text())
    assert results["val/questions"] == 8 and "validation MQA accuracy" in outputs[0][0]
    checkpoint = tmp_path / "whole" / "checkpoints" / "epoch=0-step=3.ckpt"
    assert checkpoint.is_dir()
    port = free_port()
    two_nodes(tmp_path / "resumed", f"--ckpt_path={checkpoint}")
    assert_same_curve(read_losses(tmp_path / "whole"), read_losses(tmp_path / "resumed"), after=3)


@pytest.mark.slow
def test_mqa_identical_at_world_sizes_1_2_3(original_checkpoint, demo_questions, demo_shards, tmp_path):
    one, predictions_one = run_mqa(
        original_checkpoint, demo_questions, demo_shards, tmp_path / "one", "--mode", "score"
    )
    for devices in ("2", "3"):
        other, predictions = run_mqa(
            original_checkpoint,
            demo_questions,
            demo_shards,
            tmp_path / devices,
            "--devices",
            devices,
            "--mode",
            "score",
        )
        assert one["count"] == other["count"] == 8 and one["accuracy"] == other["accuracy"]
        assert [p["rule_choice_index"] for p in predictions_one] == [p["rule_choice_index"] for p in predictions]
    assert set(one["breakdown"]) >= {"verb_head", "verb_tail", "seen_participants", "unseen_participants"}
    assert list((tmp_path / "one").glob("*_samples_ek100_mqa.jsonl")) and list(
        (tmp_path / "one").glob("*_results.json")
    )


@pytest.mark.slow
def test_mqa_on_two_nodes_equals_one_process(original_checkpoint, demo_questions, demo_shards, tmp_path):
    """--num-nodes 2 x 1 process on one machine (NODE_RANK, MASTER_ADDR=127.0.0.1, as the training test): the same
    predictions as one process, every question once."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT, free_port

    one, predictions_one = run_mqa(
        original_checkpoint, demo_questions, demo_shards, tmp_path / "one", "--mode", "score"
    )
    out, port = tmp_path / "nodes", free_port()
    args = [
        sys.executable,
        "-m",
        "llavaction.cli.evaluate",
        "mqa",
        "--questions",
        str(demo_questions["validation_mqa"]),
    ]
    args += ["--shards", str(demo_shards["validation_mqa"]), "--checkpoint", str(original_checkpoint)]
    args += ["--mode", "score", "--batch-size", "3", "--num-workers", "0", "--num-nodes", "2", "--out", str(out)]
    processes = [
        subprocess.Popen(
            args,
            env=os.environ
            | {
                "PYTHONPATH": str(ROOT),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NODE_RANK": str(node),
                "WORLD_SIZE": "2",
            },
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs[0][1][-3000:] + outputs[1][1][-3000:]
    results = json.loads((out / "results.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert results["count"] == one["count"] == 8 and results["accuracy"] == one["accuracy"]
    assert [p["rule_choice_index"] for p in predictions] == [p["rule_choice_index"] for p in predictions_one]


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
        [sys.executable, "-m", "llavaction.cli.train", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result, args


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["llava_video", "qwen2_5_vl"])
def test_fsdp2_two_processes_resume_mid_epoch_from_sharded_checkpoint(demo_dir, demo_shards, tmp_path, backbone):
    """World size 2 (FSDP2 on gloo): 3 steps an epoch per rank; the sharded checkpoint after step 2 resumes the
    same curve, for LLaVA-Video and for a Qwen backbone (its own block classes sharded)."""
    extra = []
    if backbone != "llava_video":
        extra = [f"--model.backbone={backbone}", f"--model.tokenizer={demo_dir / 'tokenizer'}"]
    root = tmp_path / "whole"
    whole, args = run_fsdp(demo_dir, demo_shards, root, step_checkpoints(root, 2), record_keys(root), *extra)
    assert "validation MQA accuracy:" in whole.stdout
    assert_fit_consumed_the_plan(args, root, epochs=2, world=2)
    checkpoint = step_checkpoint(tmp_path / "whole", 2)
    assert checkpoint.is_dir()  # a sharded (distributed) checkpoint
    run_fsdp(demo_dir, demo_shards, tmp_path / "resumed", f"--ckpt_path={checkpoint}", *extra)
    assert_same_curve(read_losses(tmp_path / "whole"), read_losses(tmp_path / "resumed"), after=2)


def fsdp_processes(demo_dir, demo_shards, root, processes: int, *extra) -> list[str]:
    """A fit of one epoch of 24 samples, batch 1, global batch 12, on `processes` FSDP2 ranks (gloo)."""
    args = demo_args(
        demo_dir,
        demo_shards,
        root,
        "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
        f"--trainer.strategy.data_parallel_size={processes}",
        "--trainer.strategy.tensor_parallel_size=1",
        f"--trainer.devices={processes}",
        f"--trainer.accumulate_grad_batches={12 // processes}",
        *csv_logged(root),
        record_keys(root),
        "--data.loader.batch_size=1",
        "--data.loader.samples_per_epoch=24",
        "--trainer.max_epochs=1",
        "--trainer.check_val_every_n_epoch=10",
        *extra,
    )
    root.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "llavaction.cli.train", *args],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


@pytest.mark.slow
def test_fsdp2_on_four_processes_resumed_on_two(demo_dir, demo_shards, tmp_path):
    """4 FSDP2 ranks (accumulation 3) stop after the epoch's first step; 2 ranks (accumulation 6) resume its sharded
    checkpoint: the model and optimizer states they restore, gathered, are the checkpoint's; they read the 12 samples
    the 4 ranks did not, and the epoch's second step's learning rate is the whole run's."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    whole = tmp_path / "four"
    fsdp_processes(demo_dir, demo_shards, whole, 4, step_checkpoints(whole, 1))
    checkpoint = step_checkpoint(whole, 1)
    assert checkpoint.is_dir()
    resumed = tmp_path / "two"
    restored = tmp_path / "restored.pt"
    callback = config_diff(
        tmp_path,
        "save_state",
        "trainer:\n  callbacks+:\n    - class_path: tests.fit_helpers.SaveRestoredState\n"
        f"      init_args: {{path: {restored}}}\n",
    )
    notes = fsdp_processes(demo_dir, demo_shards, resumed, 2, f"--ckpt_path={checkpoint}", callback)
    # the config's accumulation (6) keeps the global batch of 12: only the epoch is re-planned
    assert "accumulate_grad_batches" not in notes and "12 samples left, 6 batches a rank from batch 6 of 12" in notes
    dcp_to_torch_save(checkpoint, tmp_path / "saved.pt")
    saved, got = torch.load(tmp_path / "saved.pt", weights_only=False), torch.load(restored, weights_only=False)
    assert set(saved["state_dict"]) == set(got["state_dict"]) and set(saved["optimizer_0"]["state"]) == set(
        got["optimizer_0"]["state"]
    )
    assert saved["optimizer_0"]["state"] and any(
        s["exp_avg"].abs().sum() > 0 for s in saved["optimizer_0"]["state"].values()
    )
    for name, tensor in saved["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), name
    for name, state in saved["optimizer_0"]["state"].items():
        for key, value in state.items():  # exp_avg, exp_avg_sq, step
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(got["optimizer_0"]["state"][name][key])), name
    assert [g["lr"] for g in saved["optimizer_0"]["param_groups"]] == [
        g["lr"] for g in got["optimizer_0"]["param_groups"]
    ]

    def keys(root, processes, below=None):
        rows = [json.loads(line) for r in range(processes) for line in open(root / f"keys-rank{r}.jsonl")]
        return [k for row in rows if below is None or row["batch"] < below for k, pad in row["rows"] if not pad]

    assert len(keys(whole, 4)) == 24 and Counter(keys(whole, 4, below=3) + keys(resumed, 2)) == Counter(keys(whole, 4))
    lr = "lr-AdamW/llm"
    assert logged_column(resumed, lr)[1] == logged_column(whole, lr)[1]


def logged_column(root, name: str) -> dict[int, float]:
    rows = [row for path in sorted(root.rglob("metrics.csv")) for row in csv.DictReader(open(path))]
    return {int(row["step"]): float(row[name]) for row in rows if row.get(name)}
