"""The LightningModule: LlavaVideoModel + LM loss + MQA accuracy + optimiser, sharded with FSDP2 when asked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import torch
from torchmetrics import SumMetric
from transformers import get_cosine_schedule_with_warmup

from llavaction import sharding
from llavaction.losses import action_supervision_loss
from llavaction.metrics import EpicActionMetrics, prediction_record
from llavaction.model import LlavaVideoModel, load_tokenizer, preset
from llavaction.model.checkpoint import ACTION_SUPERVISION_NAMES, read_config, save_original
from llavaction.model.config import LlavaVideoConfig
from llavaction.optim import param_groups, trainable
from llavaction.prompts import PromptEncoder
from llavaction.scoring import head_class_scores, option_text_loglik

MAX_OPTIONS = 26
SCORING_MODES = ("letter", "likelihood")
ACTION_PARTS = ("action_supervision", "verb_head", "noun_head", "action_head")


class LlavaActionModule(L.LightningModule):
    """Video LLM training on EK-100 tasks and EK-100-MQA validation by option-letter scoring."""

    def __init__(
        self,
        preset_name: str = "tiny",
        checkpoint: str | None = None,
        tokenizer: str | None = None,
        attn_implementation: str = "sdpa",
        spatial_pool_mode: str | None = None,
        newline_position: str | None = None,
        train_vision_tower: bool = True,
        train_projector: bool = True,
        train_llm: bool = True,
        lr: float = 1e-5,
        vision_lr: float = 2e-6,
        projector_lr: float | None = None,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        activation_checkpointing: bool = False,
        compile_blocks: bool = False,
        pack_sequences: bool = False,
        mqa_scoring: tuple[str, ...] = ("letter",),
        action_supervision: str | None = None,
        action_types: tuple[int, int, int] = (97, 300, 3806),
        action_loss_weight: float = 0.1,
        action_head_layers: str = "last",
        export_dir: str | None = None,
    ):
        """
        Args:
            preset_name: architecture preset ('tiny', '0.5b', '7b') when no checkpoint is given (random init).
            checkpoint: original LLaVA-Video / LLaVAction checkpoint directory to start from.
            tokenizer: tokenizer directory; defaults to the checkpoint directory.
            attn_implementation: 'sdpa', 'flash_attention_2' (GPU with flash-attn) or 'eager'.
            spatial_pool_mode: override the 2x2 pooling ('bilinear', 'average', 'max').
            newline_position: override the newline tokens ('grid', 'frame', 'none').
            train_vision_tower: update the SigLIP tower.
            train_projector: update the projector and newline vector.
            train_llm: update the Qwen2 LLM.
            lr: learning rate of the LLM.
            vision_lr: learning rate of the vision tower.
            projector_lr: learning rate of the projector (default: lr).
            weight_decay: AdamW weight decay (never on norms and biases).
            warmup_ratio: share of the steps with linear warmup before the cosine decay.
            activation_checkpointing: recompute vision and LLM blocks in the backward pass.
            compile_blocks: torch.compile each vision and LLM block (the first steps then take longer).
            pack_sequences: run the LLM on a batch's samples packed into one sequence, attention kept within each
                sample: no compute on padding (same results; use flash_attention_2 for long sequences, as sdpa then
                builds a dense block-diagonal mask).
            mqa_scoring: how validation picks an option, each logged as val/mqa_accuracy_<mode>; the first is also
                val/mqa_accuracy: 'letter' (next-token logits of the option letters after the MQA prompt) or
                'likelihood' (log-likelihood of each option's text given the clip).
            action_supervision: LLaVAction's action tokens and verb/noun/action heads, trained with the LM loss:
                'one_token', 'three_tokens' (verb, noun, action) or 'newline' (the last newline token); None: off
                (a checkpoint's own heads are then kept frozen and exported unchanged).
            action_types: verb, noun and action head sizes (the action head indexes the dense action vocabulary).
            action_loss_weight: w in loss = LM + w * mean over head layers of (0.5 CE_verb + 0.5 CE_noun + 0.1 CE_action).
            action_head_layers: LLM layers the heads read: 'last', 'first' or 'all'.
            export_dir: after fit, write the original checkpoint layout (and tokenizer) here.
        """
        super().__init__()
        self.save_hyperparameters()
        overrides = {k: v for k, v in dict(attn_implementation=attn_implementation,
                     spatial_pool_mode=spatial_pool_mode, newline_position=newline_position).items() if v is not None}
        if action_supervision is not None:
            overrides |= {"vision_supervision": action_supervision, "action_types": tuple(action_types)}
        base = preset(preset_name) if checkpoint is None else \
            LlavaVideoConfig.from_original(read_config(Path(checkpoint)), source=checkpoint)
        self.config = dataclasses.replace(base, **overrides)  # validated again by __post_init__
        self.tokenizer_path = tokenizer or checkpoint
        if self.tokenizer_path is None:
            raise ValueError("set model.tokenizer (or model.checkpoint, whose tokenizer is used)")
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        if len(self.tokenizer) > self.config.text["vocab_size"]:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens, the LLM only {self.config.text['vocab_size']}")
        self.prompt_encoder = PromptEncoder(self.tokenizer)
        self.letter_ids = self.prompt_encoder.letter_token_ids(MAX_OPTIONS)
        self.model: LlavaVideoModel | None = None
        unknown = set(mqa_scoring) - set(SCORING_MODES)
        if not mqa_scoring or unknown:
            raise ValueError(f"mqa_scoring must list modes among {SCORING_MODES}, got {list(mqa_scoring)}")
        self.val_total, self.val_chance = SumMetric(), SumMetric()
        self.val_correct = torch.nn.ModuleDict({mode: SumMetric() for mode in mqa_scoring})
        self.val_ek100 = EpicActionMetrics()
        self.predict_generate = False  # set by the evaluation CLI: predict by greedy generation instead of scores

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
        if self.hparams.checkpoint is not None:
            fields = ("attn_implementation", "spatial_pool_mode", "newline_position", "vision_supervision",
                      "action_types")
            self.model = LlavaVideoModel.from_pretrained(
                self.hparams.checkpoint, **{k: getattr(self.config, k) for k in fields},
                allow_missing=ACTION_SUPERVISION_NAMES if self.hparams.action_supervision else ())
        else:
            self.model = LlavaVideoModel(self.config)
        for part, train_it in ((self.model.vision_tower, self.hparams.train_vision_tower),
                               (self.model.projector, self.hparams.train_projector),
                               (self.model.llm, self.hparams.train_llm)):
            part.requires_grad_(train_it)
        self.model.image_newline.requires_grad_(self.hparams.train_projector)
        self.model.vision_tower.post_layernorm.requires_grad_(False)
        for name in ACTION_PARTS:  # trained only when the action loss is on
            if hasattr(self.model, name):
                getattr(self.model, name).requires_grad_(self.hparams.action_supervision is not None)
        if self.hparams.activation_checkpointing:
            sharding.checkpoint_blocks(self.model)
        if self.hparams.compile_blocks:
            sharding.compile_blocks(self.model)
        if self.device_mesh is not None:  # under ModelParallelStrategy
            sharding.shard_blocks(self.model, self.device_mesh["data_parallel"])

    def setup(self, stage: str) -> None:
        """Before any step: action supervision needs training samples with verb/noun classes."""
        data = getattr(self._trainer, "datamodule", None)
        if stage == "fit" and self.hparams.action_supervision and not getattr(data, "has_class_labels", lambda: True)():
            raise ValueError("model.action_supervision is on but no training source carries verb/noun classes")

    def forward(self, batch: dict, logits_for: str = "all", visual_tokens: torch.Tensor | None = None,
                head_layers: str | None = None):
        """visual_tokens: the batch's encode_video output, when already computed. head_layers: the action heads to
        read (default: the configured ones when action supervision is on)."""
        heads = head_layers or (self.hparams.action_head_layers if self.hparams.action_supervision else None)
        pixels = None if visual_tokens is not None else self.model.preprocess(batch["frames"])
        return self.model(batch["input_ids"], pixels, batch["attention_mask"],
                          batch["labels"] if logits_for != "last" else None, logits_for=logits_for,
                          visual_tokens=visual_tokens, head_layers=heads, pack=self.hparams.pack_sequences)

    def encode_video(self, batch: dict) -> torch.Tensor:
        """The batch's visual tokens, computed once for every scoring of its questions."""
        return self.model.encode_video(self.model.preprocess(batch["frames"]))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch, logits_for="labels")
        loss = out.loss
        size = batch["input_ids"].shape[0]
        if out.action_logits is not None:
            action_loss = action_supervision_loss(out.action_logits, batch["verb_class"], batch["noun_class"],
                                                  batch["action_index"])
            self.log("train/action_loss", action_loss, batch_size=size)
            loss = loss + self.hparams.action_loss_weight * action_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/truncated", batch["truncated"].sum().float(), reduce_fx="sum", batch_size=size)
        return loss

    def letter_scores(self, batch: dict, out=None) -> torch.Tensor:
        """[B, 26] next-token logits of the option letters after the prompt; letters beyond a question's options -inf.
        out: this batch's forward pass with logits_for='last', when the caller already ran it."""
        out = self(batch, logits_for="last") if out is None else out
        logits = out.logits.float()[:, self.letter_ids]
        beyond = torch.arange(MAX_OPTIONS, device=logits.device)[None] >= batch["num_options"][:, None]
        return logits.masked_fill(beyond, float("-inf"))

    def likelihood_scores(self, batch: dict, visual_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 26] summed log-likelihood of each option's text given the clip; -inf beyond a question's options."""
        visual = self.encode_video(batch) if visual_tokens is None else visual_tokens
        return option_text_loglik(self.model, self.prompt_encoder, visual, batch["frames"].shape[1],
                                  [m["options"] for m in batch["meta"]], MAX_OPTIONS)

    def mqa_scores(self, batch: dict, mode: str, out, visual_tokens: torch.Tensor) -> torch.Tensor:
        """[B, 26] option scores by one of SCORING_MODES from the batch's visual tokens (and, for letters, its
        forward pass with logits_for='last')."""
        return self.letter_scores(batch, out) if mode == "letter" else self.likelihood_scores(batch, visual_tokens)

    def _score_batch(self, batch: dict, modes: tuple[str, ...], head_layers: str | None = None):
        """One vision encoding, and one forward pass when letters or heads need it: (the forward output or None,
        {mode: [B, 26] scores})."""
        visual = self.encode_video(batch)
        needs_pass = "letter" in modes or head_layers is not None or self.hparams.action_supervision
        out = self(batch, logits_for="last", visual_tokens=visual, head_layers=head_layers) if needs_pass else None
        return out, {mode: self.mqa_scores(batch, mode, out, visual) for mode in modes}

    def _eval_step(self, batch: dict) -> dict:
        """Updates the metrics; returns the options chosen by the first scoring mode (for figure callbacks)."""
        modes = self.hparams.mqa_scoring
        out, scores = self._score_batch(batch, modes)
        if out is not None and out.action_logits is not None:
            self.val_ek100.update_from_batch(*out.action_logits[-1][:2], batch)
        real, choices = ~batch["is_padding"], {}
        answerable = real & (batch["answer_index"] >= 0)
        for mode, correct in self.val_correct.items():
            choices[mode] = scores[mode].argmax(-1)
            correct.update(((choices[mode] == batch["answer_index"]) & answerable).sum())
        self.val_total.update(real.sum())
        self.val_chance.update((real / batch["num_options"].clamp(min=1)).sum())
        return {"chosen": choices[modes[0]]}

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

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 32) -> list[str]:
        """Greedy answers to the batch's prompts."""
        answers = self.model.generate(
            batch["input_ids"], self.model.preprocess(batch["frames"]), batch["attention_mask"],
            max_new_tokens=max_new_tokens, eos_token_id=self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return [self.tokenizer.decode(a, skip_special_tokens=True) for a in answers]

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        """One record per real question: the option scores of the first scoring mode and the chosen option; with
        predict_generate, the greedy answer and the option parsed from it."""
        mode = self.hparams.mqa_scoring[0]
        out, scores = self._score_batch(batch, (mode,), head_layers="last" if self.config.action_types else None)
        generations = self.generate(batch) if self.predict_generate else [None] * len(batch["meta"])
        heads = head_class_scores(out.action_logits if out is not None else None, len(batch["meta"]))
        return [prediction_record(meta, row[: len(meta["options"])].tolist(), text) | head
                for meta, row, padding, text, head in
                zip(batch["meta"], scores[mode], batch["is_padding"].tolist(), generations, heads) if not padding]

    def configure_optimizers(self):
        h = self.hparams
        model = self.model
        parts = {
            "vision_tower": (trainable(model.vision_tower), h.vision_lr),
            "projector": (trainable(model.projector, model.image_newline), h.projector_lr or h.lr),
            "llm": (trainable(model.llm), h.lr),
            "action_heads": (trainable(*(getattr(model, n) for n in ACTION_PARTS if hasattr(model, n))), h.lr),
        }
        optimizer = torch.optim.AdamW(param_groups(parts, h.weight_decay), betas=(0.9, 0.999), eps=1e-8)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(h.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

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

