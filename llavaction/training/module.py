"""The training LightningModule: the answering module (llavaction.evaluation.module: model, tokenizer, validation)
plus the LM loss and LLaVAction's action heads, the optimiser and schedule, sharding, and the checkpoint contents."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import get_cosine_schedule_with_warmup

from llavaction.data.batch import Batch
from llavaction.evaluation import checkpoint_format as checkpoints
from llavaction.evaluation.checkpoint_format import ExportLayout
from llavaction.evaluation.module import MQAModule
from llavaction.evaluation.options import EvaluationOptions
from llavaction.model.architecture import ModelSettings, build_model, resolve_architecture
from llavaction.model.families import DEFAULT_BACKBONE, Backbone
from llavaction.model.options import ActionSupervision, ComputeOptions
from llavaction.training import sharding
from llavaction.training.losses import action_supervision_loss, task_losses
from llavaction.training.optim import optimizer_steps, param_groups, trainable, warmup_steps
from llavaction.training.options import OptimizerOptions, TrainableParts
from llavaction.training.start import StartCheckpoint
from llavaction.utils.checks import as_options
from llavaction.utils.files import check_output_folder


class LlavaActionModule(MQAModule):
    """Video LLM training on EK-100 tasks; EK-100-MQA validation by the paper's rule (greedy answers) and proxies."""

    def __init__(
        self,
        backbone: Backbone = DEFAULT_BACKBONE,
        preset_name: str | None = "tiny",
        checkpoint: str | None = None,
        tokenizer: str | None = None,
        family_options: dict | None = None,
        trainable: TrainableParts = TrainableParts(),
        optimizer: OptimizerOptions = OptimizerOptions(),
        compute: ComputeOptions = ComputeOptions(),
        action: ActionSupervision = ActionSupervision(),
        evaluation: EvaluationOptions = EvaluationOptions(),
        export_dir: str | None = None,
        export_layout: ExportLayout = "original",
        architecture: dict | None = None,
        video_format: dict | None = None,
    ):
        """
        Args:
            backbone: the model family (llavaction.model.families; README "Backbones"): 'llava_video' (SigLIP +
                projector + Qwen2, the reference's), 'qwen2_5_vl', 'qwen3_vl' or 'internvl'.
            preset_name: the family's architecture preset when no checkpoint is given (random init): 'tiny' for every
                family; llava_video '0.5b', '7b'; qwen2_5_vl '7b'; qwen3_vl '8b'; internvl '3-8b', '3.5-8b'.
            checkpoint: checkpoint to start from, a folder or a hub id, in its family's layout (an original LLaVA-Video
                / LLaVAction one; transformers' for the others), or a training checkpoint (a `.ckpt`: its
                architecture, video format, tokenizer and weights); its family must be model.backbone.
            tokenizer: tokenizer directory; defaults to the checkpoint directory.
            family_options: the family's own architecture settings, a mapping (LLaVA-Video: spatial_pool_mode
                'bilinear' | 'average' | 'max', newline_position 'grid' | 'frame' | 'one_token' | 'none'); a setting
                the family does not have is refused naming the ones it has.
            trainable: which parts are updated.
            optimizer: learning rates, weight decay and warmup.
            compute: attention kernel, checkpointing, compilation, packing.
            action: action-token supervision (LLaVAction's heads).
            evaluation: how validation and test answer the questions.
            export_dir: after fit, write the trained model here with its tokenizer, in export_layout.
            export_layout: 'original': the family's own checkpoint layout (LLaVA-Video: lmms-lab's
                LlavaQwenForCausalLM; the others: transformers', the action heads in files beside it); 'transformers':
                transformers' own class for every family (LLaVA-Video: LlavaOnevisionForConditionalGeneration, refused
                before training unless it computes the same logits: newline_position one_token, bilinear pooling, no
                action tokens).
            architecture: the model's architecture as training resolved it; training records it in its checkpoints so
                they load without the starting checkpoint. Leave unset.
            video_format: how the model reads a sample as training resolved it (its video format: the system turn,
                the clip's tokens), recorded alike so that evaluation asks as training did. Leave unset.
        """
        groups = {
            name: as_options(group, value)
            for name, group, value in (
                ("trainable", TrainableParts, trainable),
                ("optimizer", OptimizerOptions, optimizer),
                ("compute", ComputeOptions, compute),
                ("action", ActionSupervision, action),
                ("evaluation", EvaluationOptions, evaluation),
            )
        }
        self._start = StartCheckpoint.of(checkpoint, backbone, tokenizer)
        folder, self._start_tokenizer = checkpoint, self._start is not None and tokenizer is None
        if self._start is not None:  # the training checkpoint's architecture, format and tokenizer, unless recorded
            architecture = architecture or self._start.architecture
            video_format = video_format or self._start.video_format
            tokenizer, folder = tokenizer or self._start.tokenizer, None
        settings = ModelSettings(
            backbone, preset_name, folder, architecture, groups["compute"], groups["action"], family_options
        )
        config = resolve_architecture(settings)
        super().__init__(
            settings.family,
            config,
            tokenizer or checkpoint,
            groups["evaluation"],
            folder,
            settings.from_preset,
            video_format,
        )
        # a start's tokenizer is a temporary folder (the data is given it): unrecorded, its checkpoints carry the files
        self.save_hyperparameters(ignore=["tokenizer"] if self._start_tokenizer else None)
        self.hparams["architecture"] = dataclasses.asdict(self.config)
        self.hparams["video_format"] = self.video_format.as_dict()
        self.train_parts, self.optimizer_options = groups["trainable"], groups["optimizer"]
        self.compute, self.action = groups["compute"], groups["action"]
        if export_dir:
            checkpoints.check_export_layout(self.family, self.config, export_layout)
        self._tokenizer_files: dict[str, bytes] | None = None

    def build_model(self) -> torch.nn.Module:
        """The model with the starting checkpoint's weights (new action heads start fresh), which parts train, and
        checkpointing, compilation and FSDP2 by block class as asked."""
        return self.prepare(self.starting_model())

    def starting_model(self) -> torch.nn.Module:
        """The model as the fit starts it: the starting checkpoint's weights (new action heads fresh), or a preset's
        fresh initialisation."""
        model = build_model(self.family, self.config, self.weights, new_heads=self.action.mode is not None)
        if self._start is not None:
            self._start.load_into(model)
        return model

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Which parts train, then checkpointing, compilation and FSDP2 by block class as asked."""
        sharding.set_trainable(model, self.train_parts, heads=self.trains_heads())
        blocks = self.family.block_types
        if self.compute.activation_checkpointing:
            sharding.checkpoint_blocks(model, blocks)
        if self.compute.compile_blocks:
            sharding.compile_blocks(model, blocks)
        if self.device_mesh is not None:  # under ModelParallelStrategy
            bf16 = self._trainer is not None and str(self.trainer.precision) == "bf16-mixed"
            sharding.shard_blocks(model, self.device_mesh["data_parallel"], blocks, bf16_compute=bf16)
        return model

    def trains_heads(self) -> bool:
        """Whether the action token(s) and heads train: with the action loss on."""
        return self.action.mode is not None

    def head_layers(self) -> str | None:
        """The heads read in evaluation: the trained layers, or a checkpoint's own heads at the last layer."""
        return self.action.head_layers if self.action.mode else super().head_layers()

    def setup(self, stage: str) -> None:
        """Before any step: action supervision needs training samples with verb/noun classes; model.export_dir is new,
        empty or an earlier export (never found to be someone else's folder after the fit)."""
        if stage == "fit" and self.hparams.export_dir:
            check_output_folder(self.hparams.export_dir, checkpoints.EXPORT_COMMAND, "model.export_dir")
        data = getattr(self._trainer, "datamodule", None)
        if stage == "fit" and self.action.mode and not getattr(data, "has_class_labels", lambda: True)():
            raise ValueError("model.action.mode is on but no training source carries verb/noun classes")

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        model = self.model
        out = model(
            batch.input_ids,
            model.preprocess(batch.frames, batch.clips),
            batch.attention_mask,
            batch.labels,
            head_layers=self.action.head_layers if self.action.mode else None,
            pack=self.compute.pack_sequences,
        )
        loss, size = out.loss, len(batch)
        if out.action_logits is not None:
            action_loss = action_supervision_loss(
                out.action_logits, batch.verb_class, batch.noun_class, batch.action_index, self.action.normalization
            )
            self.log("train/action_loss", action_loss, batch_size=size)
            loss = loss + self.action.loss_weight * action_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for task, value in task_losses(out.logits, out.labels, batch.tasks).items():  # TensorBoard's per-task curves
            self.log(f"train/loss_{task}", value, batch_size=size)
        self.log("train/truncated", batch.truncated.sum().float(), reduce_fx="sum", batch_size=size)
        self._log_sample_accounting(batch, size)
        return loss

    def _log_sample_accounting(self, batch: Batch, size: int) -> None:
        """Per epoch, summed over ranks: rows that were padding (left out of the loss) and samples skipped, in all
        and by reason (every rank logs every name, as the collective needs)."""
        per_epoch = dict(reduce_fx="sum", on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("train/padding_samples", batch.is_padding.sum().float(), **per_epoch)
        self.log("train/skipped_samples", float(sum(batch.skipped_samples.values())), **per_epoch)
        for reason, count in batch.skipped_samples.items():
            self.log(f"train/skipped_samples/{reason}", float(count), **per_epoch)

    def configure_optimizers(self):
        options, model = self.optimizer_options, self.model
        rates = {
            "vision_tower": options.vision_lr,
            "projector": options.projector_lr or options.lr,
            "llm": options.lr,
            "action_heads": options.lr,
        }
        parts = {name: (trainable(*modules), rates[name]) for name, modules in model.parts().items()}
        optimizer = torch.optim.AdamW(param_groups(parts, options.weight_decay), betas=(0.9, 0.999), eps=1e-8)
        data = getattr(self.trainer, "datamodule", None)
        batches = data.train_batches() * self.updates_per_batch if data is not None else None
        total = optimizer_steps(self.trainer, batches)
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps(total, options.warmup_ratio), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @property
    def updates_per_batch(self) -> int:
        """Optimizer steps a training batch makes (what the schedule counts)."""
        return 1

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint carries what evaluating it needs from any folder (evaluation.checkpoints owns the format)."""
        if self._tokenizer_files is None:
            self._tokenizer_files = checkpoints.tokenizer_files(self.tokenizer)
        precision = str(self.trainer.precision) if self._trainer is not None else None
        checkpoint.update(checkpoints.extra_entries(self._tokenizer_files, precision))

    def on_fit_end(self) -> None:  # the original checkpoint layout, for other tools
        if self.hparams.export_dir:
            checkpoints.export_model(
                self.family,
                self.model,
                self.tokenizer,
                self.video_format,
                Path(self.hparams.export_dir),
                self.trainer.is_global_zero,
                self.hparams.export_layout,
            )
