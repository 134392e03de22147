"""Questions answered by the vLLM engine (llavaction.evaluation.engines): the folder vLLM serves (the checkpoint's own
transformers-layout folder, or its export), and the same questions, clips and prompts as the hf engine's, the
prompts keeping their clip's marker for vLLM's processor to expand."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

from llavaction.benchmark.answers import prediction_record
from llavaction.evaluation.checkpoint_format import export_model, is_model_folder
from llavaction.evaluation.engines import (
    EngineError,
    EngineOptions,
    Sampled,
    VllmEngine,
    answer_tokens,
    batch_requests,
    greedy,
    letter_scores,
)
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.formats import UnexpandedVideo
from llavaction.prompts.wording import MAX_OPTIONS


def served_folder(loaded, module, stack: contextlib.ExitStack) -> Path:
    """The folder vLLM loads: the checkpoint's own when it is the family's transformers layout with its processor
    files, else the model exported into a temporary folder (kept until `stack` closes)."""
    family = module.family
    if family.vllm_architecture is None:
        raise EngineError(f"vLLM does not run the {family.name} family here: use --engine hf")
    own = loaded.model_settings.checkpoint if is_model_folder(loaded.source) else None
    folder = Path(own) if own else None
    if folder is not None and (folder / "config.json").is_file():
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
        if family.vllm_architecture in architectures and (folder / "tokenizer.json").is_file():
            return folder
    out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llavaction-served-"))) / "model"
    export_model(family, module.model, module.tokenizer, module.video_format, out, True, "transformers")
    return out


def unexpanded_format(module, folder: Path) -> UnexpandedVideo:
    """The model's format with its clip left as the marker, and the action tokens the served folder's vocabulary
    holds (an export's)."""
    settings = folder / "action_heads.json"
    tokens = json.loads(settings.read_text()).get("action_tokens", []) if settings.exists() else []
    if module.config.action_tokens and not tokens:
        raise EngineError(
            f"{folder}: the model reads learned action tokens the folder's vocabulary lacks: serve its llavaction "
            "export (llavaction export), which holds them as tokens"
        )
    return UnexpandedVideo.of(module.video_format, tokens)


class ServedAnswers:
    """Answers by the vLLM engine to batches whose prompts keep their clip's marker (the served folder's tokenizer and
    format, `tokenizer` and `format`): each real row's greedy answer, its tokens, and its first step's
    log-probabilities."""

    def __init__(self, loaded, module, options: EngineOptions, max_new_tokens: int, stack: contextlib.ExitStack):
        from llavaction.prompts.tokenizer import load_tokenizer

        folder = served_folder(loaded, module, stack)
        self.tokenizer, self.format = load_tokenizer(folder), unexpanded_format(module, folder)
        encoder = PromptEncoder(self.tokenizer)
        self.eos, self.letter_ids = encoder.eos_ids[0], encoder.letter_token_ids(MAX_OPTIONS)
        self.max_new_tokens = max_new_tokens
        self.engine = stack.enter_context(VllmEngine(folder, options))

    def __call__(self, batch) -> list[tuple[str, Sampled]]:
        served = self.engine.generate(batch_requests(batch), greedy(self.max_new_tokens, self.eos))
        return [
            (self.tokenizer.decode(answer_tokens(s.samples[0], self.eos), skip_special_tokens=True), s.samples[0])
            for s in served
        ]


def vllm_predictions(loaded, module, data_for, options: EngineOptions, max_new_tokens: int) -> list[dict]:
    """prediction_record of every question the DataModule asks, answered by vLLM greedily (the paper's rule; the
    letter scores: the first step's log-probabilities). data_for(format, tokenizer folder) -> the DataModule."""
    with contextlib.ExitStack() as stack:
        served = ServedAnswers(loaded, module, options, max_new_tokens, stack)
        data = data_for(served.format, str(served.engine.folder))
        data.setup("test")
        records = []
        for batch in data.test_dataloader():
            metas = [meta for meta, padding in zip(batch.meta, batch.is_padding.tolist()) if not padding]
            for meta, (text, sample) in zip(metas, served(batch)):
                scores = letter_scores(sample, served.letter_ids, len(meta["options"]))
                records.append(prediction_record(meta, scores, text))
        return records
