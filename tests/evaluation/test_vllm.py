"""vLLM as an engine (`make test-vllm`: vLLM's CPU build in an environment of its own, given as --vllm-python): on tiny
Qwen2.5-VL and Qwen3-VL models trained with an action token, the vllm engine answers the benchmark token for token
as the hf engine does, from the same prompt ids (a sample's training ids included) and the same pixels as
transformers' own processor makes from the export, and `vllm serve` on the export answers a chat request alike."""

import base64
import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from llavaction.cli.train import cli
from tests.fit_helpers import demo_args
from tests.helpers import ROOT, free_port, run_mqa

pytestmark = pytest.mark.vllm
FAMILIES = ["qwen2_5_vl", "qwen3_vl"]
PROCESSOR_SCRIPT = ROOT / "tests" / "evaluation" / "processor_outputs.py"


@pytest.fixture(scope="module", params=FAMILIES)
def trained(demo_dir, demo_shards, tmp_path_factory, request):
    """A tiny model of the family trained a short epoch with an action token, and its export."""
    root = tmp_path_factory.mktemp(f"{request.param}_vllm")
    cli(
        demo_args(
            demo_dir,
            demo_shards,
            root,
            f"--model.backbone={request.param}",
            "--model.action.mode=one_token",
            "--model.action.types=[8, 8, 64]",
            "--trainer.max_epochs=1",
            "--data.loader.samples_per_epoch=16",
            "--trainer.check_val_every_n_epoch=100",
            f"--model.export_dir={root / 'export'}",
        )
    )
    return root


def test_the_vllm_engine_answers_as_the_hf_engine(trained, demo_questions, demo_shards, vllm_python, tmp_path):
    checkpoint = trained / "checkpoints" / "last.ckpt"
    hf, hf_answers = run_mqa(checkpoint, demo_questions, demo_shards, tmp_path / "hf")
    engine = ["--engine", "vllm", "--vllm-python", vllm_python]
    for source in (checkpoint, trained / "export"):  # exported on the fly, or the fit's export served as it is
        out = tmp_path / f"vllm_{source.name}"
        served, answers = run_mqa(source, demo_questions, demo_shards, out, *engine)
        assert [a["generation"] for a in answers] == [a["generation"] for a in hf_answers]
        assert served["accuracy"] == hf["accuracy"] and served["engine"] == "vllm" and served["count"] == 8
        assert served["accuracy_interval"] == hf["accuracy_interval"]


def one_question(export, demo_shards):
    """The first validation question's sample decoded as the data pipeline decodes it, with the model read from the
    export."""
    from llavaction.data.shards import iter_samples, shard_urls
    from llavaction.data.stages import DecodeFrames
    from llavaction.evaluation.checkpoints import LoadedCheckpoint

    module = LoadedCheckpoint.open(export).module()
    raw = next(iter_samples(shard_urls(demo_shards["validation_mqa"])))
    return module, DecodeFrames(4)(raw)


def prompt_ids(module, chat, sample, with_answer: bool) -> list[int]:
    from llavaction.data.stages import EncodePrompt
    from llavaction.prompts.encoding import PromptEncoder
    from llavaction.prompts.wording import PromptOptions

    encoder = PromptEncoder(module.tokenizer, chat=chat)
    ids = EncodePrompt(encoder, "mqa", 4, PromptOptions(), with_answer=with_answer)(sample)["input_ids"]
    return ids


def test_prompt_ids_are_the_trainings_the_engines_and_the_processors(trained, demo_shards, vllm_python, tmp_path):
    """For one question: the ids it trains on (up to its answer), the hf engine's, the ids vLLM builds from the
    unexpanded prompt, and those transformers' processor (AutoProcessor, from the export) builds from the same text,
    frames and video metadata: all equal, the pixels and grid too."""
    from llavaction.data.stages import Collate
    from llavaction.evaluation.engines import EngineOptions, VllmEngine, batch_requests, greedy
    from llavaction.evaluation.serving import unexpanded_format
    from llavaction.prompts.formats import ACTION_TOKEN_INDEX

    export = trained / "export"
    module, sample = one_question(export, demo_shards)
    action = module.tokenizer.convert_tokens_to_ids("<|action_0|>")
    hf = prompt_ids(module, module.video_format, sample, with_answer=False)
    trains_on = prompt_ids(module, module.video_format, sample, with_answer=True)
    assert trains_on[: len(hf)] == hf and ACTION_TOKEN_INDEX in hf
    hf = [action if t == ACTION_TOKEN_INDEX else t for t in hf]
    served = dict(sample, input_ids=prompt_ids(module, unexpanded_format(module, export), sample, False), labels=[])
    served["labels"] = [-100] * len(served["input_ids"])
    request = batch_requests(Collate(module.tokenizer.pad_token_id)([served]))[0]
    with VllmEngine(export, EngineOptions(engine="vllm", vllm_python=vllm_python), max_model_len=2048) as engine:
        answer = engine.generate([request], greedy(3, module.tokenizer.convert_tokens_to_ids("<|im_end|>")))[0]
    assert answer.prompt_ids == hf
    processor = processor_outputs(vllm_python, export, tmp_path, [request], module.tokenizer)[0]
    assert processor["input_ids"].tolist() == hf
    pixels = module.model.preprocess(torch.from_numpy(request["frames"])[None], [sample["frames"].timing])
    assert pixels.grid[0].tolist() == processor["grid"].tolist()
    assert np.abs(pixels.values.numpy() - processor["pixels"]).max() <= 1e-6


def processor_outputs(vllm_python, export, work, requests, tokenizer) -> list[dict]:
    """transformers' processor loaded from the export by AutoProcessor (in the vLLM environment, which has
    torchvision) on each request's text, frames and video metadata."""
    cases = [{"text": tokenizer.decode(r["prompt_token_ids"]), "metadata": r["metadata"]} for r in requests]
    np.savez(work / "frames.npz", *[r["frames"] for r in requests])
    (work / "cases.json").write_text(json.dumps(cases))
    subprocess.run([vllm_python, str(PROCESSOR_SCRIPT), str(export), str(work)], check=True, timeout=600)
    found = np.load(work / "outputs.npz")
    return [{k: found[f"{k}_{i}"] for k in ("input_ids", "pixels", "grid")} for i in range(len(requests))]


@pytest.mark.parametrize("frames", [7, 8, 16, 64])
def test_pixels_and_ids_equal_the_processors_at_every_frame_count(trained, frames, vllm_python, tmp_path):
    """Frames of a size the frame rule resizes and of one it keeps, an odd count among them: the processor's pixel
    values, grid and ids (the timestamps from the frames' indices and frame rate) are ours."""
    from llavaction.evaluation.checkpoints import LoadedCheckpoint
    from llavaction.evaluation.serving import unexpanded_format
    from llavaction.prompts.encoding import PromptEncoder
    from llavaction.prompts.formats import ClipTiming

    export = trained / "export"
    module = LoadedCheckpoint.open(export).module()
    ours = PromptEncoder(module.tokenizer, chat=module.video_format)
    unexpanded = PromptEncoder(module.tokenizer, chat=unexpanded_format(module, export))
    action = module.tokenizer.convert_tokens_to_ids("<|action_0|>")
    rng = np.random.default_rng(frames)
    requests, expected = [], []
    for size in (32, 56, 64):
        clip = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
        timing = ClipTiming(tuple(sorted(rng.choice(300, frames, replace=False).tolist())), 29.97, 300)
        ids = ours.encode("what?", None, ours.visual(timing, size)).input_ids
        expected.append(([action if t < 0 else t for t in ids], clip, timing))
        served = unexpanded.encode("what?", None, unexpanded.visual(timing, size)).input_ids
        requests.append({"prompt_token_ids": served, "frames": clip, "metadata": timing.as_metadata()})
    for (ids, clip, timing), theirs in zip(
        expected, processor_outputs(vllm_python, export, tmp_path, requests, module.tokenizer)
    ):
        assert theirs["input_ids"].tolist() == ids
        pixels = module.model.preprocess(torch.from_numpy(clip)[None], [timing])
        assert pixels.grid[0].tolist() == theirs["grid"].tolist()
        assert np.abs(pixels.values.numpy() - theirs["pixels"]).max() <= 1e-6


def png_url(frames: np.ndarray) -> str:
    from PIL import Image

    parts = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        parts.append(base64.b64encode(buffer.getvalue()).decode())
    return "data:video/jpeg;base64," + ",".join(parts)


def test_vllm_serve_answers_a_chat_request_as_the_hf_engine(trained, demo_dir, demo_shards, vllm_python):
    """`vllm serve` (its module, as the CPU build's command line is broken) on the export, asked over loopback with
    the clip's frames (lossless PNG) and their metadata: the same greedy tokens as the hf engine."""
    if not trained.name.startswith("qwen3_vl"):
        pytest.skip("one family is enough for the server's round trip (a minute to start)")
    from llavaction.evaluation.checkpoints import LoadedCheckpoint
    from tests.helpers import datamodule

    export = trained / "export"
    module = LoadedCheckpoint.open(export).module()
    data = datamodule(demo_dir, demo_shards, chat_format=module.chat_format, tokenizer=str(export))
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    answers = module.answerer(batch, ("generate",))
    hf_tokens = data.tokenizer(answers.generations[0], add_special_tokens=False)["input_ids"]
    port = free_port()
    command = [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(export), "--port", str(port)]
    command += ["--host", "127.0.0.1", "--served-model-name", "m", "--enforce-eager", "--dtype", "float32"]
    command += [
        "--max-model-len",
        "2048",
        "--limit-mm-per-prompt",
        '{"video": 1, "image": 0}',
        "--trust-request-mm-kwargs",
    ]
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the server exited"
                time.sleep(1)
        meta = batch.meta[0]
        from llavaction.prompts.tasks import user_text

        question = user_text(meta, "mqa", data.hparams.num_frames, data.prompt)
        body = {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": png_url(batch.frames[0].numpy())}},
                        {"type": "text", "text": question},
                    ],
                }
            ],
            "media_io_kwargs": {"video": batch.clips[0].as_metadata()},
            "temperature": 0.0,
            "max_tokens": 24,
            "return_token_ids": True,
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            reply = json.loads(urllib.request.urlopen(request, timeout=120).read())
        except urllib.error.HTTPError as err:
            raise AssertionError(err.read().decode()[:2000]) from None
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    tokens = [t for t in reply["choices"][0]["token_ids"] if t != data.tokenizer.eos_token_id]
    assert tokens == hf_tokens


def test_the_vllm_engine_refuses_what_it_cannot_serve(demo_questions, demo_shards, original_checkpoint, tmp_path):
    from llavaction.cli.evaluate import main as evaluate

    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    args = ["mqa", *common, "--checkpoint", str(original_checkpoint), "--engine", "vllm", "--out", str(tmp_path / "x")]
    assert evaluate(args) == 2
    args = ["mqa", *common, "--checkpoint", str(original_checkpoint), "--engine", "vllm", "--mode", "score"]
    assert evaluate([*args, "--out", str(tmp_path / "y")]) == 2


def test_predict_answers_a_video_file_as_the_hf_engine(trained, demo_dir, vllm_python, capsys):
    from llavaction.cli.predict import main as predict

    video = demo_dir / "videos" / "D01" / "D01_101.MP4"
    args = ["--checkpoint", str(trained / "export"), "--video", str(video), "--start", "1", "--end", "3", "--json"]
    args += ["--options", "lift plate", "lower cup", "--max-new-tokens", "6"]
    answers = []
    for engine in (["--engine", "hf"], ["--engine", "vllm", "--vllm-python", vllm_python]):
        assert predict([*args, *engine]) == 0
        answers.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert answers[0]["answer"] == answers[1]["answer"] and "top_verbs" not in answers[1]
