"""EK-100-MQA accuracy of a checkpoint over question files and their shards.

The headline is the paper's metric: greedy generation, correct when the answer's text after its last 'X. ' equals the
right option's text (llavaction.metrics.paper_correct). `mode='score'` is a fast proxy: the option with the best letter
logit or option-text likelihood.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from llavaction.benchmark.metrics import mqa_figures
from llavaction.data.options import LoaderOptions, PriorActionOptions
from llavaction.data.shards import stored_frames
from llavaction.evaluation.candidates import write_head_outputs
from llavaction.evaluation.checkpoint_format import Precision, check_precision
from llavaction.evaluation.checkpoints import LoadedCheckpoint
from llavaction.evaluation.engines import EngineOptions
from llavaction.evaluation.lmms_eval import write_results_layout
from llavaction.evaluation.options import MAX_NEW_TOKENS, EvaluationOptions, QuestionOptions
from llavaction.evaluation.questions import check_frames, check_frames_source, question_cards, read_questions
from llavaction.evaluation.serving import vllm_predictions
from llavaction.utils.checks import check_count
from llavaction.utils.files import check_apart, check_output_folder, exclusive_output, replaced_folder
from llavaction.utils.jsonl import write_json, write_jsonl
from llavaction.utils.version import code_version


@dataclass(frozen=True, kw_only=True)
class MQAEvaluation(QuestionOptions, EngineOptions):
    """EK-100-MQA accuracy of a checkpoint over question files and their shards; unset settings follow the checkpoint
    (its training's prompt settings and precision; the frames also what the shards hold).

    Args:
        questions: question files of data_prep.build_mqa.
        shards: their shard sets (directories or URLs), built from these question files.
        frames: instead of shards, frame stores: shard sets of the same clips built from any question file, over
            whose frames these questions are asked (no video decoded; each question's clip checked).
        checkpoint: a Lightning .ckpt, an original checkpoint directory or a model-hub id.
        out: the results folder (predictions.jsonl, results.json, the lmms-eval layout).
        tokenizer: tokenizer directory (default: the checkpoint's).
        mode: 'generate': greedy answers scored by the paper's rule; 'score': a fast proxy (the best option score).
        scoring: the score mode's rule: option-letter logits or option-text likelihood.
        max_new_tokens: longest generated answer (generation stops earlier at the end-of-turn token).
        candidates: with action heads, the actions per segment written to head_candidates.json.
        devices: processes a node (GPUs when present, else CPU processes).
        num_nodes: nodes (torchrun, SLURM, or NODE_RANK/MASTER_ADDR as in training).
        batch_size: questions per batch and process.
        num_workers: loader worker processes per process.
        precision: Lightning's precision name (default: the checkpoint's; the hf engine's).
        engine: 'hf' (this codebase's model) or 'vllm' (vLLM serving its export; by generation only); the vLLM
            settings follow (README, "Engines").
    """

    questions: list[Path]
    shards: list[str] | None = None
    frames: list[str] | None = None
    checkpoint: str
    out: Path
    tokenizer: str | None = None
    mode: Literal["generate", "score"] = "generate"
    scoring: Literal["letter", "likelihood"] = "letter"
    max_new_tokens: int = MAX_NEW_TOKENS
    candidates: int = 10
    devices: int = 1
    num_nodes: int = 1
    batch_size: int = 8
    num_workers: int = 2
    precision: Precision | None = None

    def __post_init__(self):
        super().__post_init__()
        EngineOptions.__post_init__(self)
        check_frames_source(self.shards, self.frames)
        if self.engine == "vllm" and self.mode != "generate":
            raise ValueError("--engine vllm answers by generation (--mode generate); score with --engine hf")
        for name in ("max_new_tokens", "candidates", "devices", "num_nodes", "batch_size"):
            check_count(name, getattr(self, name), minimum=1)
        check_count("num_workers", self.num_workers, minimum=0)

    @property
    def prompt_settings(self) -> dict:
        return {
            "num_frames": self.num_frames,
            "time_instruction": self.time_instruction,
            "frame_times": self.frame_times,
            "prior_actions": self.prior_actions,
        }


def evaluate_mqa(run: MQAEvaluation, loaded: LoadedCheckpoint | None = None) -> dict | None:
    """Run the evaluation, write predictions.jsonl, results.json and the lmms-eval layout into run.out; returns the
    results on the global-zero process (None elsewhere). The questions are checked against the shards and the
    checkpoint is read before any forward pass (loaded: the checkpoint already read, for several evaluations of it).
    run.out is new, empty or an earlier evaluation's, which this one replaces whole; any other folder (a run folder, a
    home directory) is refused before any work."""
    check_apart({"--out": run.out}, evaluation_inputs(run), folders=True)
    with exclusive_output(run.out):
        check_output_folder(run.out, MQA_COMMAND)
        return _evaluate_mqa(run, loaded)


MQA_COMMAND = "llavaction evaluate mqa"  # the marker of an evaluation folder (utils.files.replaced_folder)


def evaluation_inputs(run: MQAEvaluation) -> dict:
    """What an evaluation reads, by option (no output may be one of them)."""
    return {
        "--questions": run.questions,
        "--shards": run.shards,
        "--frames": run.frames,
        "--checkpoint": run.checkpoint,
        "--tokenizer": run.tokenizer,
        "--pseudo_predictions": run.pseudo_predictions,
    }


def _evaluate_mqa(run: MQAEvaluation, loaded: LoadedCheckpoint | None) -> dict | None:
    import lightning as L

    questions = read_questions(run.questions)
    locations = check_frames(questions, run.shards, run.frames)
    loaded = loaded or LoadedCheckpoint.open(run.checkpoint, run.tokenizer)
    settings = loaded.question_settings(run, stored_frames(locations))
    run = replace(run, **asdict(settings), precision=check_precision(run.precision or loaded.precision))
    modes = ("generate", "letter") if run.mode == "generate" else (run.scoring,)
    module = loaded.module(EvaluationOptions(mqa_scoring=modes, max_new_tokens=run.max_new_tokens))

    def data_for(chat=None, tokenizer=None):
        """The evaluation's DataModule (a serving engine's: its tokenizer, the clip's marker unexpanded)."""
        served = {} if chat is None else {"chat_format": chat.as_dict(), "tokenizer": tokenizer}
        return loaded.datamodule(
            locations,
            settings,
            LoaderOptions(eval_batch_size=run.batch_size, num_workers=run.num_workers),
            PriorActionOptions(evaluation=run.prior_actions, pseudo_predictions=run.pseudo_predictions),
            questions=questions,  # only these, though the shards may hold other clips
            **served,
        )

    if run.engine == "vllm":
        gathered = [vllm_predictions(loaded, module, data_for, run, run.max_new_tokens)]
    else:
        trainer = L.Trainer(
            accelerator="auto",
            devices=run.devices,
            num_nodes=run.num_nodes,
            logger=False,
            enable_checkpointing=False,
            precision=run.precision,
            enable_progress_bar=True,
        )
        parts = trainer.predict(module, datamodule=data_for(), return_predictions=True)
        local = [record for part in parts for record in part]
        gathered = [local]
        if trainer.world_size > 1:
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
        if not trainer.is_global_zero:
            return None
    ids = {path: {q["narration_id"] for q in records} for path, records in questions.items()}
    wanted = set().union(*ids.values())
    predictions = sorted(
        (r for rank in gathered for r in rank if r["narration_id"] in wanted), key=lambda r: r["narration_id"]
    )
    asked = sum(len(keys) for keys in ids.values())
    if len(predictions) != asked or len({r["narration_id"] for r in predictions}) != asked:
        raise ValueError(
            f"{len(predictions)} answers for the {asked} questions of {', '.join(map(str, run.questions))}: the shards "
            "gave other samples than their index lists; nothing written"
        )
    heads = any("verb_scores" in r for r in predictions)
    results = mqa_figures(predictions, run.mode) | {
        "per_question_file": {
            path: mqa_figures([r for r in predictions if r["narration_id"] in keys], run.mode)
            for path, keys in ids.items()
        },
        "scoring": None if run.mode == "generate" else run.scoring,
        "rule": "the paper's rule on greedy answers" if run.mode == "generate" else f"{run.scoring} scores",
        "engine": run.engine,
        "benchmark": question_cards(run.questions),
        "checkpoint": run.checkpoint,
        "settings": run.prompt_settings,
        "config": {k: str(v) for k, v in asdict(run).items()},
        "code_version": code_version(),
    }
    with replaced_folder(run.out, MQA_COMMAND) as folder:  # an earlier evaluation is replaced whole, not added to
        if heads:
            write_head_outputs(predictions, folder, run.candidates)
        write_jsonl(folder / "predictions.jsonl", predictions)
        write_json(folder / "results.json", results)
        write_results_layout(folder, predictions, results)
    return results
