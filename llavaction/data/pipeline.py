"""WebDataset stages, each a picklable callable: shards -> samples -> chosen frames -> prompt tokens -> batches.

Collate decodes every clip's JPEGs straight into one uint8 [B, T, H, W, 3] tensor; the model converts, resizes and
normalises it once per batch on its device. Bad training samples are skipped and counted with a warning naming them;
evaluation never skips.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
import torch
import webdataset as wds
from webdataset.utils import pytorch_worker_seed
from torch.utils.data import IterableDataset, get_worker_info

from llavaction.prompts import TASKS, PromptEncoder, PromptOptions, build_answer, build_question, pad_right

log = logging.getLogger(__name__)
SIZES_FILE = "sizes.json"
BUILD_HINT = "python -m data_prep.extract_frames --questions Q.jsonl --videos DIR --out {path}"


@dataclass(frozen=True)
class TaskSource:
    """One component of the training mixture.

    Args:
        path: shard directory written by data_prep.extract_frames (holds sizes.json).
        task: how a sample becomes a conversation: mqa, narration, temporal or qa.
        weight: sampling weight in the mixture.
        descriptions: for task qa, a JSONL of {narration_id, question, answer} (e.g. distilled descriptions).
    """

    path: str
    task: str = "mqa"
    weight: float = 1.0
    descriptions: str | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} not in {TASKS}")
        if self.descriptions is not None and self.task != "qa":
            raise ValueError(f"{self.path}: a descriptions file goes with task 'qa'")
        if self.weight <= 0:
            raise ValueError(f"weight of {self.path} must be positive")


class BadSample(ValueError):
    """A sample that cannot be used; the message names it."""


def read_sizes(path: str | Path) -> dict[str, int]:
    """sizes.json of a shard directory: {shard file name: samples}."""
    sizes_path = Path(path) / SIZES_FILE
    if not sizes_path.exists():
        raise FileNotFoundError(f"{sizes_path} not found; build the shards with: {BUILD_HINT.format(path=path)}")
    sizes = json.loads(sizes_path.read_text())
    absent = [name for name in sizes if not (Path(path) / name).exists()]
    if absent:
        raise FileNotFoundError(f"{path}: shards listed in sizes.json are missing: {absent[:5]}")
    return sizes


def shard_urls(path: str | Path) -> list[str]:
    return [str(Path(path) / name) for name in read_sizes(path)]


def frame_indices(stored: int, wanted: int) -> list[int]:
    """Evenly spread indices when the shards hold more frames than asked for (midpoints of equal parts)."""
    if wanted > stored:
        raise ValueError(f"{wanted} frames asked for but the shards hold {stored} per sample")
    return [int((i + 0.5) * stored / wanted) for i in range(wanted)]


@dataclass
class JpegFrames:
    """A clip's chosen JPEG frames, decoded only by Collate, straight into the batch buffer (no per-sample copy)."""

    jpegs: list[bytes] | None  # None: a padding clip (zeros)
    count: int  # frames
    size: int  # frame side in pixels

    def decode_into(self, buffer: np.ndarray) -> None:
        """buffer: uint8 [T, size, size, 3]."""
        if self.jpegs is None:
            buffer.fill(0)
            return
        for slot, jpeg in enumerate(self.jpegs):
            simplejpeg.decode_jpeg(jpeg, colorspace="RGB", buffer=buffer[slot])


class DecodeFrames:
    """json + JPEGs -> {"meta": dict, "frames": JpegFrames}: picks the frames and checks their headers; the pixels are
    decoded by Collate into the batch."""

    def __init__(self, num_frames: int):
        self.num_frames = num_frames

    def __call__(self, sample: dict) -> dict:
        key = sample.get("__key__", "?")
        try:
            meta = json.loads(sample["json"])
            size = meta["frame_size"]
            jpegs = [sample[f"{index:03d}.jpg"] for index in frame_indices(meta["num_frames"], self.num_frames)]
            for jpeg in jpegs:
                height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
                if (height, width) != (size, size):
                    raise ValueError(f"a {width}x{height} frame in a sample of {size}x{size} frames")
        except (KeyError, ValueError, TypeError) as err:
            raise BadSample(f"sample {key} in {sample.get('__url__', '?')}: {type(err).__name__}: {err}") from None
        return {"__key__": key, "meta": meta, "frames": JpegFrames(jpegs, len(jpegs), size)}


def decide(seed: int, epoch: int, key: str, purpose: str, probability: float) -> bool:
    """A per-sample coin decided by (seed, epoch, sample): the same on any world size or worker count."""
    return probability > 0 and random.Random(f"{seed}:{epoch}:{key}:{purpose}").random() < probability


class Descriptions:
    """Question-answer pairs about segments (e.g. distilled from a stronger model) whose frames come from existing
    shards: samples without one are left out of this task; the pair joins the sample's metadata."""

    def __init__(self, path: str | Path):
        self.by_id = {}
        with open(path) as f:
            for line_number, line in enumerate(f, start=1):
                if line.strip():
                    record = json.loads(line)
                    missing = [k for k in ("narration_id", "question", "answer") if k not in record]
                    if missing:
                        raise ValueError(f"{path}:{line_number}: missing {', '.join(missing)}")
                    self.by_id[record["narration_id"]] = (record["question"], record["answer"])

    def has(self, sample: dict) -> bool:
        return sample["__key__"] in self.by_id

    def __call__(self, sample: dict) -> dict:
        question, answer = self.by_id[sample["__key__"]]
        sample["meta"] |= {"qa_question": question, "qa_answer": answer}
        return sample


class EncodePrompt:
    """Sample -> input_ids and labels for one task; with_answer=False stops at the assistant turn (evaluation)."""

    def __init__(self, tokenizer, task: str, num_frames: int, visual_tokens: int, max_length: int, overflow: str,
                 options: PromptOptions, with_answer: bool = True, prior_actions_prob: float = 0.0, seed: int = 0,
                 epoch: int = 0, pseudo_priors: dict[str, str] | None = None):
        """pseudo_priors: in evaluation, narration_id -> the model's own earlier answer, shown instead of the
        ground-truth prior actions."""
        self.encoder = PromptEncoder(tokenizer, max_length=max_length, overflow=overflow)
        self.pseudo_priors = pseudo_priors
        self.task, self.num_frames, self.visual_tokens = task, num_frames, visual_tokens
        self.options, self.with_answer = options, with_answer
        self.prior_actions_prob, self.seed, self.epoch = prior_actions_prob, seed, epoch

    def __call__(self, sample: dict) -> dict:
        meta = sample["meta"]
        use_priors = self.options.prior_actions and (
            not self.with_answer or decide(self.seed, self.epoch, sample["__key__"], "priors", self.prior_actions_prob)
        )
        if use_priors and self.pseudo_priors is not None:
            meta = meta | {"prior_actions": [p | {"text": self._pseudo(p["narration_id"], sample)}
                                             for p in meta.get("prior_actions") or []]}
        try:
            question = build_question(meta, self.task, self.num_frames, self.options, use_priors=use_priors)
            answer = build_answer(meta, self.task) if self.with_answer else None
        except (KeyError, ValueError) as err:
            raise BadSample(f"sample {sample['__key__']}: cannot build a {self.task} prompt ({err})") from None
        encoded = self.encoder.encode(question, answer, self.visual_tokens, name=sample["__key__"])
        return sample | {"meta": meta, "input_ids": encoded.input_ids, "labels": encoded.labels,
                         "truncated": encoded.truncated, "task": self.task}

    def _pseudo(self, prior_id: str, sample: dict) -> str:
        if prior_id not in self.pseudo_priors:
            raise BadSample(f"sample {sample['__key__']}: no earlier prediction for its prior action {prior_id}")
        return self.pseudo_priors[prior_id]


class SkipAndCount:
    """A WebDataset handler for training: warn with the sample's name and the running count, then go on."""

    def __init__(self):
        self.skipped = 0

    def __call__(self, error: Exception) -> bool:
        if not isinstance(error, BadSample):
            return False  # reraise: an unexpected error is a bug, not bad data
        self.skipped += 1
        log.warning("skipped %s (%d skipped so far in this loader worker)", error, self.skipped)
        return True


class Collate:
    """Right-pads token sequences and decodes every clip's JPEGs straight into one uint8 batch tensor; carries labels
    for metrics and a padding flag. A frame that fails to decode drops its sample with a counted warning (skip_bad,
    training) or raises BadSample naming it (evaluation)."""

    def __init__(self, pad_id: int, skip_bad: bool = False):
        self.pad_id, self.skip_bad, self.skipped = pad_id, skip_bad, 0

    def decode(self, samples: list[dict]) -> tuple[list[dict], torch.Tensor]:
        first = samples[0]["frames"]
        frames = torch.empty((len(samples), first.count, first.size, first.size, 3), dtype=torch.uint8)
        if get_worker_info() is not None:  # allocated where the DataLoader would otherwise copy it to
            frames.share_memory_()
        kept = []
        for sample in samples:
            try:
                sample["frames"].decode_into(frames[len(kept)].numpy())
            except ValueError as err:
                if not self.skip_bad:
                    raise BadSample(f"sample {sample['__key__']}: a frame does not decode ({err})") from None
                self.skipped += 1
                log.warning("skipped sample %s: a frame does not decode (%s); %d skipped so far in this loader worker",
                            sample["__key__"], err, self.skipped)
                continue
            kept.append(sample)
        return kept, frames[: len(kept)]

    def __call__(self, samples: list[dict]) -> dict:
        samples, frames = self.decode(samples)
        tokens = pad_right([(s["input_ids"], s["labels"]) for s in samples], self.pad_id)

        def field(name: str, default: int = -1) -> torch.Tensor:
            values = [s["meta"].get(name) for s in samples]
            return torch.tensor([default if v is None else int(v) for v in values], dtype=torch.long)

        return tokens | {
            "frames": frames,
            "is_padding": torch.tensor([s.get("is_padding", False) for s in samples]),
            "truncated": torch.tensor([s.get("truncated", False) for s in samples]),
            "answer_index": field("answer_index"),
            "num_options": torch.tensor([len(s["meta"].get("options", [])) for s in samples], dtype=torch.long),
            "verb_class": field("verb_class"), "noun_class": field("noun_class"),
            "action_index": field("action_index"),
            "verb_tail": field("verb_tail", 0).bool(), "noun_tail": field("noun_tail", 0).bool(),
            "unseen": field("unseen_participant", 0).bool(),
            "task": [s.get("task", "padding") for s in samples],
            "meta": [s["meta"] for s in samples],
        }


def train_source(source: TaskSource, decode: DecodeFrames, encode: EncodePrompt, seed: int, shuffle_buffer: int,
                 handler: SkipAndCount):
    """An endless stream of one task: shards resampled with a seed per (rank, worker, epoch), samples shuffled."""
    descriptions = Descriptions(source.descriptions) if source.descriptions else None
    return wds.DataPipeline(
        wds.ResampledShards(shard_urls(source.path), seed=seed, deterministic=True),
        wds.tarfile_to_samples(handler=handler),
        *([wds.select(descriptions.has)] if descriptions else []),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 64), seed=seed),
        wds.map(decode, handler=handler),
        *([wds.map(descriptions)] if descriptions else []),
        wds.map(encode, handler=handler),
    )


class WeightedMix(IterableDataset):
    """Draws each sample from one of several endless streams with the given weights. Unlike wds.RandomMix, the draws
    come from a generator seeded by (seed, rank, worker), so a run is reproducible and resumes identically."""

    def __init__(self, sources: list, weights: list[float], seed: int):
        self.sources, self.weights, self.seed = sources, weights, seed

    def __iter__(self):
        rng = random.Random(f"{self.seed}:{pytorch_worker_seed()}")
        streams = [iter(s) for s in self.sources]
        choices = range(len(streams))
        while True:
            yield next(streams[rng.choices(choices, weights=self.weights)[0]])


class LengthGroupedBatches:
    """A WebDataset stage: gathers `window` batches' worth of samples, sorts them by token length so each batch holds
    similar lengths (less padding), and yields the batches in a seeded random order."""

    def __init__(self, batch_size: int, window: int, collate: Collate, seed: int):
        self.batch_size, self.window, self.collate, self.seed = batch_size, window, collate, seed

    def __call__(self, samples):
        rng = random.Random(f"{self.seed}:{pytorch_worker_seed()}")
        pool = []
        for sample in samples:
            pool.append(sample)
            if len(pool) == self.batch_size * self.window:
                pool.sort(key=lambda s: len(s["input_ids"]))
                batches = [pool[i: i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
                rng.shuffle(batches)
                for batch in batches:
                    yield self.collate(batch)
                pool = []


class EvalStream(IterableDataset):
    """Every sample exactly once across ranks, and the same number of batches on every rank and worker: shard i goes
    to slot i mod (ranks x workers); each slot pads its batches with flagged dummy samples up to the largest slot."""

    def __init__(self, shard_dirs: list[str], batch_size: int, decode: DecodeFrames, encode: EncodePrompt,
                 collate: Collate, rank: int = 0, world_size: int = 1, num_workers: int = 0):
        self.shards = [(str(Path(d) / name), size) for d in shard_dirs for name, size in read_sizes(d).items()]
        self.batch_size, self.decode, self.encode, self.collate = batch_size, decode, encode, collate
        self.rank, self.world_size, self.workers = rank, world_size, max(1, num_workers)
        slots = self.world_size * self.workers
        self.batches_per_slot = max(
            [math.ceil(sum(size for i, (_, size) in enumerate(self.shards) if i % slots == slot) / batch_size)
             for slot in range(slots)] + [1]
        )

    def __len__(self) -> int:
        return self.batches_per_slot * self.workers

    def padding_sample(self, frames: JpegFrames) -> dict:
        meta = {"narration_id": None, "options": [], "answer_index": None}
        encoded = self.encode.encoder.encode("", None, self.encode.visual_tokens, name="padding")
        return {"__key__": "padding", "meta": meta, "frames": JpegFrames(None, frames.count, frames.size), "is_padding": True,
                "input_ids": encoded.input_ids, "labels": encoded.labels}

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        slot, slots = self.rank * self.workers + worker, self.world_size * self.workers
        urls = [url for i, (url, _) in enumerate(self.shards) if i % slots == slot]
        batch, emitted, template = [], 0, None
        if urls:
            for raw in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()):
                sample = self.encode(self.decode(raw))
                template = sample["frames"]
                batch.append(sample)
                if len(batch) == self.batch_size:
                    yield self.collate(batch)
                    batch, emitted = [], emitted + 1
        if template is None:  # this slot got no shard: shape the padding like any sample of the set
            url = self.shards[0][0]
            first = next(iter(wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())))
            template = self.decode(first)["frames"]
        while emitted < self.batches_per_slot:
            batch += [self.padding_sample(template)] * (self.batch_size - len(batch))
            yield self.collate(batch)
            batch, emitted = [], emitted + 1
