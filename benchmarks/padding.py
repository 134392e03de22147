"""Padding waste of right-padded batches on a realistic training mixture, in tokens, from one run.

The mixture follows the 7B recipe at 64 frames (13,440 visual tokens a sample): MQA questions, direct narration,
temporal detection and text-heavy distilled descriptions, drawn 1 : 0.5 : 0.5 : 0.5 from the real EK-100 validation
annotations (questions built by data_prep.build_mqa). Text is tokenised with the local BPE tokenizer of the tiny preset,
so text lengths are approximate (Qwen's tokenizer is similar in scale for English). Prints padded tokens / real tokens
for random batches and for length-grouped batches (sorted within a window of batches).

    python benchmarks/padding.py [--batch-size 4] [--frames 64]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from synthetic import epic_validation_questions

from llavaction.model import preset
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.tokenizer import build_tokenizer
from llavaction.prompts.wording import PromptOptions, answer_text, user_text
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--window", type=int, default=64, help="batches per length-grouping window")
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


if __name__ == "__main__":
    main()
