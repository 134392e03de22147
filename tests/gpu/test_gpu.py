"""GPU checks (`@pytest.mark.gpu`, skipped without CUDA; `make gpu-check` runs them on a lent card). They need no
video decoder: their shards hold random frames and the real EK-100 validation questions. Figures go to
$GPU_CHECK_OUT/gpu_tests.jsonl when set."""

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch

from data_prep.build_mqa import main as build_mqa
from llavaction.data.shards import SIZES_FILE, make_sample
from llavaction.model.llava_video import LlavaVideoModel, preset
from llavaction.prompts.tokenizer import build_tokenizer
from llavaction.utils.jsonl import read_jsonl

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


EPIC_DIR = Path(__file__).parent / "fixtures" / "epic-kitchens-100-annotations"


def report(name: str, **figures) -> None:
    """A figure of the GPU run, kept beside the test log."""
    print(name, figures, flush=True)
    folder = os.environ.get("GPU_CHECK_OUT")
    if folder:
        with open(Path(folder) / "gpu_tests.jsonl", "a") as sink:
            sink.write(json.dumps({"test": name, "device": torch.cuda.get_device_name()} | figures) + "\n")


def write_shards(questions: list[dict], folder: Path, frames: int, size: int) -> Path:
    """One shard of random-frame samples in the shard format (no video needed)."""
    import tarfile
    from io import BytesIO

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with tarfile.open(folder / "shard-000000.tar", "w") as tar:
        for record in questions:
            jpegs = [
                simplejpeg.encode_jpeg(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), quality=90)
                for _ in range(frames)
            ]
            meta = record | {"num_frames": frames, "frame_size": size, "frame_ids": list(range(frames))}
            for field, data in make_sample(record["narration_id"], meta, jpegs).items():
                if field.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{record['narration_id']}.{field}")
                info.size = len(data)
                tar.addfile(info, BytesIO(data))
    (folder / SIZES_FILE).write_text(json.dumps({"shard-000000.tar": len(questions)}))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    build_mqa(
        [
            "--annotations",
            str(EPIC_DIR),
            "--split",
            "validation",
            "--distractors",
            "random",
            "--out",
            str(root / "q.jsonl"),
        ]
    )
    questions = read_jsonl(root / "q.jsonl")[:16]
    tokenizer = build_tokenizer([t for q in questions for t in q["options"]])
    tokenizer.save_pretrained(root / "tokenizer")
    return {"root": root, "questions": questions, "tokenizer": tokenizer}


def tiny_inputs(device, batch=3):
    torch.manual_seed(0)
    ids = torch.randint(5, 900, (batch, 24), device=device)
    ids[:, 3] = -200
    mask = torch.ones_like(ids)
    mask[-1, 18:] = 0
    labels = ids.masked_fill((ids < 0) | (mask == 0), -100)
    pixels = torch.randn(batch, 4, 3, 32, 32, device=device)
    return ids, pixels, mask, labels


def test_tiny_logits_on_the_gpu_equal_the_cpus():
    torch.manual_seed(0)
    model = LlavaVideoModel(preset("tiny")).eval()
    ids, pixels, mask, _ = tiny_inputs("cpu")
    with torch.no_grad():
        cpu = model.logits(ids, pixels, mask)
        gpu = model.cuda().logits(ids.cuda(), pixels.cuda(), mask.cuda()).cpu()
        bf16 = model.to(torch.bfloat16).logits(ids.cuda(), pixels.cuda(), mask.cuda()).float().cpu()
    real = mask.bool()
    fp32_error = (cpu - gpu)[real].abs().max().item()
    bf16_error = ((cpu - bf16)[real].abs().max() / cpu[real].abs().max()).item()
    report("tiny_logits", fp32_max_abs_error=fp32_error, bf16_max_error_relative_to_max_logit=bf16_error)
    assert fp32_error < 1e-4 and bf16_error < 0.05


@pytest.mark.parametrize("attention", ["flex_attention", "sdpa"])
def test_packed_equals_padded_on_the_gpu(attention):
    torch.manual_seed(0)
    model = LlavaVideoModel(dataclasses.replace(preset("tiny"), attn_implementation=attention)).cuda()
    model.to(torch.bfloat16)
    ids, pixels, mask, labels = tiny_inputs("cuda")
    results = []
    for pack in (False, True):
        model.zero_grad()
        out = model(ids, pixels.bfloat16(), mask, labels, pack=pack)
        out.loss.backward()
        results.append((out.loss.float(), [p.grad.float().clone() for p in model.parameters() if p.grad is not None]))
    (padded, padded_grads), (packed, packed_grads) = results
    grad_error = max(
        ((a - b).abs().max() / a.abs().max().clamp(min=1e-6)).item() for a, b in zip(padded_grads, packed_grads)
    )
    # isolation: changing the last sample does not change the first one's logits
    with torch.no_grad():
        first = model.logits(ids, pixels.bfloat16(), mask, pack=True)[0]
        other = ids.clone()
        other[-1, 5:] = 7
        changed = model.logits(other, pixels.bfloat16(), mask, pack=True)[0]
    report(f"packed_vs_padded_{attention}", loss_error=abs(padded - packed).item(), grad_error=grad_error)
    assert abs(padded - packed).item() < 2e-2 and grad_error < 0.1
    assert torch.equal(first, changed)


def test_compiled_blocks_give_the_same_loss_and_time_it():
    from llavaction.model.llava_video import LLAVA_VIDEO
    from llavaction.training.sharding import compile_blocks

    config = preset("0.5b")
    config.text = config.text | {"num_hidden_layers": 4}
    config.vision = config.vision | {"num_hidden_layers": 6}
    torch.manual_seed(0)
    eager = LlavaVideoModel(config).cuda().to(torch.bfloat16)
    compiled = LlavaVideoModel(config).cuda().to(torch.bfloat16)
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled, LLAVA_VIDEO.block_types)
    ids = torch.randint(5, 1000, (2, 200), device="cuda")
    ids[:, 2] = -200
    labels = ids.masked_fill(ids < 0, -100)
    pixels = torch.randn(2, 16, 3, 384, 384, device="cuda", dtype=torch.bfloat16)
    timings, losses = {}, {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        for step in range(4):
            if step == 1:
                torch.cuda.synchronize()
                start = time.perf_counter()
            loss = model(ids, pixels, None, labels).loss
            loss.backward()
            model.zero_grad()
        torch.cuda.synchronize()
        timings[name], losses[name] = (time.perf_counter() - start) / 3, loss.float().item()
    report(
        "compile_blocks",
        eager_step_s=timings["eager"],
        compiled_step_s=timings["compiled"],
        speedup=timings["eager"] / timings["compiled"],
        loss_difference=abs(losses["eager"] - losses["compiled"]),
    )
    assert abs(losses["eager"] - losses["compiled"]) < 2e-2 * abs(losses["eager"])


def test_half_billion_preset_fits_with_the_recipes_precision(data, tmp_path):
    """The 0.5b shapes (SigLIP so400m minus its last layer, Qwen2-0.5B; 384 px, 16 frames), random init, bf16
    compute with fp32 master weights, activation checkpointing, FSDP2 on one GPU: 20 steps on one repeated batch."""
    import lightning as L
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.utils.data import DataLoader

    from llavaction.data.datamodule import EpicDataModule
    from llavaction.data.options import LoaderOptions, TaskSource
    from llavaction.model.options import ComputeOptions
    from llavaction.training.module import LlavaActionModule
    from llavaction.training.options import OptimizerOptions

    shards = write_shards(data["questions"][:4], tmp_path / "shards", frames=16, size=384)
    module = LlavaActionModule(
        preset_name="0.5b",
        tokenizer=str(data["root"] / "tokenizer"),
        optimizer=OptimizerOptions(lr=1e-4, vision_lr=1e-5, warmup_ratio=0.0),
        compute=ComputeOptions(activation_checkpointing=True),
    )
    dm = EpicDataModule(
        train=[TaskSource(str(shards), "mqa")],
        tokenizer=str(data["root"] / "tokenizer"),
        tokens_per_frame=module.tokens_per_frame,
        num_frames=16,
        loader=LoaderOptions(batch_size=2, num_workers=0, samples_per_epoch=2, shuffle_buffer=1),
    )
    batch = next(iter(dm.train_dataloader()))
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Record()],
        strategy=ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1),
    )
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader([batch] * 20, batch_size=None, collate_fn=lambda b: b))
    report(
        "fit_0.5b",
        losses=losses,
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
        seconds=time.perf_counter() - start,
    )
    assert len(losses) == 20 and all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]


def test_evaluation_on_the_gpu_chooses_as_on_the_cpu(data, tmp_path):
    import subprocess
    import sys

    shards = write_shards(data["questions"][:6], tmp_path / "shards", frames=4, size=32)
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in data["questions"][:6]))
    torch.manual_seed(0)
    LlavaVideoModel(preset("tiny")).save_pretrained(tmp_path / "ckpt")
    data["tokenizer"].save_pretrained(tmp_path / "ckpt")
    root = Path(__file__).resolve().parents[2]
    chosen = {}
    for device, mode in (("cpu", "score"), ("cuda", "score"), ("cpu", "generate"), ("cuda", "generate")):
        out = tmp_path / f"{device}_{mode}"
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        env |= {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "llavaction.cli.evaluate",
                "mqa",
                "--questions",
                str(tmp_path / "q.jsonl"),
                "--shards",
                str(shards),
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--mode",
                mode,
                "--num-workers",
                "0",
                "--max-new-tokens",
                "8",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        records = read_jsonl(out / "predictions.jsonl")
        chosen[device, mode] = [(p["rule_choice_index"], p.get("generation")) for p in records]
    agree = sum(a == b for a, b in zip(chosen["cpu", "generate"], chosen["cuda", "generate"]))
    report("evaluate_cpu_vs_gpu", score_agree=chosen["cpu", "score"] == chosen["cuda", "score"], generate_agree=agree)
    assert chosen["cpu", "score"] == chosen["cuda", "score"] and agree >= 5
