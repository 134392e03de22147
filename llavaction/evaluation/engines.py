"""Engines that answer: 'hf', this codebase's own model (every family and scoring mode), and 'vllm', vLLM serving the
model's transformers-layout export. vLLM runs in worker processes (llavaction/evaluation/vllm_worker.py) started with
the Python of an environment that has it, since vLLM pins its own transformers; the questions reach it as the same
clips (the frame store's frames with their video metadata: frame indices, frame rate, clip length, never resampled)
and the same prompts, the clip's marker left for vLLM's processor to expand, so its prompt ids equal the hf engine's
(tested token for token)."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Literal

import torch

from llavaction.data.batch import Batch
from llavaction.utils.checks import check_count, check_range

WORKER = Path(__file__).with_name("vllm_worker.py")
LETTER_LOGPROBS = 20  # first-step log-probabilities returned: a letter outside them scores -inf
# vLLM on a CPU: the KV cache in GiB (its default takes most of the memory), the engine in this process
CPU_ENVIRONMENT = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}


class EngineError(RuntimeError):
    """An engine that cannot start or answer; the message names the model folder and why."""


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """Which engine answers.

    Args:
        engine: 'hf': this codebase's model (every family and scoring mode, action heads read); 'vllm': vLLM serving
            the model's transformers-layout export (the Qwen families; answers by generation, no action heads).
        vllm_python: the Python of an environment with vLLM (default: this one); vLLM pins its own transformers, so
            it usually has an environment of its own (README, "Engines").
        tensor_parallel: GPUs each vLLM engine shards the model over.
        data_parallel: vLLM engines, each on tensor_parallel GPUs of its own, the questions dealt among them.
        vllm_dtype: 'auto': bfloat16 on GPUs, float32 on a CPU; or the dtype named.
        gpu_memory_utilization: share of each GPU's memory a vLLM engine may hold.
    """

    engine: Literal["hf", "vllm"] = "hf"
    vllm_python: str | None = None
    tensor_parallel: int = 1
    data_parallel: int = 1
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gpu_memory_utilization: float = 0.9

    def __post_init__(self):
        check_count("tensor_parallel", self.tensor_parallel, minimum=1)
        check_count("data_parallel", self.data_parallel, minimum=1)
        check_range("gpu_memory_utilization", self.gpu_memory_utilization, 0.05, 1.0)


@dataclass(frozen=True)
class Sampled:
    """One answer of the engine: its token ids (without the end token) and the first step's log-probabilities."""

    tokens: list[int]
    first_logprobs: dict[int, float]


@dataclass(frozen=True)
class Served:
    """What the engine read for a prompt: the prompt ids after its processor expanded the clip, and the answers."""

    prompt_ids: list[int]
    samples: list[Sampled]


class VllmEngine:
    """vLLM engines (options.data_parallel of them) serving one model folder, as context manager."""

    def __init__(self, folder: Path, options: EngineOptions, max_model_len: int | None = None, seed: int = 0):
        self.folder, self.options = Path(folder), options
        cuda = torch.cuda.is_available()
        dtype = options.vllm_dtype if options.vllm_dtype != "auto" else ("bfloat16" if cuda else "float32")
        settings = {
            "model": str(self.folder),
            "dtype": dtype,
            "tensor_parallel": options.tensor_parallel,
            "max_model_len": max_model_len,  # None: the model's own
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "enforce_eager": not cuda,  # a CPU gains nothing from compiling the model, and waits a minute for it
            "seed": seed,
            "logprobs": LETTER_LOGPROBS,
        }
        python = options.vllm_python or sys.executable
        key = secrets.token_bytes(32)
        self._log = tempfile.NamedTemporaryFile("w+", prefix="llavaction-vllm-", suffix=".log", delete=False)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        port = self._listener.address[1]
        self._processes, self._connections = [], []
        try:
            for index in range(options.data_parallel):
                environment = dict(os.environ)
                if cuda:
                    first = index * options.tensor_parallel
                    gpus = range(first, first + options.tensor_parallel)
                    environment["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
                else:
                    environment |= CPU_ENVIRONMENT
                process = subprocess.Popen(
                    [python, str(WORKER), f"127.0.0.1:{port}"],
                    stdin=subprocess.PIPE,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    text=True,
                )
                process.stdin.write(key.hex() + "\n")
                process.stdin.close()
                self._processes.append(process)
                self._connections.append(self._accept(process))
            for connection in self._connections:
                connection.send(settings)
            for connection in self._connections:
                self._reply(connection)
        except BaseException:
            self.close()
            raise

    def _accept(self, process: subprocess.Popen):
        """The worker's connection, or an error naming why it never came (it exited: its log's last lines)."""
        accepted: list = []
        thread = threading.Thread(target=lambda: accepted.append(self._listener.accept()), daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(timeout=1.0)
            if process.poll() is not None and not accepted:
                raise EngineError(f"the vLLM worker for {self.folder} exited ({process.returncode}): {self.log_tail()}")
        return accepted[0]

    def _reply(self, connection) -> dict:
        try:
            reply = connection.recv()
        except EOFError:
            raise EngineError(f"the vLLM worker for {self.folder} stopped: {self.log_tail()}") from None
        if "error" in reply:
            raise EngineError(f"vLLM cannot serve {self.folder}: {reply['error']}")
        return reply

    def log_tail(self, lines: int = 3) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "no output"

    def generate(self, requests: list[dict], sampling: dict) -> list[Served]:
        """Answers to requests ({prompt_token_ids, frames, metadata}), dealt evenly among the engines, in order."""
        share = -(-len(requests) // len(self._connections))
        parts = [requests[i * share : (i + 1) * share] for i in range(len(self._connections))]
        busy = [(c, part) for c, part in zip(self._connections, parts) if part]
        for connection, part in busy:
            connection.send({"op": "generate", "requests": part, "sampling": sampling})
        served = []
        for connection, _ in busy:
            for output in self._reply(connection)["outputs"]:
                samples = [Sampled(s["token_ids"], s["first_logprobs"]) for s in output["samples"]]
                served.append(Served(output["prompt_token_ids"], samples))
        return served

    def load_weights(self, path: Path) -> None:
        """New weights (a safetensors file in the folder's own names) into every engine."""
        for connection in self._connections:
            connection.send({"op": "load_weights", "path": str(path)})
        for connection in self._connections:
            self._reply(connection)

    def close(self) -> None:
        for connection in self._connections:
            with contextlib.suppress(OSError, EOFError):
                connection.send({"op": "close"})
        for process in self._processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._listener.close()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batch_requests(batch: Batch) -> list[dict]:
    """The real rows of a batch whose prompts keep their clip's marker (UnexpandedVideo) as vLLM requests."""
    rows = (~batch.is_padding).nonzero().flatten().tolist()
    return [row_request(batch, row, batch.input_ids[row][batch.attention_mask[row].bool()].tolist()) for row in rows]


def row_request(batch: Batch, row: int, prompt_ids: list[int]) -> dict:
    """A vLLM request of a batch row: its prompt ids (the clip's marker unexpanded), the clip's frames and its video
    metadata (the frames already sampled: vLLM keeps each)."""
    return {
        "prompt_token_ids": prompt_ids,
        "frames": batch.frames[row].cpu().numpy(),
        "metadata": batch.clips[row].as_metadata() | {"do_sample_frames": False},
    }


def greedy(max_new_tokens: int, eos_token_id: int) -> dict:
    """vLLM's sampling settings of an answer by the paper's rule: greedy, ended by the end-of-turn token."""
    return {
        "temperature": 0.0,
        "max_tokens": max_new_tokens,
        "stop_token_ids": [eos_token_id],
        "logprobs": LETTER_LOGPROBS,
        "detokenize": False,
    }


def answer_tokens(sample: Sampled, eos_token_id: int) -> list[int]:
    """An answer's tokens as the hf engine gives them: the end token left out."""
    return [t for t in sample.tokens if t != eos_token_id]


def letter_scores(sample: Sampled, letter_ids: list[int], count: int) -> list[float]:
    """The first step's log-probability of each option letter (-inf for one outside the returned ones)."""
    return [sample.first_logprobs.get(letter_ids[i], float("-inf")) for i in range(count)]
