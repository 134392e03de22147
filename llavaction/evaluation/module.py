"""The LightningModule that answers EK-100-MQA questions: a video LLM with its tokenizer, the validation and test
metrics (each scoring mode's accuracy, chance, the action heads' EK-100 figures) and the prediction records. Training's
module (llavaction.training.module) extends it; evaluation builds it from a checkpoint (evaluation.checkpoints)."""

from __future__ import annotations

import dataclasses

import lightning as L
import torch

from llavaction.benchmark.answers import prediction_record
from llavaction.benchmark.metrics import mqa_figures
from llavaction.benchmark.uncertainty import cluster_of, hit_intervals
from llavaction.data.batch import Batch
from llavaction.data.options import SampleFormat
from llavaction.ek100.metrics import EpicActionMetrics, top5_hits
from llavaction.evaluation.options import EvaluationOptions
from llavaction.evaluation.scoring import MQAAnswerer, head_class_scores
from llavaction.model.architecture import build_model, meet_tokenizer, video_format
from llavaction.model.family import ModelFamily
from llavaction.prompts.formats import video_format as read_video_format
from llavaction.prompts.tokenizer import load_tokenizer

# What the model tells the DataModule (train.py links them; evaluation builds its DataModule through the same pairs).
DATA_LINKS = (
    ("tokenizer_path", "tokenizer"),
    ("chat_format", "chat_format"),
    ("sample_format", "sample_format"),
)


class MQAModule(L.LightningModule):
    """A video LLM answering the questions of a batch by the evaluation options' modes (the first is the headline:
    under 'generate', the paper's rule on the greedy answer)."""

    def __init__(
        self,
        family: ModelFamily,
        config,
        tokenizer: str | None,
        evaluation: EvaluationOptions = EvaluationOptions(),
        weights: str | None = None,
        from_preset: bool = False,
        recorded_format: dict | None = None,
    ):
        """family: the model family; config: its architecture; tokenizer: its folder (or hub id); weights: a
        checkpoint directory the weights come from (None: loaded later from a state dict, or freshly initialised);
        from_preset: the architecture is a preset's (its tokenizer gains the family's special tokens it lacks, and the
        config takes their ids); recorded_format: how the model reads a sample as its training recorded it (None:
        resolved from the config and the tokenizer's chat template)."""
        super().__init__()
        self.weights = weights
        self.tokenizer_path = tokenizer
        if tokenizer is None:
            raise ValueError("set model.tokenizer (or model.checkpoint, whose tokenizer is used)")
        self.tokenizer = load_tokenizer(tokenizer)
        self.family = family
        self.config = meet_tokenizer(family, config, self.tokenizer, from_preset)
        self.video_format = (
            video_format(family, self.config, self.tokenizer, from_preset, str(tokenizer))
            if recorded_format is None
            else read_video_format(recorded_format)
        )
        if len(self.tokenizer) > config.text["vocab_size"]:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens, the LLM only {config.text['vocab_size']}")
        self.model: torch.nn.Module | None = None
        self.answerer: MQAAnswerer | None = None
        self.val_ek100 = EpicActionMetrics()
        self.set_evaluation(evaluation)

    def set_evaluation(self, evaluation: EvaluationOptions) -> None:
        """How questions are answered from now on (the metrics start over)."""
        self.evaluation = evaluation
        # per scoring mode, this rank's prediction records (benchmark.answers), whose figures benchmark.metrics defines
        self.val_records: dict[str, list[dict]] = {mode: [] for mode in evaluation.mqa_scoring}
        # per question of this rank with a class: its id, video and action heads' hits (EK-100's figures)
        self.val_head_hits: list[tuple[str, str, dict[str, bool]]] = []
        self.validation_questions: list[tuple[str, str, dict[str, bool]]] = []  # the last validation's, every rank's
        if self.model is not None:
            self.answerer = MQAAnswerer(self.model, self.tokenizer, self.video_format, evaluation.max_new_tokens)

    @property
    def sample_format(self) -> dict:
        """What training asks of the samples (data.options.SampleFormat as plain values, as checkpoints record it; the
        DataModule is linked to this): supervised answers, no reasoning."""
        return dataclasses.asdict(SampleFormat())

    def final_answer(self, generation: str) -> str:
        """The part of a generated answer the paper's rule reads (all of it; a stage that asks for reasoning first
        reads what follows it)."""
        return generation

    @property
    def chat_format(self) -> dict:
        """How the model reads a sample, as plain values (the DataModule is linked to this; checkpoints record it)."""
        return self.video_format.as_dict()

    def build_model(self) -> torch.nn.Module:
        return build_model(self.family, self.config, self.weights)

    def configure_model(self) -> None:
        if self.model is None:
            self.model = self.build_model()
            self.answerer = MQAAnswerer(self.model, self.tokenizer, self.video_format, self.evaluation.max_new_tokens)

    def head_layers(self) -> str | None:
        """The action-head layers read in evaluation: a checkpoint's own heads at the last layer."""
        return "last" if self.config.action_types else None

    def _eval_step(self, batch: Batch) -> dict:
        """Updates the metrics; returns the options chosen by the first mode's rule (the paper's rule on the greedy
        answer under 'generate': -1 where it matches no option), for the figure callbacks."""
        modes = self.evaluation.mqa_scoring
        answers = self.answerer(batch, modes, self.head_layers())
        real = ~batch.is_padding
        head_hits = {}
        if answers.action_logits is not None:
            self.val_ek100.update_from_batch(*answers.action_logits[-1][:2], batch)
            verb_scores, noun_scores = answers.action_logits[-1][:2]
            top5 = top5_hits(
                verb_scores,
                noun_scores,
                batch.verb_class.to(verb_scores.device),
                batch.noun_class.to(verb_scores.device),
            )
            head_hits = {
                f"ek100/all_{kind}_accuracy_at_{k}": top5[kind][:, :k].any(-1).tolist() for kind in top5 for k in (1, 5)
            }
        rows = real.nonzero().flatten().tolist()
        chosen = {}
        for mode in modes:
            generate = mode == "generate"
            scores = answers.scores.get("letter" if generate else mode)
            records = [
                prediction_record(
                    batch.meta[row],
                    [] if scores is None else scores[row, : len(batch.meta[row]["options"])].tolist(),
                    self.final_answer(answers.generations[row]) if generate else None,
                )
                | ({"generation": answers.generations[row]} if generate else {})  # the whole text, reasoning included
                for row in rows
            ]
            self.val_records[mode] += records
            picks = torch.full((len(batch.meta),), -1, dtype=torch.long)
            picks[rows] = torch.tensor(  # long even for a batch of padding only (no rows)
                [-1 if r["rule_choice_index"] is None else r["rule_choice_index"] for r in records], dtype=torch.long
            )
            chosen[mode] = picks.to(real.device)
        for row in rows if head_hits else ():
            if int(batch.verb_class[row]) >= 0:
                meta = batch.meta[row]
                hits = {name: bool(values[row]) for name, values in head_hits.items()}
                self.val_head_hits.append((meta["narration_id"], cluster_of(meta), hits))
        return {"chosen": chosen[modes[0]], "generations": answers.generations}

    def _eval_epoch_end(self, prefix: str) -> None:
        """Logs every mode's figures (benchmark.metrics, as `evaluate mqa` computes them) over every rank's questions,
        so each rank logs the same values, and the action heads' EK-100 figures with their intervals."""
        records, head_hits = self.val_records, self.val_head_hits
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (records, head_hits))
            records = {mode: [r for part, _ in gathered for r in part[mode]] for mode in records}
            head_hits = [row for _, part in gathered for row in part]
        self.val_records = {mode: [] for mode in records}
        self.val_head_hits = []
        modes = self.evaluation.mqa_scoring
        if not records[modes[0]]:
            return
        for mode in modes:
            figures = mqa_figures(records[mode], mode)
            names = [f"mqa_accuracy_{mode}", "mqa_accuracy"] if mode == modes[0] else [f"mqa_accuracy_{mode}"]
            for name in names:
                self._log_figure(f"{prefix}/{name}", figures["accuracy"], figures["accuracy_interval"])
            if mode == modes[0]:
                scalars = {"chance": figures["chance"], "questions": figures["count"], "videos": figures["videos"]}
                self.log_dict({f"{prefix}/{k}": float(v) for k, v in scalars.items()}, sync_dist=True)
                for part, values in figures["breakdown"].items():
                    if values["count"]:
                        self._log_figure(f"{prefix}/breakdown/{part}", values["accuracy"], values["interval"])
            if mode == "generate":
                self.log(f"{prefix}/no_option_matched", float(figures["no_option_matched"]), sync_dist=True)
                self.log(f"{prefix}/parse_failures", float(figures["parse_failures"]), sync_dist=True)
                self._log_figure(f"{prefix}/reference_exact_accuracy", figures["reference_exact_accuracy"], None)
        if self.val_ek100.update_count:
            self.log_dict({f"{prefix}/ek100/{k}": v for k, v in self.val_ek100.compute().items()}, sync_dist=True)
            for name, found in hit_intervals([(video, hits) for _, video, hits in head_hits]).items():
                self._log_figure(f"{prefix}/{name}", None, found.as_dict())
        self.val_ek100.reset()
        heads = {name: hits for name, _, hits in head_hits}
        self.validation_questions = [
            (
                r["narration_id"],
                cluster_of(r),
                {f"mqa_accuracy_{m}": bool(records[m][i]["correct"]) for m in modes} | heads.get(r["narration_id"], {}),
            )
            for i, r in enumerate(records[modes[0]])
        ]

    def _log_figure(self, name: str, value: float | None, interval: dict | None) -> None:
        """A figure in percent as `name`, its 95% interval as `name_low` / `name_high` (either may be absent)."""
        if value is not None:
            self.log(name, float(value), sync_dist=True)
        if interval is not None:
            self.log(f"{name}_low", float(interval["low"]), sync_dist=True)
            self.log(f"{name}_high", float(interval["high"]), sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> dict:
        return self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        """One record per real question (benchmark.answers.prediction_record): under 'generate' the greedy answer
        judged by the paper's rule, with the letter logits as scores; otherwise the option scores of the first mode."""
        mode = self.evaluation.mqa_scoring[0]
        generate = mode == "generate"
        modes = ("generate", "letter") if generate else (mode,)
        answers = self.answerer(batch, modes, self.head_layers())
        scores = answers.scores["letter" if generate else mode]
        texts = answers.generations if generate else [None] * len(batch.meta)
        heads = head_class_scores(answers.action_logits, len(batch.meta))
        return [
            prediction_record(meta, row[: len(meta["options"])].tolist(), text) | head
            for meta, row, padding, text, head in zip(batch.meta, scores, batch.is_padding.tolist(), texts, heads)
            if not padding
        ]
