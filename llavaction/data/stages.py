"""The sample stages, each a picklable callable: a shard sample -> chosen frames -> prompt tokens; Collate makes the
batch. Collate decodes every clip's JPEGs straight into one uint8 [B, T, H, W, 3] tensor; the model converts, resizes
and normalises it once per batch on its device."""

from __future__ import annotations

import copy
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
import torch

from llavaction.data.batch import Batch
from llavaction.data.buffers import FrameBuffers, fresh_frames
from llavaction.data.shards import frame_name
from llavaction.prompts.encoding import PromptEncoder, VisualSpan, pad_right
from llavaction.prompts.formats import ClipTiming
from llavaction.prompts.tasks import can_show_priors, prompt_turns, user_text
from llavaction.prompts.wording import PromptOptions, with_pseudo_priors
from llavaction.utils.constants import IGNORE_INDEX
from llavaction.utils.jsonl import read_jsonl

log = logging.getLogger(__name__)


class BadSample(ValueError):
    """A sample that cannot be used; the message names it."""


def frame_indices(stored: int, wanted: int) -> list[int]:
    """Evenly spread indices when the shards hold more frames than asked for (midpoints of equal parts)."""
    if wanted > stored:
        raise ValueError(f"{wanted} frames asked for but the shards hold {stored} per sample")
    return [int((i + 0.5) * stored / wanted) for i in range(wanted)]


@dataclass
class ArrayFrames:
    """A clip's frames already decoded (a video file's clip in prediction), copied into the batch by Collate."""

    array: np.ndarray  # uint8 [T, size, size, 3]
    timing: ClipTiming  # when its frames were taken

    @property
    def count(self) -> int:
        return self.array.shape[0]

    @property
    def size(self) -> int:
        return self.array.shape[1]

    def decode_into(self, buffer: np.ndarray) -> None:
        buffer[...] = self.array


@dataclass
class JpegFrames:
    """A clip's chosen JPEG frames, decoded only by Collate, straight into the batch buffer (no per-sample copy)."""

    jpegs: list[bytes] | None  # None: a padding clip (zeros)
    count: int  # frames
    size: int  # frame side in pixels
    timing: ClipTiming  # when its frames were taken

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
            chosen = frame_indices(meta["num_frames"], self.num_frames)
            jpegs = [sample[frame_name(index)] for index in chosen]
            timing = clip_timing(meta, chosen)
            for jpeg in jpegs:
                height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
                if (height, width) != (size, size):
                    raise ValueError(f"a {width}x{height} frame in a sample of {size}x{size} frames")
        except (KeyError, ValueError, TypeError) as err:
            raise BadSample(f"sample {key} in {sample.get('__url__', '?')}: {type(err).__name__}: {err}") from None
        return {"__key__": key, "meta": meta, "frames": JpegFrames(jpegs, len(jpegs), size, timing)}


def clip_seconds(meta: dict) -> float:
    """How long a sample's clip lasts (0 for a record without its bounds, such as a padding row)."""
    start, stop = meta.get("clip_start_sec"), meta.get("clip_stop_sec")
    return float(stop) - float(start) if start is not None and stop is not None else 0.0


def clip_timing(meta: dict, chosen: list[int]) -> ClipTiming:
    """When the chosen frames of a sample (positions among the frames it stores) were taken: from the video frame
    indices and frame rate the store recorded, else (a sample without them) evenly over its clip."""
    ids, fps = meta.get("frame_ids"), meta.get("video_fps")
    start, stop = meta.get("clip_start_sec"), meta.get("clip_stop_sec")
    if ids and fps and start is not None and stop is not None:
        return ClipTiming.of_frames([ids[i] for i in chosen], float(fps), float(start), float(stop))
    return ClipTiming.even(len(chosen), clip_seconds(meta))


def decide(seed: int, epoch: int, key: str, purpose: str, probability: float) -> bool:
    """A per-sample coin decided by (seed, epoch, sample): the same on any world size or worker count."""
    return probability > 0 and random.Random(f"{seed}:{epoch}:{key}:{purpose}").random() < probability


class Descriptions:
    """Question-answer pairs about segments (e.g. GPT-4o descriptions distilled from a stronger model) whose frames
    come from existing shards: samples without one are left out of this task; the pair joins the sample's metadata.
    A line is {narration_id, question, answer} (no question, or null: the reference's description prompt) or
    {narration_id, conversation: [{"from": "human", "value"}, {"from": "gpt", "value"}, ...]} (every turn trained)."""

    line = None  # the items keep the shard set's question-file order (StoreQuestions gives its own)

    def __init__(self, path: str | Path):
        self.by_id = {}
        for number, record in enumerate(read_jsonl(path), start=1):
            if "narration_id" not in record or not ("answer" in record or record.get("conversation")):
                raise ValueError(f"{path}:{number}: needs narration_id and an answer (or a conversation)")
            if record.get("conversation"):
                self.by_id[record["narration_id"]] = {"conversation": record["conversation"]}
            else:
                self.by_id[record["narration_id"]] = {
                    "qa_question": record.get("question"),
                    "qa_answer": record["answer"],
                }

    def words(self) -> dict[str, int]:
        """{narration_id: words of its question and answer, or of its conversation's turns} (the length proxy)."""
        out = {}
        for key, record in self.by_id.items():
            if "conversation" in record:
                texts = [turn.get("value", "") for turn in record["conversation"]]
            else:
                texts = [record["qa_question"] or "", record["qa_answer"]]
            out[key] = sum(len(str(text).split()) for text in texts)
        return out

    def __call__(self, sample: dict) -> dict:
        sample["meta"] |= self.by_id[sample["__key__"]]
        return sample


def conversation_key(key: str, index: int) -> str:
    """The key of conversation `index` of a sample (`key#index`); index -1: the sample's own key."""
    return key if index < 0 else f"{key}#{index}"


def conversation_of(sample: dict, index: int) -> dict:
    """Conversation `index` of a replay sample whose video carries several (build_replay stores a video's frames
    once), as a sample of its own sharing the frames, keyed `key#index`; index -1: the sample itself."""
    if index < 0:
        return sample
    many = sample["meta"].get("conversations") or []
    if index >= len(many):
        raise BadSample(f"sample {sample['__key__']}: no conversation {index} (it holds {len(many)})")
    meta = sample["meta"] | {"conversation": many[index]}
    return sample | {"__key__": conversation_key(sample["__key__"], index), "meta": meta}


class EncodePrompt:
    """Sample -> input_ids and labels for one task; with_answer=False stops at the assistant turn (evaluation).

    An MQA question whose sample carries its two prior actions shows them with probability prior_probability, decided
    per (seed, epoch, sample) so that any world size or worker count makes the same choice; pseudo_priors (evaluation:
    narration_id -> the model's own earlier answer) replaces the ground-truth texts of the prior actions; reasoning:
    the question asks for the reasoning first (prompts.wording.REASONING_FORMAT)."""

    def __init__(
        self,
        encoder: PromptEncoder,
        task: str,
        num_frames: int,
        options: PromptOptions,
        *,
        with_answer: bool = True,
        prior_probability: float = 0.0,
        seed: int = 0,
        epoch: int = 0,
        pseudo_priors: dict[str, str] | None = None,
        reasoning: bool = False,
    ):
        self.encoder, self.task, self.num_frames = encoder, task, num_frames
        self.options, self.with_answer = options, with_answer
        self.prior_probability, self.seed, self.epoch = prior_probability, seed, epoch
        self.pseudo_priors, self.reasoning = pseudo_priors, reasoning

    def __call__(self, sample: dict) -> dict:
        meta = sample["meta"]
        use_priors = can_show_priors(meta, self.task) and decide(
            self.seed, self.epoch, sample["__key__"], "priors", self.prior_probability
        )
        try:
            if use_priors and self.pseudo_priors is not None:
                meta = with_pseudo_priors(meta, self.pseudo_priors)
            if self.with_answer:
                turns = prompt_turns(meta, self.task, self.num_frames, self.options, use_priors)
            else:
                question = user_text(meta, self.task, self.num_frames, self.options, use_priors, self.reasoning)
                turns = [(question, None)]
        except (KeyError, ValueError) as err:
            raise BadSample(f"sample {sample['__key__']}: cannot build a {self.task} prompt ({err})") from None
        encoded = self.encoder.encode_turns(turns, self.visual_span(sample), name=sample["__key__"])
        return sample | {
            "meta": meta,
            "input_ids": encoded.input_ids,
            "labels": encoded.labels,
            "truncated": encoded.truncated,
            "task": self.task,
            "prior_actions_shown": use_priors,
        }

    def visual_span(self, sample: dict) -> VisualSpan:
        """What the sample's clip takes in its prompt, in the backbone's format (its frames' size and duration)."""
        return self.encoder.visual(sample["frames"].timing, sample["frames"].size)

    def at_epoch(self, epoch: int) -> EncodePrompt:
        """This encoder deciding per-sample coins for another epoch."""
        encode = copy.copy(self)
        encode.epoch = epoch
        return encode


# Why a training sample is skipped: its shard cannot be read (missing, truncated, unreachable), the sample is unusable
# (bad metadata, no prompt can be built), or one of its frames does not decode.
SKIP_REASONS = ("unreadable_shard", "bad_sample", "undecodable_frame")


def padding_copy(sample: dict) -> dict:
    """A prepared sample turned into padding: in the batch for its shape, out of the loss and the metrics."""
    return sample | {"is_padding": True, "labels": [IGNORE_INDEX] * len(sample["labels"])}


class SkipCounter:
    """Counts the training samples skipped in one loader worker by reason (SKIP_REASONS), warning with each one's
    name and the running count; each batch carries the skips since the previous one (train/skipped_samples)."""

    def __init__(self):
        self.total = 0
        self.pending = dict.fromkeys(SKIP_REASONS, 0)

    def skip(self, reason: str, what: str) -> None:
        self.total += 1
        self.pending[reason] += 1
        log.warning("skipped %s (%d skipped so far in this loader worker)", what, self.total)

    def take(self) -> dict[str, int]:
        counts, self.pending = self.pending, dict.fromkeys(SKIP_REASONS, 0)
        return counts


class Collate:
    """Right-pads token sequences and decodes every clip's JPEGs straight into one uint8 batch tensor; carries labels
    for metrics, a padding flag and each row's key. A frame that fails to decode makes its sample padding with blank
    frames, counted by `skips` (training: the batch keeps its size), or raises BadSample naming it (evaluation: skips
    is None). With `buffers` (training) the frames go into a reused buffer, released by the training loader; without,
    into fresh memory."""

    def __init__(self, pad_id: int, skips: SkipCounter | None = None, buffers: FrameBuffers | None = None):
        self.pad_id, self.skips, self.buffers = pad_id, skips, buffers

    def decode(self, samples: list[dict]) -> tuple[list[dict], torch.Tensor, tuple[int, int] | None]:
        first = samples[0]["frames"]
        shape = (len(samples), first.count, first.size, first.size, 3)
        frames, owner = self.buffers.acquire(shape) if self.buffers is not None else (fresh_frames(shape), None)
        decoded = []
        for row, sample in enumerate(samples):
            try:
                sample["frames"].decode_into(frames[row].numpy())
            except ValueError as err:
                message = f"sample {sample['__key__']}: a frame does not decode ({err})"
                if self.skips is None:
                    raise BadSample(message) from None
                frames[row].fill_(0)
                if not sample.get("is_padding"):
                    self.skips.skip("undecodable_frame", message)
                sample = padding_copy(sample)
            decoded.append(sample)
        return decoded, frames, owner

    def __call__(self, samples: list[dict]) -> Batch:
        samples, frames, owner = self.decode(samples)
        tokens = pad_right([(s["input_ids"], s["labels"]) for s in samples], self.pad_id)

        def field(name: str, default: int = -1) -> torch.Tensor:
            values = [None if s.get("is_padding") else s["meta"].get(name) for s in samples]
            return torch.tensor([default if v is None else int(v) for v in values], dtype=torch.long)

        return Batch(
            input_ids=tokens["input_ids"],
            labels=tokens["labels"],
            attention_mask=tokens["attention_mask"],
            frames=frames,
            is_padding=torch.tensor([s.get("is_padding", False) for s in samples]),
            truncated=torch.tensor([s.get("truncated", False) for s in samples]),
            answer_index=field("answer_index"),
            num_options=torch.tensor([len(s["meta"].get("options") or []) for s in samples], dtype=torch.long),
            clips=[s["frames"].timing for s in samples],
            verb_class=field("verb_class"),
            noun_class=field("noun_class"),
            action_index=field("action_index"),
            verb_tail=field("verb_tail", 0).bool(),
            noun_tail=field("noun_tail", 0).bool(),
            unseen=field("unseen_participant", 0).bool(),
            tasks=[s.get("task", "padding") for s in samples],
            meta=[s["meta"] for s in samples],
            keys=[s["__key__"] for s in samples],
            skipped_samples=self.skips.take() if self.skips is not None else {},
            frame_buffer=owner,
        )
