"""Rollouts by vLLM (model.rollout.engine: vllm): the policy's transformers-layout export served by vLLM's worker
(llavaction.evaluation.engines, in vLLM's own environment), the new weights pushed after each optimizer step. A
prompt keeps its clip's marker for vLLM's processor to expand (spliced from the training row, whose expanded ids the
loss reads), each completion is drawn with a seed from the step's generator (a resumed run asks for the samples the
uninterrupted run asked for), and the tokens the model's sampler never draws are not allowed to vLLM either."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from llavaction.data.batch import Batch
from llavaction.evaluation.checkpoint_format import export_model
from llavaction.evaluation.engines import EngineOptions, VllmEngine, row_request
from llavaction.evaluation.serving import unexpanded_format
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.tokenizer import load_tokenizer
from llavaction.training.grpo.options import RolloutOptions
from llavaction.training.grpo.rollouts import Drawn, Sampler, banned_ids

SEEDS = 2**31 - 1  # vLLM takes a request's seed as a 32-bit int


class ServedSampler(Sampler):
    """Samples completions with a vLLM engine holding the module's current weights (serve() before each draw)."""

    encodes = False  # vLLM encodes the clips' frames itself

    def __init__(self, tokenizer, options: RolloutOptions, video_format):
        super().__init__(tokenizer, options)
        self.expanded = PromptEncoder(tokenizer, chat=video_format)
        self.allowed: list[int] = []
        self.stack = contextlib.ExitStack()
        self.engine: VllmEngine | None = None
        self.unexpanded: PromptEncoder | None = None
        self.served_step: int | None = None
        self.work: Path | None = None  # the exports' folder, while the engine runs

    def serve(self, module) -> None:
        """The engine holds the module's weights: started from their export on the first call (a resumed run's
        too), given the weights again when the optimizer stepped since the last call."""
        step = module.global_step
        if self.engine is not None and step == self.served_step:
            return
        if self.engine is None:
            self.work = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="llavaction-rollouts-")))
        folder = self.work / f"step_{step}"
        export_model(module.family, module.model, module.tokenizer, module.video_format, folder, True, "transformers")
        if self.engine is None:
            options = EngineOptions(
                engine="vllm", vllm_python=self.options.vllm_python, gpu_memory_utilization=self.options.vllm_memory
            )
            self.engine = self.stack.enter_context(VllmEngine(folder, options, seed=self.options.seed))
            served = load_tokenizer(folder)
            self.unexpanded = PromptEncoder(served, chat=unexpanded_format(module, folder))
            # every row of the vocabulary the model's sampler may draw (its special tokens, the export's action
            # tokens among them, never), so that vLLM samples what the model would
            banned = set(banned_ids(served, self.eos))
            self.allowed = [i for i in range(vocabulary_size(folder)) if i not in banned]
        else:
            for path in weight_files(folder):
                self.engine.load_weights(path)
            shutil.rmtree(folder)
        self.served_step = step

    def close(self) -> None:
        self.stack.close()
        self.engine, self.served_step, self.work = None, None, None

    def draw(self, model, batch: Batch, visual, questions: list[int], generator: torch.Generator) -> Drawn:
        """One completion for each entry of `questions` (batch rows), each request seeded from the generator."""
        if self.engine is None:
            raise RuntimeError("the vLLM rollout engine is not started: serve() the module first")
        rows = {q: self.request(batch, q) for q in sorted(set(questions))}
        seeds = torch.randint(SEEDS, (len(questions),), generator=generator, device=generator.device).tolist()
        requests = [rows[q] | {"seed": seed} for q, seed in zip(questions, seeds)]
        served = self.engine.generate(requests, self.engine_sampling())
        tokens = [list(s.samples[0].tokens) for s in served]
        ended = [bool(t) and t[-1] == self.eos for t in tokens]
        return Drawn([t[:-1] if end else t for t, end in zip(tokens, ended)], ended)

    def engine_sampling(self) -> dict:
        """vLLM's sampling settings of the rollouts: the options', ended by the end-of-turn token."""
        options = self.options
        return {
            "temperature": options.temperature,
            "top_p": options.top_p,
            "top_k": options.top_k,
            "max_tokens": options.max_new_tokens,
            "stop_token_ids": [self.eos],
            "allowed_token_ids": self.allowed,
            "detokenize": False,
        }

    def request(self, batch: Batch, row: int) -> dict:
        """A batch row as a vLLM request, its prompt ids with the clip's visual ids put back to the served format's
        marker."""
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        clip, size = batch.clips[row], batch.frames.shape[2]
        prefix, visual = self.expanded.prefix_ids, self.expanded.visual(clip, size).ids
        start, end = len(prefix), len(prefix) + len(visual)
        if ids[:start] != prefix or ids[start:end] != visual:
            raise ValueError(
                f"row {row} ({batch.meta[row].get('narration_id')}): its clip is not where the chat "
                "format puts it, so the prompt cannot be served"
            )
        unexpanded = self.unexpanded
        return row_request(batch, row, unexpanded.prefix_ids + unexpanded.visual(clip, size).ids + ids[end:])


def vocabulary_size(folder: Path) -> int:
    """The served model's vocabulary size (its LLM's, in config.json or the LLM's part of it)."""
    config = json.loads((folder / "config.json").read_text())
    parts = [config] + [value for value in config.values() if isinstance(value, dict)]
    sizes = [part["vocab_size"] for part in parts if "vocab_size" in part]
    if not sizes:
        raise ValueError(f"{folder / 'config.json'}: no vocab_size")
    return sizes[0]


def weight_files(folder: Path) -> list[Path]:
    """The export's weight files (its index's; not the action heads beside them)."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return [folder / name for name in sorted(set(index["weight_map"].values()))]
