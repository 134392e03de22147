"""Evaluation speed, from one run with the same model and questions: questions/s of `score` (one forward pass per
question, option letters) against `generate` (greedy decoding with a KV cache, then parsing), and how often the two
agree. Goal: score >= 5x faster.

    python benchmarks/eval.py [--checkpoint runs/demo/.../last.ckpt] [--questions 64]
Without --checkpoint it builds a small synthetic dataset and a random-init tiny model (agreement is then meaningless).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llavaction.data.pipeline import Collate, DecodeFrames, EncodePrompt, EvalStream
from llavaction.metrics import parse_choice
from llavaction.module import LlavaActionModule
from llavaction.prompts import PromptOptions
from synthetic import demo_questions, frame_shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="Lightning checkpoint of the tiny demo model")
    parser.add_argument("--videos", type=int, default=6, help="synthetic validation videos")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = demo_questions(tmp, "validation", "annotations", seed=1, train_videos=1, val_videos=args.videos,
                                 duration=60.0, fps=24)
        shards = frame_shards(tmp, records, num_frames=8, size=32)
        if args.checkpoint:
            module = LlavaActionModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
        else:
            torch.manual_seed(0)
            module = LlavaActionModule(preset_name="tiny", tokenizer=str(tmp / "demo" / "tokenizer"))
        module.configure_model()
        module.eval()
        encode = EncodePrompt(module.tokenizer, "mqa", 8, module.config.visual_tokens(8), 4096, "error", PromptOptions(),
                              with_answer=False)
        stream = EvalStream([str(shards)], args.batch_size, DecodeFrames(8), encode,
                            Collate(module.tokenizer.pad_token_id))
        batches = list(stream)
    count = sum(int((~b["is_padding"]).sum()) for b in batches)
    start = time.perf_counter()
    scored = [module.letter_scores(b).argmax(-1) for b in batches]
    score_s = time.perf_counter() - start
    start = time.perf_counter()
    generated = [module.generate(b, max_new_tokens=args.max_new_tokens) for b in batches]
    generate_s = time.perf_counter() - start
    agree = failed = 0
    for batch, choices, texts in zip(batches, scored, generated):
        for meta, choice, text, padding in zip(batch["meta"], choices.tolist(), texts, batch["is_padding"].tolist()):
            if not padding:
                parsed = parse_choice(text, meta["options"])
                failed += parsed is None
                agree += parsed == choice
    model = "trained " + args.checkpoint if args.checkpoint else "random-init tiny"
    print(f"{count} questions, {model} model, batch {args.batch_size}, CPU threads {torch.get_num_threads()}")
    print(f"score:    {count / score_s:8.1f} questions/s")
    print(f"generate: {count / generate_s:8.1f} questions/s (greedy, up to {args.max_new_tokens} new tokens)")
    print(f"speed-up: {generate_s / score_s:8.1f}x  (goal >= 5x)")
    print(f"agreement {100 * agree / count:.1f}%, generation parse failures {100 * failed / count:.1f}%")
    print(json.dumps({"score_questions_per_s": round(count / score_s, 1),
                      "generate_questions_per_s": round(count / generate_s, 1)}))


if __name__ == "__main__":
    main()
