"""Padding waste of right-padded batches on a realistic training mixture, in tokens, from one run.

The mixture follows the 7B recipe at 64 frames (13,440 visual tokens a sample): MQA questions, direct narration,
temporal detection and text-heavy distilled descriptions, drawn 1 : 0.5 : 0.5 : 0.5 from the real EK-100 validation
annotations (questions built by data_prep.build_mqa). Text is tokenised with the local BPE tokenizer of the tiny preset,
so text lengths are approximate (Qwen's tokenizer is similar in scale for English). Prints padded tokens / real tokens
for random batches and for length-grouped batches (sorted within a window of batches), then, at the recipe's shape
(--world ranks, --accumulate micro-batches a step), the two groupings across ranks: ours (each rank its contiguous
share of the epoch, length-grouped within its own windows) and the reference's megabatch (group_by_modality_length:
random megabatches of world x accumulation x batch samples, each sorted by length and split into world x accumulation
chunks of balanced length, chunk c going to rank c mod world at micro-step c div world). For each: padding, and rank
imbalance, the compute lost to waiting at each micro-step (sum over micro-steps of the longest rank's tokens over the
mean rank's, less one: every rank waits for the slowest at each FSDP collective).

    python benchmarks/padding.py [--batch-size 4] [--frames 64] [--world 8] [--accumulate 32]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from synthetic import epic_validation_questions

from llavaction.model.llava_video import preset
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.tasks import answer_text, user_text
from llavaction.prompts.tokenizer import build_tokenizer
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.jsonl import read_jsonl

WEIGHTS = {"mqa": 1.0, "narration": 0.5, "temporal": 0.5, "qa": 0.5}


def waste(lengths: list[int], batch_size: int) -> float:
    """Padded tokens / real tokens when consecutive lengths form right-padded batches."""
    padded = real = 0
    for i in range(0, len(lengths) - batch_size + 1, batch_size):
        batch = lengths[i : i + batch_size]
        padded += max(batch) * len(batch) - sum(batch)
        real += sum(batch)
    return padded / real


def even_chunks(indices: list[int], lengths: list[int], count: int) -> list[list[int]]:
    """The reference's split of a length-sorted megabatch: each next index to the chunk with the least length so far,
    a full chunk closed; round robin when the megabatch does not divide evenly."""
    if len(indices) % count:
        return [indices[i::count] for i in range(count)]
    per_chunk = len(indices) // count
    chunks: list[list[int]] = [[] for _ in range(count)]
    totals = [0.0] * count
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def reference_micro_batches(lengths: list[int], batch: int, world: int, accumulate: int, rng) -> list[list[list[int]]]:
    """[micro-step][rank] -> the lengths of that rank's micro-batch, by the reference's megabatch grouping."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size = world * accumulate * batch
    steps = []
    for begin in range(0, len(order) - size + 1, size):
        megabatch = sorted(order[begin : begin + size], key=lambda i: lengths[i], reverse=True)
        chunks = even_chunks(megabatch, lengths, world * accumulate)
        for micro in range(accumulate):
            steps.append([[lengths[i] for i in chunks[micro * world + rank]] for rank in range(world)])
    return steps


def our_micro_batches(lengths: list[int], batch: int, world: int, window: int, rng) -> list[list[list[int]]]:
    """[micro-step][rank] -> lengths, each rank its contiguous share, batches cut from its own length-sorted windows
    (one loader worker a rank: more workers only interleave a rank's batches)."""
    share = len(lengths) // world
    per_rank = []
    for rank in range(world):
        own = lengths[rank * share : (rank + 1) * share]
        batches = []
        for begin in range(0, len(own), window * batch):
            pool = sorted(own[begin : begin + window * batch])
            group = [pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch)]
            rng.shuffle(group)
            batches += group
        per_rank.append(batches)
    return [list(step) for step in zip(*per_rank)]


def across_ranks(steps: list[list[list[int]]]) -> tuple[float, float]:
    """Padding (padded tokens / real) and rank imbalance of micro-steps of right-padded batches."""
    padded = real = longest = mean = 0
    for step in steps:
        tokens = [max(b) * len(b) for b in step]
        padded += sum(tokens) - sum(sum(b) for b in step)
        real += sum(sum(b) for b in step)
        longest += max(tokens)
        mean += sum(tokens) / len(tokens)
    return padded / real, longest / mean - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--window", type=int, default=64, help="batches per length-grouping window")
    parser.add_argument("--world", type=int, default=8, help="ranks (the recipe: 8)")
    parser.add_argument("--accumulate", type=int, default=32, help="micro-batches a step (the recipe: 32)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        epic_validation_questions(Path(tmp) / "mqa.jsonl", "--temporal-out", f"{tmp}/temporal.jsonl")
        questions, temporal = read_jsonl(f"{tmp}/mqa.jsonl"), read_jsonl(f"{tmp}/temporal.jsonl")
    tokenizer = build_tokenizer([q["narration"] for q in questions] + [o for q in questions for o in q["options"]])
    encoder = PromptEncoder(tokenizer)
    visual = preset("7b").visual_tokens(args.frames)
    rng = random.Random(0)
    lengths = []
    for _ in range(args.samples):
        task = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        record = rng.choice(temporal if task == "temporal" else questions)
        if task == "qa":  # a distilled description: a long free-text answer about the clip
            words = rng.randint(40, 160)
            record = record | {
                "qa_question": "Describe in detail what you are doing and with which objects.",
                "qa_answer": " ".join([record["narration"]] * (words // 3)),
            }
        encoded = encoder.encode(
            user_text(record, task, args.frames, PromptOptions()), answer_text(record, task), visual
        )
        lengths.append(len(encoded.input_ids) - 1 + visual)
    window = args.window * args.batch_size
    grouped = [n for i in range(0, len(lengths), window) for n in sorted(lengths[i : i + window])]
    print(
        f"{args.samples} samples, {args.frames} frames ({visual} visual tokens), batch {args.batch_size}; mean "
        f"length {sum(lengths) / len(lengths):.0f} tokens, text {min(lengths) - visual}-{max(lengths) - visual}"
    )
    print(f"padding waste, random batches:          {100 * waste(lengths, args.batch_size):6.2f}% of real tokens")
    print(f"padding waste, length-grouped batches:  {100 * waste(grouped, args.batch_size):6.2f}% of real tokens")
    figures = {}
    for batch in sorted({1, args.batch_size}):
        ours = across_ranks(our_micro_batches(lengths, batch, args.world, args.window, random.Random(1)))
        theirs = across_ranks(reference_micro_batches(lengths, batch, args.world, args.accumulate, random.Random(1)))
        for name, (padding, imbalance) in (("ours", ours), ("reference", theirs)):
            figures[f"{name}_batch{batch}_padding_pct"] = 100 * padding
            figures[f"{name}_batch{batch}_imbalance_pct"] = 100 * imbalance
        print(
            f"world {args.world} x accumulate {args.accumulate} x batch {batch}: padding {100 * ours[0]:.2f}% ours, "
            f"{100 * theirs[0]:.2f}% reference megabatch; rank imbalance {100 * ours[1]:.2f}% ours, "
            f"{100 * theirs[1]:.2f}% reference megabatch"
        )
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
