"""Typed options of the data: the training mixture's sources, batching and loading, prior actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llavaction.data.sampling import SamplingStrategy
from llavaction.prompts.tasks import TASKS, Task
from llavaction.utils.checks import check_count


@dataclass(frozen=True)
class LoaderOptions:
    """How samples are batched and loaded.

    Args:
        batch_size: training samples per batch and device.
        eval_batch_size: validation/test samples per batch and device.
        num_workers: loader worker processes per device (0: in the training process).
        samples_per_epoch: training samples per epoch over all devices when some source has a numeric weight (the
            weighted sources share what the sources taken whole leave); null when every source is taken whole
            (weight 'size' or a sampling strategy): an epoch is then each of their samples once.
        shuffle_buffer: samples each loader worker holds per training source for shuffling (memory: this many
            samples' JPEG frames per source and worker).
        length_group_window: when > 0, training batches are formed from this many batches' worth of samples sorted by
            their length in words (less padding); 0 batches samples as they come.
        open_shards: shards of a training source each loader worker reads at once, their samples interleaved at random
            (shards hold a few videos each, in time order: more open shards, better mixed batches).
        megabatch_steps: when > 0, the reference's length grouping: megabatches of devices x megabatch_steps x
            batch_size samples, each sorted by length and split into chunks of balanced length, one a device and
            micro-step (set it to the gradient accumulation; llavaction/data/megabatch.py); it balances the devices
            at each step, and each device then reads every shard of the epoch. 0: off.
    """

    batch_size: int = 1
    eval_batch_size: int = 8
    num_workers: int = 2
    samples_per_epoch: int | None = None
    shuffle_buffer: int = 500
    length_group_window: int = 0
    open_shards: int = 4
    megabatch_steps: int = 0

    def __post_init__(self):
        for name in ("batch_size", "eval_batch_size", "shuffle_buffer", "open_shards"):
            check_count(f"data.loader.{name}", getattr(self, name), minimum=1)
        for name in ("num_workers", "length_group_window", "megabatch_steps"):
            check_count(f"data.loader.{name}", getattr(self, name), minimum=0)
        if self.samples_per_epoch is not None:
            check_count("data.loader.samples_per_epoch", self.samples_per_epoch, minimum=1, null=True)


@dataclass(frozen=True)
class SampleFormat:
    """What the training stage asks of the samples (the model says it: train.py links it to the data).

    Args:
        answers: training samples carry their answer, with labels on it (supervised fine-tuning); false: the prompt
            up to the assistant turn only, the question's options and answer kept in its record (reinforcement
            learning samples the answers).
        reasoning: MQA prompts, in training and in validation, ask for the reasoning inside <think> </think> before
            the answer (llavaction.prompts.wording.REASONING_FORMAT).
    """

    answers: bool = True
    reasoning: bool = False


@dataclass(frozen=True)
class PriorActionOptions:
    """The two previous actions in MQA questions (the reference's learn_neighbor_actions='prior').

    Args:
        train_probability: chance that a training question whose two prior actions are known shows them (the
            published recipe: 0.3).
        evaluation: what validation and test questions show: 'none' (the reference's evaluation), 'oracle' (the
            ground-truth prior actions) or 'pseudo' (the model's own earlier answers for them).
        pseudo_predictions: predictions.jsonl of an earlier `llavaction.cli.evaluate mqa` run, for 'pseudo'.
    """

    train_probability: float = 0.0
    evaluation: Literal["none", "oracle", "pseudo"] = "none"
    pseudo_predictions: str | None = None

    def __post_init__(self):
        if not 0.0 <= self.train_probability <= 1.0:
            raise ValueError(f"prior_actions.train_probability {self.train_probability} is not a probability")
        if (self.evaluation == "pseudo") != (self.pseudo_predictions is not None):
            raise ValueError("prior_actions.evaluation='pseudo' needs pseudo_predictions, and only it uses them")

    @property
    def shown(self) -> bool:
        return self.train_probability > 0 or self.evaluation != "none"


@dataclass(frozen=True)
class TaskSource:
    """One component of the training mixture.

    Args:
        path: a self-contained shard set written by data_prep.extract_frames (frames with the questions they were
            extracted for): a directory or a URL (see llavaction.data.shards).
        task: how a sample becomes a conversation: mqa, narration, temporal or qa.
        weight: 'size' (or 'all'): every sample once an epoch, as the reference's `sampling_strategy: all`; a
            sampling strategy of the reference, 'first:N', 'end:N', 'random:N' (N a count or 'N%'): that fixed
            subset once an epoch; or a positive number: the source's share of loader.samples_per_epoch, drawn
            without replacement within each pass over the source.
        descriptions: for task qa, a JSONL of {narration_id, question, answer} (e.g. distilled descriptions), joined
            to the samples of `path` or `frames`.
        questions: a question file of build_mqa, asked over the frame store `frames`: its questions are the source's
            items, each about the clip the store holds for it (checked before the first step).
        frames: a frame store (a directory or URL of shards of the clips, extracted for any question files) that
            `questions` or `descriptions` are asked over, in place of `path`.
    """

    path: str | None = None
    task: Task = "mqa"
    weight: float | str = 1.0
    descriptions: str | None = None
    questions: str | None = None
    frames: str | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} not in {', '.join(TASKS.names())}")
        samples = TASKS.get(self.task).samples
        if (self.path is None) == (self.frames is None):
            raise ValueError(
                "a training source names a shard set (path) or a frame store with the questions asked over it "
                f"(frames and questions): got path {self.path!r}, frames {self.frames!r}"
            )
        if self.questions is not None and self.frames is None:
            raise ValueError(f"{self.path}: questions are asked over a frame store: name it `frames:` (not `path:`)")
        if self.frames is not None and self.questions is None and self.descriptions is None:
            raise ValueError(f"{self.frames}: a frame store asks a question file: give `questions:` (or use `path:`)")
        if self.questions is not None and samples != "questions":
            asked = ", ".join(n for n in TASKS.names() if TASKS.get(n).samples == "questions")
            raise ValueError(f"{self.frames}: a question file over a frame store goes with a task of {asked}")
        if self.descriptions is not None and samples != "descriptions":
            takes = ", ".join(repr(n) for n in TASKS.names() if TASKS.get(n).samples == "descriptions")
            raise ValueError(f"{self.shards}: a descriptions file goes with task {takes}")
        if isinstance(self.weight, str):
            try:
                SamplingStrategy.parse("all" if self.weight == "size" else self.weight)
            except ValueError as err:
                raise ValueError(f"weight of {self.shards}: {err} (or 'size', or a positive number)") from None
        elif not self.weight > 0 or self.weight != self.weight or self.weight == float("inf"):
            raise ValueError(f"weight of {self.shards} must be a positive number, 'size' or a sampling strategy")

    @property
    def strategy(self) -> SamplingStrategy | None:
        """The subset taken whole each epoch, or None for a numeric weight."""
        if isinstance(self.weight, str):
            return SamplingStrategy.parse("all" if self.weight == "size" else self.weight)
        return None

    @property
    def shards(self) -> str:
        """The shard set this source reads: the frame store, or the self-contained set."""
        return self.frames or self.path
