"""The LightningModule: LlavaVideoModel + LM loss (+ action heads) + EK-100-MQA metrics + optimiser, sharded with
FSDP2 when asked."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import lightning as L
import torch
from torchmetrics import SumMetric
from transformers import get_cosine_schedule_with_warmup

from llavaction import sharding
from llavaction.args import (
    ActionSupervision,
    ComputeOptions,
    EvaluationOptions,
    OptimizerOptions,
    TrainableParts,
)
from llavaction.losses import action_supervision_loss
from llavaction.metrics import EpicActionMetrics, prediction_record, rule_choice
from llavaction.model import LlavaVideoModel, load_tokenizer, preset
from llavaction.model.checkpoint import ACTION_SUPERVISION_NAMES, read_config, save_original
from llavaction.model.config import LlavaVideoConfig
from llavaction.optim import optimizer_steps, param_groups, trainable
from llavaction.scoring import MQAAnswerer, head_class_scores

# Entries a training checkpoint carries beside Lightning's: the tokenizer's files ({name: bytes}) and the precision.
TOKENIZER_FILES, TRAINED_PRECISION = "llavaction_tokenizer_files", "llavaction_precision"
# What the model tells the DataModule (train.py links them; evaluation builds its DataModule through the same pairs).
DATA_LINKS = (
    ("tokenizer_path", "tokenizer"),
    ("tokens_per_frame", "tokens_per_frame"),
    ("extra_visual_tokens", "extra_visual_tokens"),
)


class LlavaActionModule(L.LightningModule):
    """Video LLM training on EK-100 tasks; EK-100-MQA validation by the paper's rule (greedy answers) and proxies."""

    def __init__(
        self,
        preset_name: str = "tiny",
        checkpoint: str | None = None,
        tokenizer: str | None = None,
        spatial_pool_mode: str | None = None,
        newline_position: str | None = None,
        trainable: TrainableParts = TrainableParts(),
        optimizer: OptimizerOptions = OptimizerOptions(),
        compute: ComputeOptions = ComputeOptions(),
        action: ActionSupervision = ActionSupervision(),
        evaluation: EvaluationOptions = EvaluationOptions(),
        export_dir: str | None = None,
        architecture: dict | None = None,
    ):
        """
        Args:
            preset_name: architecture preset ('tiny', '0.5b', '7b') when no checkpoint is given (random init).
            checkpoint: original LLaVA-Video / LLaVAction checkpoint directory to start from.
            tokenizer: tokenizer directory; defaults to the checkpoint directory.
            spatial_pool_mode: override the 2x2 pooling ('bilinear', 'average', 'max').
            newline_position: override the newline tokens ('grid', 'frame', 'none').
            trainable: which parts are updated.
            optimizer: learning rates, weight decay and warmup.
            compute: attention kernel, checkpointing, compilation, packing.
            action: action-token supervision (LLaVAction's heads).
            evaluation: how validation and test answer the questions.
            export_dir: after fit, write the original checkpoint layout (and tokenizer) here.
            architecture: the model's architecture as training resolved it (LlavaVideoConfig fields); training records
                it in its checkpoints so they load without the starting checkpoint. Leave unset.
        """
        super().__init__()
        self.save_hyperparameters()
        # a checkpoint's hyperparameters may hold the groups as plain dicts
        trainable, optimizer, compute, action, evaluation = (
            cls(**value) if isinstance(value, dict) else value
            for cls, value in (
                (TrainableParts, trainable),
                (OptimizerOptions, optimizer),
                (ComputeOptions, compute),
                (ActionSupervision, action),
                (EvaluationOptions, evaluation),
            )
        )
        overrides = {
            k: v
            for k, v in dict(
                attn_implementation=compute.attn_implementation,
                spatial_pool_mode=spatial_pool_mode,
                newline_position=newline_position,
            ).items()
            if v is not None
        }
        if action.mode is not None:
            overrides |= {"vision_supervision": action.mode, "action_types": tuple(action.types)}
        if architecture is not None:
            base = LlavaVideoConfig.from_dict(architecture)
        elif checkpoint is None:
            base = preset(preset_name)
        else:
            base = LlavaVideoConfig.from_original(read_config(Path(checkpoint)), source=checkpoint)
        self.config = dataclasses.replace(base, **overrides)  # validated again by __post_init__
        self.hparams["architecture"] = dataclasses.asdict(self.config)
        self.tokenizer_path = tokenizer or checkpoint
        if self.tokenizer_path is None:
            raise ValueError("set model.tokenizer (or model.checkpoint, whose tokenizer is used)")
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        if len(self.tokenizer) > self.config.text["vocab_size"]:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} tokens, the LLM only {self.config.text['vocab_size']}"
            )
        self.train_parts, self.optimizer_options, self.compute = trainable, optimizer, compute
        self.action, self.evaluation = action, evaluation
        self.model: LlavaVideoModel | None = None
        self.answerer: MQAAnswerer | None = None
        self.val_total, self.val_chance = SumMetric(), SumMetric()
        self.val_correct = torch.nn.ModuleDict({mode: SumMetric() for mode in evaluation.mqa_scoring})
        self.val_ek100 = EpicActionMetrics()
        self.predict_mode = evaluation.mqa_scoring[0]  # the evaluation CLI's choice: generate, letter or likelihood
        self._tokenizer_files: dict[str, bytes] | None = None

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame (the DataModule is linked to this)."""
        return self.config.tokens_per_frame

    @property
    def extra_visual_tokens(self) -> int:
        """Visual tokens beyond the frames': the learned action tokens (the DataModule is linked to this)."""
        return self.config.action_tokens

    def configure_model(self) -> None:
        if self.model is not None:
            return
        supervised = self.action.mode is not None
        if self.hparams.checkpoint is not None:  # the starting checkpoint's weights, in the config resolved above
            self.model = LlavaVideoModel.from_pretrained(
                self.hparams.checkpoint,
                config=self.config,
                allow_missing=ACTION_SUPERVISION_NAMES if supervised else (),
            )
        else:
            self.model = LlavaVideoModel(self.config)
        sharding.set_trainable(self.model, self.train_parts, heads=supervised)
        if self.compute.activation_checkpointing:
            sharding.checkpoint_blocks(self.model)
        if self.compute.compile_blocks:
            sharding.compile_blocks(self.model)
        if self.device_mesh is not None:  # under ModelParallelStrategy
            bf16 = self._trainer is not None and str(self.trainer.precision) == "bf16-mixed"
            sharding.shard_blocks(self.model, self.device_mesh["data_parallel"], bf16_compute=bf16)
        self.answerer = MQAAnswerer(self.model, self.tokenizer, self.evaluation.max_new_tokens)

    def setup(self, stage: str) -> None:
        """Before any step: action supervision needs training samples with verb/noun classes."""
        data = getattr(self._trainer, "datamodule", None)
        if stage == "fit" and self.action.mode and not getattr(data, "has_class_labels", lambda: True)():
            raise ValueError("model.action.mode is on but no training source carries verb/noun classes")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        model = self.model
        out = model(
            batch["input_ids"],
            model.preprocess(batch["frames"]),
            batch["attention_mask"],
            batch["labels"],
            head_layers=self.action.head_layers if self.action.mode else None,
            pack=self.compute.pack_sequences,
        )
        loss, size = out.loss, batch["input_ids"].shape[0]
        if out.action_logits is not None:
            action_loss = action_supervision_loss(
                out.action_logits,
                batch["verb_class"],
                batch["noun_class"],
                batch["action_index"],
                self.action.normalization,
            )
            self.log("train/action_loss", action_loss, batch_size=size)
            loss = loss + self.action.loss_weight * action_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/truncated", batch["truncated"].sum().float(), reduce_fx="sum", batch_size=size)
        self._log_sample_accounting(batch, size)
        return loss

    def _log_sample_accounting(self, batch: dict, size: int) -> None:
        """Per epoch, summed over ranks: rows that were padding (left out of the loss) and samples skipped, in all
        and by reason (every rank logs every name, as the collective needs)."""
        per_epoch = dict(reduce_fx="sum", on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("train/padding_samples", batch["is_padding"].sum().float(), **per_epoch)
        skipped = batch.get("skipped_samples") or {}
        self.log("train/skipped_samples", float(sum(skipped.values())), **per_epoch)
        for reason, count in skipped.items():
            self.log(f"train/skipped_samples/{reason}", float(count), **per_epoch)

    def _head_layers(self) -> str | None:
        """The heads read in evaluation: the trained layers, or a checkpoint's own heads at the last layer."""
        if self.action.mode:
            return self.action.head_layers
        return "last" if self.config.action_types else None

    def _eval_step(self, batch: dict) -> dict:
        """Updates the metrics; returns the options chosen by the first mode's rule (the paper's rule on the greedy
        answer under 'generate': -1 where it matches no option), for the figure callbacks."""
        modes = self.evaluation.mqa_scoring
        answers = self.answerer(batch, modes, self._head_layers())
        if answers.action_logits is not None:
            self.val_ek100.update_from_batch(*answers.action_logits[-1][:2], batch)
        real = ~batch["is_padding"]
        answerable = real & (batch["answer_index"] >= 0)
        chosen = {mode: scores.argmax(-1) for mode, scores in answers.scores.items()}
        if "generate" in modes:
            picks = [
                rule_choice(text, meta["options"], meta["answer_index"])
                for text, meta in zip(answers.generations, batch["meta"])
            ]
            chosen["generate"] = torch.tensor([-1 if c is None else c for c in picks], device=real.device)
        for mode, correct in self.val_correct.items():
            # one rule per mode: a question counts when the mode's choice is the right option
            hits = (chosen[mode].to(real.device) == batch["answer_index"]) & answerable
            correct.update(hits.sum().float())
        self.val_total.update(real.sum())
        self.val_chance.update((real / batch["num_options"].clamp(min=1)).sum())
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
        if self.val_ek100.update_count:
            self.log_dict({f"{prefix}/ek100/{k}": v for k, v in self.val_ek100.compute().items()}, sync_dist=True)
        for metric in (self.val_total, self.val_chance, self.val_ek100, *self.val_correct.values()):
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        """One record per real question (metrics.prediction_record): under 'generate' the greedy answer judged by the
        paper's rule, with the letter logits as scores; otherwise the option scores of predict_mode."""
        generate = self.predict_mode == "generate"
        modes = ("generate", "letter") if generate else (self.predict_mode,)
        answers = self.answerer(batch, modes, "last" if self.config.action_types else None)
        scores = answers.scores["letter" if generate else self.predict_mode]
        texts = answers.generations if generate else [None] * len(batch["meta"])
        heads = head_class_scores(answers.action_logits, len(batch["meta"]))
        return [
            prediction_record(meta, row[: len(meta["options"])].tolist(), text) | head
            for meta, row, padding, text, head in zip(batch["meta"], scores, batch["is_padding"].tolist(), texts, heads)
            if not padding
        ]

    def configure_optimizers(self):
        options, model = self.optimizer_options, self.model
        parts = {
            "vision_tower": (trainable(model.vision_tower), options.vision_lr),
            "projector": (trainable(model.projector, model.image_newline), options.projector_lr or options.lr),
            "llm": (trainable(model.llm), options.lr),
            "action_heads": (
                trainable(*(getattr(model, n) for n in sharding.ACTION_PARTS if hasattr(model, n))),
                options.lr,
            ),
        }
        optimizer = torch.optim.AdamW(param_groups(parts, options.weight_decay), betas=(0.9, 0.999), eps=1e-8)
        data = getattr(self.trainer, "datamodule", None)
        total = optimizer_steps(self.trainer, data.train_batches() if data is not None else None)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(options.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint carries what evaluating it needs from any folder: the tokenizer's files and the precision it
        was trained at (its architecture is in the hyperparameters)."""
        if self._tokenizer_files is None:
            with tempfile.TemporaryDirectory() as folder:
                self.tokenizer.save_pretrained(folder)
                self._tokenizer_files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        checkpoint[TOKENIZER_FILES] = self._tokenizer_files
        if self._trainer is not None:
            checkpoint[TRAINED_PRECISION] = str(self.trainer.precision)

    def on_fit_end(self) -> None:  # the original checkpoint layout, for other tools
        if self.hparams.export_dir:
            self.export_pretrained(self.hparams.export_dir)

    def export_pretrained(self, directory: str) -> None:
        """Write the original checkpoint layout plus the tokenizer (gathering shards under FSDP2)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.trainer.is_global_zero:
            save_original(self.model, Path(directory), state=state)
            self.tokenizer.save_pretrained(directory)
