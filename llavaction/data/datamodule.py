"""The LightningDataModule: shard sets + frame decoding + prompts + collation, for training and evaluation."""

from __future__ import annotations

import json
import math
import lightning as L
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from llavaction.data.pipeline import (
    Collate, DecodeFrames, EncodePrompt, EvalStream, LengthGroupedBatches, SkipAndCount, TaskSource, WeightedMix,
    read_sizes, shard_urls, train_source,
)
from llavaction.jsonl import read_jsonl
from llavaction.prompts import PromptOptions


class EpicDataModule(L.LightningDataModule):
    """Streams pre-decoded EK-100 shards. Training: a weighted mixture of task sources, resampled endlessly and cut
    into epochs of `samples_per_epoch`. Validation/test: every question once, equal batch counts on every rank."""

    def __init__(
        self,
        train: list[TaskSource] | None = None,
        val: list[str] | None = None,
        test: list[str] | None = None,
        tokenizer: str | None = None,
        tokens_per_frame: int = 0,
        extra_visual_tokens: int = 0,
        num_frames: int = 16,
        batch_size: int = 1,
        eval_batch_size: int = 8,
        num_workers: int = 2,
        samples_per_epoch: int = 10_000,
        shuffle_buffer: int = 500,
        length_group_window: int = 0,
        max_length: int = 32_768,
        overflow: str = "error",
        prompt: PromptOptions = PromptOptions(),
        prior_actions_prob: float = 0.0,
        eval_prior_actions: str = "oracle",
        pseudo_prior_predictions: str | None = None,
        seed: int = 0,
    ):
        """
        Args:
            train: training mixture: shard directories, each with its task and weight.
            val: MQA shard directories for validation.
            test: MQA shard directories for testing (defaults to val).
            tokenizer: tokenizer directory (linked from the model by train.py).
            tokens_per_frame: visual tokens per frame (linked from the model by train.py), for max_length.
            extra_visual_tokens: visual tokens beyond the frames', e.g. action tokens (linked from the model).
            num_frames: frames per clip; subsampled evenly when the shards hold more.
            batch_size: training samples per batch and device.
            eval_batch_size: validation/test samples per batch and device.
            num_workers: loader worker processes per device.
            samples_per_epoch: training samples per epoch over all devices.
            shuffle_buffer: samples held for shuffling within each training source.
            length_group_window: when > 0, training batches are formed from this many batches' worth of samples
                sorted by token length (less padding); 0 batches samples as they come.
            max_length: longest sequence in tokens, visual tokens included.
            overflow: a longer sample is an 'error', or has its answer cut ('truncate').
            prompt: question wording switches (time instruction, frame times, prior actions).
            prior_actions_prob: in training, the chance that an MQA question shows its prior actions.
            eval_prior_actions: with prompt.prior_actions, evaluation shows the ground-truth prior actions ('oracle')
                or the model's own earlier answers for them ('pseudo', read from pseudo_prior_predictions).
            pseudo_prior_predictions: predictions.jsonl of an earlier `llavaction.evaluate mqa` run (for 'pseudo').
            seed: seed of shard resampling and per-sample decisions.
        """
        super().__init__()
        self.save_hyperparameters()
        self.train_sources = [s if isinstance(s, TaskSource) else TaskSource(**s) for s in (train or [])]
        self.val_dirs, self.test_dirs = list(val or []), list(test or val or [])
        self.tokenizer_path, self.prompt = tokenizer, prompt
        if eval_prior_actions not in ("oracle", "pseudo"):
            raise ValueError(f"eval_prior_actions must be 'oracle' or 'pseudo', not {eval_prior_actions!r}")
        if (eval_prior_actions == "pseudo") != (pseudo_prior_predictions is not None):
            raise ValueError("eval_prior_actions='pseudo' needs pseudo_prior_predictions, and only it uses them")
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                raise ValueError("EpicDataModule needs a tokenizer directory")
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tokenizer

    def prepare_data(self) -> None:
        """Fail before any step when shards are missing, naming the command that builds them."""
        for path in [s.path for s in self.train_sources] + self.val_dirs + self.test_dirs:
            read_sizes(path)

    def setup(self, stage: str) -> None:
        """Check, before any step, that the shards can serve what the configuration asks of them."""
        mqa_dirs = [s.path for s in self.train_sources if s.task == "mqa"] + self.val_dirs + self.test_dirs
        for path in [s.path for s in self.train_sources] + self.val_dirs + self.test_dirs:
            meta = json.loads(first_sample(path)["json"])
            if self.hparams.num_frames > meta["num_frames"]:
                raise ValueError(f"{path}: shards hold {meta['num_frames']} frames per sample, "
                                 f"{self.hparams.num_frames} asked for (num_frames)")
            if self.prompt.prior_actions and path in mqa_dirs and "prior_actions" not in meta:
                raise ValueError(f"{path}: prior actions are switched on but the samples carry no prior_actions")
        for source in self.train_sources:
            if source.task == "temporal":
                if "answer" not in json.loads(first_sample(source.path)["json"]):
                    raise ValueError(f"{source.path}: task 'temporal' needs shards of temporal-detection questions")

    def has_class_labels(self) -> bool:
        """Whether some training source's samples carry verb/noun classes (what action supervision learns from)."""
        return any(json.loads(first_sample(s.path)["json"]).get("verb_class") is not None for s in self.train_sources)

    def _encoder(self, task: str, with_answer: bool, epoch: int = 0) -> EncodePrompt:
        h = self.hparams
        pseudo = None
        if not with_answer and h.pseudo_prior_predictions:
            pseudo = {r["narration_id"]: r["options"][r["chosen_index"]]
                      for r in read_jsonl(h.pseudo_prior_predictions) if r["chosen_index"] is not None}
        visual = h.num_frames * h.tokens_per_frame + h.extra_visual_tokens
        return EncodePrompt(self.tokenizer, task, h.num_frames, visual, h.max_length, h.overflow,
                            self.prompt, with_answer=with_answer, prior_actions_prob=h.prior_actions_prob,
                            seed=h.seed, epoch=epoch, pseudo_priors=pseudo)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self):
        if not self.train_sources:
            raise ValueError("no training data: set data.train")
        h = self.hparams
        rank, world = self._world()
        # Per-epoch seeds: train.py reloads the training loader every epoch (reload_dataloaders_every_n_epochs=1).
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        handler = SkipAndCount()
        epoch_seed = h.seed + 1000 * epoch
        sources = [
            train_source(s, DecodeFrames(h.num_frames), self._encoder(s.task, True, epoch),
                         seed=epoch_seed + i, shuffle_buffer=h.shuffle_buffer, handler=handler)
            for i, s in enumerate(self.train_sources)
        ]
        mixture = WeightedMix(sources, [s.weight for s in self.train_sources], seed=epoch_seed)
        workers = max(1, h.num_workers)
        batches = math.ceil(h.samples_per_epoch / (world * workers * h.batch_size))
        collate = Collate(self.tokenizer.pad_token_id, skip_bad=True)
        batcher = LengthGroupedBatches(h.batch_size, h.length_group_window, collate, epoch_seed) \
            if h.length_group_window > 0 else wds.batched(h.batch_size, collation_fn=collate, partial=False)
        dataset = wds.DataPipeline(mixture, batcher).with_epoch(batches).with_length(batches * workers)
        return DataLoader(dataset, batch_size=None, collate_fn=already_collated, num_workers=h.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=False)

    def _eval_loader(self, dirs: list[str]) -> DataLoader:
        h = self.hparams
        rank, world = self._world()
        stream = EvalStream(dirs, h.eval_batch_size, DecodeFrames(h.num_frames), self._encoder("mqa", False),
                            Collate(self.tokenizer.pad_token_id), rank=rank, world_size=world,
                            num_workers=h.num_workers)
        # Workers stay up between validation runs (the stream restarts in them); the training loader is rebuilt
        # every epoch for its per-epoch seeds, so its workers would not outlive it anyway.
        return DataLoader(stream, batch_size=None, collate_fn=already_collated, num_workers=h.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=h.num_workers > 0)

    def val_dataloader(self):
        return self._eval_loader(self.val_dirs) if self.val_dirs else []

    def test_dataloader(self):
        if not self.test_dirs:
            raise ValueError("no test data: set data.test or data.val")
        return self._eval_loader(self.test_dirs)

    def predict_dataloader(self):
        return self.test_dataloader()


def already_collated(batch: dict) -> dict:
    """The DataLoader's collate_fn: batches arrive collated (the default would walk every metadata list)."""
    return batch


def first_sample(path: str) -> dict:
    """The first raw sample of a shard directory (setup checks read only this)."""
    return next(iter(wds.DataPipeline(wds.SimpleShardList(shard_urls(path)[:1]), wds.tarfile_to_samples())))
