"""The LightningDataModule: shard sets + frame decoding + prompts + collation, for training and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from llavaction.args import LoaderOptions, PriorActionOptions
from llavaction.data.stages import Collate, DecodeFrames, Descriptions, EncodePrompt, SkipCounter, TaskSource
from llavaction.data.streams import EvalStream, SourceStream, TrainStream, batches_per_worker
from llavaction.jsonl import read_jsonl
from llavaction.metrics import chosen_option_texts
from llavaction.prompts import PromptEncoder, PromptOptions
from llavaction.shards import first_sample, read_conversation_counts, read_sizes, sample_meta


class EpicDataModule(L.LightningDataModule):
    """Streams pre-decoded EK-100 shards. Training: a weighted mixture of task sources, resampled endlessly and cut
    into epochs of `loader.samples_per_epoch`, each epoch seeded by the trainer's epoch and resumable mid-epoch.
    Validation/test: every question once, equal batch counts on every rank."""

    def __init__(
        self,
        train: list[TaskSource] | None = None,
        val: list[str] | None = None,
        test: list[str] | None = None,
        tokenizer: str | None = None,
        tokens_per_frame: int = 0,
        extra_visual_tokens: int = 0,
        num_frames: int = 16,
        max_length: int = 32_768,
        overflow: Literal["error", "truncate"] = "error",
        prompt: PromptOptions = PromptOptions(),
        prior_actions: PriorActionOptions = PriorActionOptions(),
        loader: LoaderOptions = LoaderOptions(),
        seed: int = 0,
    ):
        """
        Args:
            train: training mixture: shard sets (directories or URLs), each with its task and weight.
            val: MQA shard sets for validation.
            test: MQA shard sets for testing (defaults to val).
            tokenizer: tokenizer directory (linked from the model by train.py).
            tokens_per_frame: visual tokens per frame (linked from the model by train.py), for max_length.
            extra_visual_tokens: visual tokens beyond the frames', e.g. action tokens (linked from the model).
            num_frames: frames per clip; subsampled evenly when the shards hold more.
            max_length: longest sequence in tokens, visual tokens included.
            overflow: a longer sample is an 'error', or has its answer cut ('truncate').
            prompt: what questions state besides the task (time instruction, frame times).
            prior_actions: prior actions in MQA questions, in training and in evaluation.
            loader: batching and loading.
            seed: seed of shard resampling, mixture draws, shuffling and per-sample decisions.
        """
        super().__init__()
        self.save_hyperparameters()
        self.train_sources = [s if isinstance(s, TaskSource) else TaskSource(**s) for s in (train or [])]
        self.val_sets, self.test_sets = list(val or []), list(test or val or [])
        self.tokenizer_path = tokenizer
        self.prompt, self.prior_actions, self.loader = prompt, prior_actions, loader
        self._tokenizer = None
        self._first_metas: dict[str, dict] = {}
        self._train_sizes: list[int] | None = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                raise ValueError("EpicDataModule needs a tokenizer directory")
            from llavaction.model import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    def prepare_data(self) -> None:
        """Fail before any step when shards are missing, naming the command that builds them."""
        for location in [s.path for s in self.train_sources] + self.val_sets + self.test_sets:
            read_sizes(location)

    def setup(self, stage: str) -> None:
        """Check, before any step, that the shards can serve what the configuration asks of them."""
        mqa_sets = [s.path for s in self.train_sources if s.task == "mqa"] + self.val_sets + self.test_sets
        for location in [s.path for s in self.train_sources] + self.val_sets + self.test_sets:
            meta = self._first_meta(location)
            if self.hparams.num_frames > meta["num_frames"]:
                raise ValueError(
                    f"{location}: shards hold {meta['num_frames']} frames per sample, "
                    f"{self.hparams.num_frames} asked for (num_frames)"
                )
            if self.prior_actions.shown and location in mqa_sets and "prior_actions" not in meta:
                raise ValueError(f"{location}: prior actions are switched on but the samples carry no prior_actions")
        for source in self.train_sources:
            if source.task == "temporal" and "answer" not in self._first_meta(source.path):
                raise ValueError(f"{source.path}: task 'temporal' needs shards of temporal-detection questions")

    def has_class_labels(self) -> bool:
        """Whether some training source's samples carry verb/noun classes (what action supervision learns from)."""
        return any(self._first_meta(s.path).get("verb_class") is not None for s in self.train_sources)

    def _first_meta(self, location: str) -> dict:
        """The metadata of a shard set's first sample, read once (a remote set streams its first shard for it)."""
        if location not in self._first_metas:
            self._first_metas[location] = sample_meta(first_sample(location))
        return self._first_metas[location]

    @staticmethod
    def source_size(source: TaskSource) -> int:
        """Training samples of a source: its shards' samples, its description records (task qa), or the
        conversations of replayed videos (several a sample)."""
        if source.descriptions:
            return len(Descriptions(source.descriptions).by_id)
        conversations = read_conversation_counts(source.path)
        return sum((conversations or read_sizes(source.path)).values())

    def _source_sizes(self) -> list[int]:
        """source_size of every training source, read once."""
        if self._train_sizes is None:
            self._train_sizes = [self.source_size(s) for s in self.train_sources]
        return self._train_sizes

    def _batches_per_worker(self) -> int:
        loader, (_, world) = self.loader, self._world()
        samples = loader.samples_per_epoch or sum(self._source_sizes())
        return batches_per_worker(samples, world, loader.num_workers, loader.batch_size)

    def train_batches(self) -> int:
        """Training batches per epoch on each rank (the training loader's length), without building the loader."""
        return self._batches_per_worker() * max(1, self.loader.num_workers)

    def _encoder(self, task: str, with_answer: bool) -> EncodePrompt:
        h, priors = self.hparams, self.prior_actions
        pseudo = None
        if not with_answer and priors.evaluation == "pseudo":
            pseudo = chosen_option_texts(read_jsonl(priors.pseudo_predictions))
        probability = priors.train_probability if with_answer else float(priors.evaluation != "none")
        visual = h.num_frames * h.tokens_per_frame + h.extra_visual_tokens
        return EncodePrompt(
            PromptEncoder(self.tokenizer, h.max_length, h.overflow),
            task,
            h.num_frames,
            visual,
            self.prompt,
            with_answer=with_answer,
            prior_probability=probability,
            seed=h.seed,
            pseudo_priors=pseudo,
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _epoch(self) -> int:
        """The epoch a new pass over the training loader serves (what Lightning gives samplers' set_epoch)."""
        return self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0

    def _position(self) -> dict:
        """The training position a checkpoint records: the epoch being trained and the batches this rank finished in
        it (at an epoch's end, all of them: the next epoch then starts from its beginning)."""
        if self.trainer is None:
            return {"epoch": 0, "batches": 0}
        loop = self.trainer.fit_loop
        return {
            "epoch": loop.epoch_progress.current.started - 1,
            "batches": loop.epoch_loop.batch_progress.current.processed,
        }

    def train_dataloader(self) -> DataLoader:
        if not self.train_sources:
            raise ValueError("no training data: set data.train")
        h, loader = self.hparams, self.loader
        rank, world = self._world()
        sources = [
            SourceStream(s, DecodeFrames(h.num_frames), self._encoder(s.task, True), loader.shuffle_buffer)
            for s in self.train_sources
        ]
        sizes = self._source_sizes()
        weights = [size if s.weight == "size" else s.weight for s, size in zip(self.train_sources, sizes)]
        stream = TrainStream(
            sources,
            weights,
            loader.batch_size,
            self._batches_per_worker(),
            Collate(self.tokenizer.pad_token_id, SkipCounter()),
            seed=h.seed,
            rank=rank,
            num_workers=loader.num_workers,
            length_group_window=loader.length_group_window,
            world_size=world,
        )
        return EpochLoader(
            stream, self._epoch, self._position, num_workers=loader.num_workers, pin_memory=torch.cuda.is_available()
        )

    def _eval_loader(self, locations: list[str]) -> DataLoader:
        h, loader = self.hparams, self.loader
        rank, world = self._world()
        stream = EvalStream(
            locations,
            loader.eval_batch_size,
            DecodeFrames(h.num_frames),
            self._encoder("mqa", False),
            Collate(self.tokenizer.pad_token_id),
            rank=rank,
            world_size=world,
            num_workers=loader.num_workers,
        )
        # Workers stay up between validation runs (the stream restarts in them).
        return DataLoader(
            stream,
            batch_size=None,
            collate_fn=already_collated,
            num_workers=loader.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=loader.num_workers > 0,
        )

    def val_dataloader(self):
        return self._eval_loader(self.val_sets) if self.val_sets else []

    def test_dataloader(self):
        if not self.test_sets:
            raise ValueError("no test data: set data.test or data.val")
        return self._eval_loader(self.test_sets)

    def predict_dataloader(self):
        return self.test_dataloader()


class EpochLoader(DataLoader):
    """The training loader. Each pass is the epoch the trainer is in (the stream's set_epoch, so the data changes
    every epoch without reloading the loader), and the loader is stateful for Lightning: a checkpoint records how many
    batches of the epoch this rank finished, and a run resumed from it continues with the next one."""

    def __init__(self, stream: TrainStream, epoch: Callable[[], int], position: Callable[[], dict], **kwargs):
        super().__init__(stream, batch_size=None, collate_fn=already_collated, persistent_workers=False, **kwargs)
        self.epoch, self.position = epoch, position
        self.resume: dict | None = None

    def __iter__(self):
        epoch = self.epoch()
        consumed = 0
        if self.resume is not None and self.resume["epoch"] == epoch:
            consumed = self.resume["batches"]
        self.resume = None
        self.dataset.set_epoch(epoch, consumed)
        return super().__iter__()

    def state_dict(self) -> dict:
        return self.position()

    def load_state_dict(self, state: dict) -> None:
        self.resume = dict(state)


def already_collated(batch: dict) -> dict:
    """The DataLoader's collate_fn: batches arrive collated (the default would walk every metadata list)."""
    return batch
