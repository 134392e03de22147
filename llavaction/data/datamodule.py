"""The LightningDataModule: shard sets + frame decoding + prompts + collation, for training and evaluation."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from llavaction.benchmark.answers import chosen_option_texts
from llavaction.benchmark.questions import read_question_file
from llavaction.data.epochs import EpochPlanner
from llavaction.data.options import LoaderOptions, PriorActionOptions, SampleFormat, TaskSource
from llavaction.data.resume import EpochPart, EpochPlans, ResumedEpoch
from llavaction.data.shards import first_sample, indexed_keys, read_sizes, sample_meta
from llavaction.data.sources import SourceItems, apply_strategy, epoch_quotas, source_items
from llavaction.data.stages import Collate, DecodeFrames, Descriptions, EncodePrompt, SkipCounter
from llavaction.data.store import StoreQuestions, check_clips, questions_by_key, store_clips
from llavaction.data.streams import EvalStream, SourceStream, TrainStream
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.formats import video_format
from llavaction.prompts.tasks import TASKS
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.checks import as_options, check_count
from llavaction.utils.jsonl import read_jsonl


class EpicDataModule(L.LightningDataModule):
    """Streams pre-decoded EK-100 shards. Training: a mixture of task sources, each epoch planned from the shard
    indexes (data/epochs.py: every sample of a source taken whole once an epoch, weighted sources by their share of
    `loader.samples_per_epoch`), seeded by the trainer's epoch and resumable mid-epoch. Validation/test: every
    question once, equal batch counts on every rank."""

    def __init__(
        self,
        train: list[TaskSource] | None = None,
        val: list[str] | None = None,
        test: list[str] | None = None,
        questions: list[str] | None = None,
        tokenizer: str | None = None,
        chat_format: dict | None = None,
        num_frames: int = 16,
        max_length: int = 32_768,
        overflow: Literal["error", "truncate"] = "error",
        prompt: PromptOptions = PromptOptions(),
        prior_actions: PriorActionOptions = PriorActionOptions(),
        loader: LoaderOptions = LoaderOptions(),
        seed: int = 0,
        sample_format: SampleFormat = SampleFormat(),
    ):
        """
        Args:
            train: training mixture: shard sets (directories or URLs), each with its task and weight.
            val: MQA shard sets for validation.
            test: MQA shard sets for testing (defaults to val).
            questions: MQA question files asked over the val/test sets' frames in place of the questions they hold
                (the sets as frame stores, llavaction.data.store): only these are asked, each about the clip the
                sets hold for it (checked before any step).
            tokenizer: tokenizer directory (linked from the model by train.py).
            chat_format: how the model reads a sample, its chat template and the visual tokens a clip takes (its
                video format's plain values, llavaction.prompts.formats.VideoFormat.as_dict, linked from the model by
                train.py; default the reference's with no visual token).
            num_frames: frames per clip; subsampled evenly when the shards hold more.
            max_length: longest sequence in tokens, visual tokens included.
            overflow: a longer sample is an 'error', or has its answer cut ('truncate').
            prompt: what questions state besides the task (time instruction, frame times).
            prior_actions: prior actions in MQA questions, in training and in evaluation.
            loader: batching and loading.
            seed: seed of the epoch plans (strategies, shard orders, shuffling, mixing) and per-sample decisions.
            sample_format: what the training stage asks of the samples, answers or prompts only, with or without the
                reasoning format (linked from the model by train.py).
        """
        super().__init__()
        check_count("data.num_frames", num_frames, minimum=1)
        check_count("data.max_length", max_length, minimum=1)
        # the tokenizer is the model's (linked by train.py) and logged with it: as a data setting it would be the
        # resolved folder against the model's unset one, which Lightning refuses to merge
        self.save_hyperparameters(ignore=["tokenizer"])
        self.train_sources = [as_options(TaskSource, s) for s in (train or [])]
        self.val_sets, self.test_sets = list(val or []), list(test or val or [])
        self.question_files = list(questions or [])
        self.asked: dict[str, dict] | None = None
        self.tokenizer_path = tokenizer
        self.chat_format = video_format(chat_format)
        self.prompt = as_options(PromptOptions, prompt)
        self.prior_actions = as_options(PriorActionOptions, prior_actions)
        self.loader = as_options(LoaderOptions, loader)
        self.sample_format = as_options(SampleFormat, sample_format)
        self._tokenizer = None
        self._first_metas: dict[str, dict] = {}
        self._train_items: list[SourceItems] | None = None
        self._joined: dict[str, Descriptions | StoreQuestions] = {}
        self.resumed: ResumedEpoch | None = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                raise ValueError("EpicDataModule needs a tokenizer directory")
            from llavaction.prompts.tokenizer import add_special_tokens, load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_path)
            # a preset's tokenizer gains its family's tokens as the model's does (the same ids)
            add_special_tokens(self._tokenizer, self.chat_format.special_tokens)
        return self._tokenizer

    def prepare_data(self) -> None:
        """Fail before any step when shards are missing, naming the command that builds them."""
        for location in [s.shards for s in self.train_sources] + self.val_sets + self.test_sets:
            read_sizes(location)

    def setup(self, stage: str) -> None:
        """Check, before any step, that the shards can serve what the configuration asks of them."""
        shown = (
            [s.shards for s in self.train_sources if TASKS.get(s.task).shows_priors] + self.val_sets + self.test_sets
        )
        for location in [s.shards for s in self.train_sources] + self.val_sets + self.test_sets:
            meta = self._first_meta(location)
            if self.hparams.num_frames > meta["num_frames"]:
                raise ValueError(
                    f"{location}: shards hold {meta['num_frames']} frames per sample, "
                    f"{self.hparams.num_frames} asked for (num_frames)"
                )
            if self.prior_actions.shown and location in shown and "prior_actions" not in meta:
                raise ValueError(f"{location}: prior actions are switched on but the samples carry no prior_actions")
        indexed_keys(self.val_sets)  # a validation question in two sets (or a set named twice) would count twice
        if self.test_sets != self.val_sets:
            indexed_keys(self.test_sets)
        held = {}  # each store's clips, read once for every question file asked over it
        for source in self.train_sources:
            if source.questions:
                if source.shards not in held:
                    held[source.shards] = store_clips([source.shards])
                self.joined(source).check(source.shards, held[source.shards])
        if self.question_files and self.asked is None:
            files = {path: read_question_file(path) for path in self.question_files}
            check_clips(files, sorted(set(self.val_sets + self.test_sets)))
            self.asked = questions_by_key(files)
        for source in self.train_sources:
            if not source.questions and TASKS.get(source.task).samples == "questions":
                TASKS.get(source.task).check(self._first_meta(source.shards), source.shards)

    def ask(self, questions: dict[str, list[dict]]) -> None:
        """Ask these questions ({file: records}) over the val/test sets, read and checked against them by the caller
        (an evaluation checks them before loading the model), so setup does not check them again."""
        self.asked = questions_by_key(questions)

    def unanswered(self) -> str | None:
        """Where a training source has a question without its answer (a question file's line, or a shard set whose
        samples carry none), None when every question has one: what learning from rewards needs."""
        for source in self.train_sources:
            if source.questions:
                for number, record in enumerate(read_jsonl(source.questions), start=1):
                    if not isinstance(record.get("answer_index"), int):
                        return f"{source.questions}:{number}: question {record.get('narration_id')} has no answer_index"
            elif not isinstance(self._first_meta(source.shards).get("answer_index"), int):
                return f"{source.shards}: its samples carry no answer_index"
        return None

    def has_class_labels(self) -> bool:
        """Whether some training source's samples carry verb/noun classes (what action supervision learns from)."""
        return any(self._first_meta(s.shards).get("verb_class") is not None for s in self.train_sources)

    def _first_meta(self, location: str) -> dict:
        """The metadata of a shard set's first sample, read once (a remote set streams its first shard for it)."""
        if location not in self._first_metas:
            self._first_metas[location] = sample_meta(first_sample(location))
        return self._first_metas[location]

    def joined(self, source: TaskSource) -> Descriptions | StoreQuestions | None:
        """What a source joins to its samples, read once (planning and the training stream share it): a qa source's
        descriptions, or the question file asked over a frame store."""
        path = source.descriptions or source.questions
        if not path:
            return None
        if path not in self._joined:
            self._joined[path] = Descriptions(path) if source.descriptions else StoreQuestions(path)
        return self._joined[path]

    def source_items(self) -> list[SourceItems]:
        """Each training source's items (samples, or conversations of replayed videos; for a qa source with
        descriptions, the samples that have one), after its sampling strategy; read once from the shard indexes."""
        if self._train_items is None:
            self._train_items = []
            for number, source in enumerate(self.train_sources):
                joined = self.joined(source)
                kept = joined.words() if joined is not None else None
                items = source_items(source.shards, kept, joined.line if joined is not None else None)
                if source.strategy is not None:
                    rng = random.Random(f"{self.hparams.seed}:strategy:{number}")
                    items = apply_strategy(items, source.strategy, rng)
                if not len(items):
                    where = f"{source.shards}, weight {source.weight}"
                    raise ValueError(f"training source {number} ({where}) has no sample")
                self._train_items.append(items)
        return self._train_items

    def epoch_planner(self, world_size: int | None = None, num_workers: int | None = None) -> EpochPlanner:
        """The training epochs' planner for a world size and worker count (default: the trainer's and the loader's)."""
        loader = self.loader
        items = self.source_items()
        weights = [None if s.strategy is not None else float(s.weight) for s in self.train_sources]
        return EpochPlanner(
            items,
            epoch_quotas([len(i) for i in items], weights, loader.samples_per_epoch),
            seed=self.hparams.seed,
            batch_size=loader.batch_size,
            world_size=self._world()[1] if world_size is None else world_size,
            num_workers=loader.num_workers if num_workers is None else num_workers,
            shuffle_buffer=loader.shuffle_buffer,
            length_group_window=loader.length_group_window,
            open_shards=loader.open_shards,
            megabatch_steps=loader.megabatch_steps,
        )

    def resume_epoch(self, epoch: int, earlier: list[EpochPart], world_size: int) -> ResumedEpoch:
        """Plan what the earlier parts of `epoch` (read under other layouts) left of it, under this run's layout: the
        training loader then reads that in the epoch (data/resume.py)."""
        self.resumed = ResumedEpoch.plan(self.epoch_planner(world_size=world_size), epoch, earlier)
        return self.resumed

    def train_batches(self) -> int:
        """Training batches per epoch on each rank (the training loader's length), without building the loader."""
        return self.epoch_planner().batches_per_rank

    def _encoder(self, task: str, training: bool) -> EncodePrompt:
        """Training prompts (with their answers unless the sample format asks for prompts only) or evaluation ones."""
        h, priors = self.hparams, self.prior_actions
        pseudo = None
        if not training and priors.evaluation == "pseudo":
            pseudo = chosen_option_texts(read_jsonl(priors.pseudo_predictions))
        probability = priors.train_probability if training else float(priors.evaluation != "none")
        return EncodePrompt(
            PromptEncoder(self.tokenizer, h.max_length, h.overflow, self.chat_format),
            task,
            h.num_frames,
            self.prompt,
            with_answer=training and self.sample_format.answers,
            prior_probability=probability,
            seed=h.seed,
            pseudo_priors=pseudo,
            reasoning=self.sample_format.reasoning,
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
            "accumulate": self.trainer.accumulate_grad_batches,
        }

    def train_dataloader(self) -> DataLoader:
        if not self.train_sources:
            raise ValueError("no training data: set data.train")
        h, loader = self.hparams, self.loader
        rank, world = self._world()
        sources = [
            SourceStream(s, DecodeFrames(h.num_frames), self._encoder(s.task, True), self.joined(s))
            for s in self.train_sources
        ]
        plans = EpochPlans(self.epoch_planner(), self.resumed)
        stream = TrainStream(plans, sources, Collate(self.tokenizer.pad_token_id, SkipCounter()), rank)
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
            questions=self.asked,
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
    batches of the epoch this rank finished, what decided the epoch's plan and the parts of the epoch read under other
    layouts before it, and a run resumed from it continues with the next batch (a resume inside an epoch under
    another plan that llavaction.training.resume did not re-plan is refused: it would repeat and skip samples)."""

    def __init__(self, stream: TrainStream, epoch: Callable[[], int], position: Callable[[], dict], **kwargs):
        super().__init__(stream, batch_size=None, collate_fn=already_collated, persistent_workers=False, **kwargs)
        self.epoch, self.position = epoch, position
        self.resume: dict | None = None

    def __iter__(self):
        return self._releasing(self._epoch_iterator())

    def _releasing(self, batches):
        """The batches, each frame buffer released (FrameBuffers) once RELEASE_LAG further batches were drawn: by
        then the loop has finished its step (Lightning draws one batch ahead). All are released when the pass ends."""
        buffers, held = self.dataset.buffers, []
        buffers.release_all()
        try:
            for batch in batches:
                held.append(batch.frame_buffer)
                if len(held) > buffers.RELEASE_LAG:
                    buffers.release(held.pop(0))
                yield batch
        finally:
            buffers.release_all()

    def _epoch_iterator(self):
        epoch = self.epoch()
        consumed = 0
        if self.resume is not None and self.resume["epoch"] == epoch:
            consumed = self.resume["batches"] - self.resume.get("start", 0)
            differing = plan_differences(self.resume, self._part(epoch))
            if consumed and differing:
                raise ValueError(
                    f"the checkpoint stopped inside epoch {epoch} of another plan ({differing}): resume inside an "
                    "epoch with the same seed, devices x nodes, loader workers, batch size and data"
                )
        self.resume = None
        self.dataset.set_epoch(epoch, consumed)
        return super().__iter__()

    def _part(self, epoch: int) -> dict:
        """What decides the epoch's batches in this run: its plan, the epoch's batch number of the plan's first
        batch and the parts of the epoch read before."""
        plans = self.dataset.plans
        return {
            "plan": plans.planner(epoch).describe(),
            "start": plans.first_batch(epoch),
            "earlier": plans.earlier(epoch),
        }

    def state_dict(self) -> dict:
        position = self.position()
        return position | self._part(position["epoch"]) | {"length": len(self.dataset)}

    def load_state_dict(self, state: dict) -> None:
        self.resume = dict(state)


def already_collated(batch: dict) -> dict:
    """The DataLoader's collate_fn: batches arrive collated (the default would walk every metadata list)."""
    return batch


def plan_differences(recorded: dict, now: dict) -> str:
    """What differs between the epoch part a checkpoint records and this run's ('batch_size 16 there, 8 here; ...'),
    over what the checkpoint recorded (an older one records less: no start, no earlier parts); '' when nothing does."""
    differing = [
        f"{key} {value} there, {now['plan'].get(key)} here"
        for key, value in (recorded.get("plan") or {}).items()
        if now["plan"].get(key) != value
    ]
    if recorded.get("start", 0) != now["start"] or recorded.get("earlier", []) != now["earlier"]:
        differing.append("another resume's remainder of the epoch")
    return "; ".join(differing)
