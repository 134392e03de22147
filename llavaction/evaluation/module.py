"""The LightningModule that answers EK-100-MQA questions: a video LLM with its tokenizer, the validation and test
metrics (each scoring mode's accuracy, chance, the action heads' EK-100 figures) and the prediction records. Training's
module (llavaction.training.module) extends it; evaluation builds it from a checkpoint (evaluation.checkpoints)."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import SumMetric

from llavaction.benchmark.answers import prediction_record, rule_choice
from llavaction.benchmark.uncertainty import cluster_of, hit_intervals
from llavaction.data.batch import Batch
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
        self.val_total, self.val_chance = SumMetric(), SumMetric()
        self.val_unmatched = SumMetric()  # generated answers that match no option (the paper's rule)
        self.val_correct = torch.nn.ModuleDict({mode: SumMetric() for mode in evaluation.mqa_scoring})
        # per question of this rank: its id, its video and whether each figure counts it right
        self.val_hits: list[tuple[str, str, dict[str, bool]]] = []
        self.validation_questions: list[tuple[str, str, dict[str, bool]]] = []  # the last validation's, every rank's
        if self.model is not None:
            self.answerer = MQAAnswerer(self.model, self.tokenizer, self.video_format, evaluation.max_new_tokens)

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
        answerable = real & (batch.answer_index >= 0)
        chosen = {mode: scores.argmax(-1) for mode, scores in answers.scores.items()}
        if "generate" in modes:
            picks = [
                rule_choice(text, meta["options"], meta["answer_index"])
                for text, meta in zip(answers.generations, batch.meta)
            ]
            chosen["generate"] = torch.tensor([-1 if c is None else c for c in picks], device=real.device)
            self.val_unmatched.update(((chosen["generate"] < 0) & real).sum().float())
        per_mode = {}
        for mode, correct in self.val_correct.items():
            # one rule per mode: a question counts when the mode's choice is the right option
            hits = (chosen[mode].to(real.device) == batch.answer_index) & answerable
            correct.update(hits.sum().float())
            per_mode[f"mqa_accuracy_{mode}"] = hits.tolist()
        for row in real.nonzero().flatten().tolist():
            has_classes = int(batch.verb_class[row]) >= 0
            hits = {name: bool(values[row]) for name, values in per_mode.items()}
            hits |= {name: bool(values[row]) for name, values in head_hits.items() if has_classes}
            meta = batch.meta[row]
            self.val_hits.append((meta["narration_id"], cluster_of(meta), hits))
        self.val_total.update(real.sum())
        self.val_chance.update((real / batch.num_options.clamp(min=1)).sum())
        return {"chosen": chosen[modes[0]], "generations": answers.generations}

    def _eval_epoch_end(self, prefix: str) -> None:
        total = self.val_total.compute()
        # The metrics are already summed over ranks; sync_dist only averages identical values.
        for i, (mode, correct) in enumerate(self.val_correct.items()):
            accuracy = 100.0 * correct.compute() / total.clamp(min=1)
            self.log(f"{prefix}/mqa_accuracy_{mode}", accuracy, sync_dist=True)
            if i == 0:
                self.log(f"{prefix}/mqa_accuracy", accuracy, prog_bar=True, sync_dist=True)
        self.log(f"{prefix}/chance", 100.0 * self.val_chance.compute() / total.clamp(min=1), sync_dist=True)
        self.log(f"{prefix}/questions", total, sync_dist=True)
        if "generate" in self.val_correct:
            self.log(f"{prefix}/no_option_matched", self.val_unmatched.compute(), sync_dist=True)
        if self.val_ek100.update_count:
            self.log_dict({f"{prefix}/ek100/{k}": v for k, v in self.val_ek100.compute().items()}, sync_dist=True)
        self._log_intervals(prefix)
        for metric in (self.val_total, self.val_chance, self.val_unmatched, self.val_ek100, *self.val_correct.values()):
            metric.reset()

    def _log_intervals(self, prefix: str) -> None:
        """The 95% interval of each figure (a bootstrap over videos) as `<figure>_low` / `_high` scalars; every rank
        gathers every rank's questions, so each logs the same values."""
        rows = self.val_hits
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        self.val_hits, self.validation_questions = [], rows
        if not rows:
            return
        headline = f"mqa_accuracy_{self.evaluation.mqa_scoring[0]}"
        for name, interval in hit_intervals([(video, hits) for _, video, hits in rows]).items():
            for label in {name, "mqa_accuracy"} if name == headline else {name}:
                self.log(f"{prefix}/{label}_low", interval.low, sync_dist=True)
                self.log(f"{prefix}/{label}_high", interval.high, sync_dist=True)
        self.log(f"{prefix}/videos", float(len({video for _, video, _ in rows})), sync_dist=True)

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
