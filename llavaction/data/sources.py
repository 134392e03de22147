"""A training source's items as planning sees them, read from its shard set's index.json (no frame is read): which
shard and sample hold each item, its conversation, its length in words and its place in the question file; the
reference's sampling strategies applied to them; and each source's share of an epoch."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from llavaction.data.sampling import SamplingStrategy
from llavaction.data.shards import join, read_index
from llavaction.data.stages import conversation_key


@dataclass(frozen=True)
class SourceItems:
    """The items of one training source in the source's order (shards as sizes.json lists them, samples as stored,
    conversations in order), with what planning needs of each.

    Args:
        urls: the shard URLs, indexed by `shard`.
        sizes: samples per shard (sizes.json), checked when a shard is read.
        keys: the sample keys of each shard.
        shard, sample, conversation: per item, the shard, the sample in it and the conversation (-1: the sample is
            one conversation).
        words: per item, its length in words (what length-grouped batches sort by).
        order: per item, its rank in question-file order (line, then conversation): what first/end strategies count.
        available: the items of the source before a sampling strategy.
    """

    urls: tuple[str, ...]
    sizes: tuple[int, ...]
    keys: tuple[tuple[str, ...], ...]
    shard: np.ndarray
    sample: np.ndarray
    conversation: np.ndarray
    words: np.ndarray
    order: np.ndarray
    available: int

    def __len__(self) -> int:
        return len(self.shard)

    def key(self, item: int) -> str:
        """The item's key: the sample's, with `#conversation` for a conversation of a replayed video."""
        return conversation_key(self.keys[self.shard[item]][self.sample[item]], int(self.conversation[item]))

    def subset(self, items: np.ndarray) -> SourceItems:
        return SourceItems(
            self.urls,
            self.sizes,
            self.keys,
            self.shard[items],
            self.sample[items],
            self.conversation[items],
            self.words[items],
            self.order[items],
            self.available,
        )


def source_items(
    location: str, kept: dict[str, int] | None = None, question_lines: dict[str, int] | None = None
) -> SourceItems:
    """The items of a shard set from its index.json. kept: {sample key: words} to keep only those samples (a qa
    source's descriptions, or a question file over a frame store, whose words then replace the sample's);
    question_lines: {sample key: line} of that question file, which then gives the items' order."""
    index = read_index(location)
    urls, sizes, keys = [], [], []
    shard, sample, conversation, words, lines = [], [], [], [], []
    for name, entries in index.items():
        if kept is not None and not any(entry["key"] in kept for entry in entries):
            continue  # a frame store's shard holding none of the question file's clips: not one of the source's
        number = len(urls)
        urls.append(join(location, name))
        sizes.append(len(entries))
        keys.append(tuple(e["key"] for e in entries))
        for position, entry in enumerate(entries):
            if kept is not None:
                if entry["key"] not in kept:
                    continue
                counts = [kept[entry["key"]]]
                conversations = [-1]
            else:
                counts = entry["words"]
                conversations = range(len(counts)) if entry["conversations"] else [-1]
            for conv, count in zip(conversations, counts):
                shard.append(number)
                sample.append(position)
                conversation.append(conv)
                words.append(count)
                line = entry["line"] if question_lines is None else question_lines[entry["key"]]
                lines.append((line, conv))
    order = np.empty(len(lines), dtype=np.int64)
    order[sorted(range(len(lines)), key=lines.__getitem__)] = np.arange(len(lines))
    return SourceItems(
        tuple(urls),
        tuple(sizes),
        tuple(keys),
        np.asarray(shard, dtype=np.int64),
        np.asarray(sample, dtype=np.int64),
        np.asarray(conversation, dtype=np.int64),
        np.asarray(words, dtype=np.int64),
        order,
        len(lines),
    )


def apply_strategy(items: SourceItems, strategy: SamplingStrategy, rng: random.Random) -> SourceItems:
    """The fixed subset a sampling strategy keeps, counted in question-file order, kept in shard order."""
    by_order = np.argsort(items.order, kind="stable")
    chosen = by_order[strategy.select(len(items), rng)]
    return items.subset(np.sort(chosen))


def epoch_quotas(sizes: list[int], weights: list[float | None], samples_per_epoch: int | None) -> list[int | None]:
    """Items per epoch of each source: None for a source taken whole (weight None); numeric weights share
    samples_per_epoch less the whole sources' items, by largest remainders."""
    numeric = [i for i, w in enumerate(weights) if w is not None]
    if not numeric:
        if samples_per_epoch is not None and samples_per_epoch != sum(sizes):
            raise ValueError(
                f"data.loader.samples_per_epoch is {samples_per_epoch} but every training source is taken whole "
                f"(weight 'size' or a sampling strategy): an epoch is their {sum(sizes)} samples; set "
                "samples_per_epoch: null"
            )
        return [None] * len(sizes)
    if samples_per_epoch is None:
        raise ValueError(
            "numeric training weights are ratios of data.loader.samples_per_epoch, which is null: set it, or give "
            "every source weight 'size' (each sample once an epoch)"
        )
    whole = sum(size for size, w in zip(sizes, weights) if w is None)
    left = samples_per_epoch - whole
    if left <= 0:
        raise ValueError(
            f"data.loader.samples_per_epoch {samples_per_epoch} leaves nothing for the weighted sources after the "
            f"{whole} samples of the sources taken whole"
        )
    total_weight = sum(weights[i] for i in numeric)
    exact = {i: left * weights[i] / total_weight for i in numeric}
    quotas = {i: math.floor(exact[i]) for i in numeric}
    for i in sorted(numeric, key=lambda i: (quotas[i] - exact[i], i))[: left - sum(quotas.values())]:
        quotas[i] += 1
    empty = [i for i in numeric if sizes[i] == 0 and quotas[i]]
    if empty:
        raise ValueError(f"training source {empty[0]} has no sample to draw from")
    return [quotas.get(i) for i in range(len(sizes))]
