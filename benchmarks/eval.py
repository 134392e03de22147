"""Evaluation speed and agreement, from one run with the same model and questions: questions/s of `score` (one
forward pass per question, option letters: the fast proxy) against `generate` (greedy decoding with a KV cache, then
the paper's rule: the answer text after the last 'X. ' equals the right option's), and how often the proxy's choice
agrees with the paper's rule (the proxy is right where the rule is, and wrong where it is).

With --vllm-python (a Python with vLLM, e.g. .venv-vllm/bin/python), the same questions are also answered by the
vllm engine serving the model's export: its questions/s against the hf engine's generation, the ratio, and how many
answers are the same.

    python benchmarks/eval.py [--checkpoint runs/demo/.../last.ckpt] [--backbone qwen2_5_vl] [--vllm-python P]
Without --checkpoint it builds a small synthetic dataset and a random-init tiny model (agreement is then meaningless).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from synthetic import demo_questions, frame_shards

from llavaction.benchmark.answers import paper_correct
from llavaction.data.stages import Collate, DecodeFrames, EncodePrompt
from llavaction.data.streams import EvalStream
from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.wording import PromptOptions
from llavaction.training.module import LlavaActionModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="Lightning checkpoint of the tiny demo model")
    parser.add_argument("--videos", type=int, default=6, help="synthetic validation videos")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--backbone", default="llava_video", help="the tiny model's family (without --checkpoint)")
    parser.add_argument("--vllm-python", help="also time the vllm engine, run by this Python")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = demo_questions(
            tmp, "validation", "annotations", seed=1, train_videos=1, val_videos=args.videos, duration=60.0, fps=24
        )
        shards = frame_shards(tmp, records, num_frames=8, size=32)
        if args.checkpoint:
            module = LlavaActionModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
        else:
            torch.manual_seed(0)
            module = LlavaActionModule(
                backbone=args.backbone, preset_name="tiny", tokenizer=str(tmp / "demo" / "tokenizer")
            )
        module.configure_model()
        module.eval()
        encode = EncodePrompt(
            PromptEncoder(module.tokenizer, 4096, chat=module.video_format),
            "mqa",
            8,
            PromptOptions(),
            with_answer=False,
        )
        stream = EvalStream(
            [str(shards)], args.batch_size, DecodeFrames(8), encode, Collate(module.tokenizer.pad_token_id)
        )
        batches = list(stream)
        served = time_vllm(module, shards, tmp, args) if args.vllm_python else None
    count = sum(int((~b.is_padding).sum()) for b in batches)
    answerer = module.answerer
    answerer.max_new_tokens = args.max_new_tokens
    start = time.perf_counter()
    scored = [answerer(b, ("letter",)).scores["letter"].argmax(-1) for b in batches]
    score_s = time.perf_counter() - start
    start = time.perf_counter()
    generated = [answerer(b, ("generate",)).generations for b in batches]
    generate_s = time.perf_counter() - start
    agree = paper_right = proxy_right = 0
    for batch, choices, texts in zip(batches, scored, generated):
        for meta, choice, text, padding in zip(batch.meta, choices.tolist(), texts, batch.is_padding.tolist()):
            if not padding:
                truth = meta["options"][meta["answer_index"]]
                by_rule, by_proxy = paper_correct(text, truth), choice == meta["answer_index"]
                agree += by_rule == by_proxy
                paper_right += by_rule
                proxy_right += by_proxy
    model = "trained " + args.checkpoint if args.checkpoint else "random-init tiny"
    print(f"{count} questions, {model} model, batch {args.batch_size}, CPU threads {torch.get_num_threads()}")
    print(f"score:    {count / score_s:8.1f} questions/s")
    print(f"generate: {count / generate_s:8.1f} questions/s (greedy, up to {args.max_new_tokens} new tokens)")
    print(f"speed-up: {generate_s / score_s:8.1f}x")
    print(
        f"accuracy: paper's rule {100 * paper_right / count:.1f}%, letter proxy {100 * proxy_right / count:.1f}%; "
        f"the proxy agrees with the rule on {100 * agree / count:.1f}% of the questions"
    )
    figures = {
        "score_questions_per_s": round(count / score_s, 1),
        "generate_questions_per_s": round(count / generate_s, 1),
        "proxy_agreement_percent": round(100 * agree / count, 1),
    }
    if served is not None:
        texts, vllm_s = served
        real = [t for b, ts in zip(batches, generated) for t, pad in zip(ts, b.is_padding.tolist()) if not pad]
        same = sum(a == b for a, b in zip(texts, real))
        print(f"vllm:     {count / vllm_s:8.1f} questions/s, {generate_s / vllm_s:.2f}x the hf engine's generation")
        print(f"          the same answer as the hf engine for {same} of {count} questions")
        figures |= {"vllm_questions_per_s": round(count / vllm_s, 1), "vllm_over_hf": round(generate_s / vllm_s, 2)}
        figures |= {"vllm_same_answers": same}
    print(json.dumps(figures))


def time_vllm(module, shards: Path, tmp: Path, args) -> tuple[list[str], float]:
    """The same questions answered by the vllm engine serving the model's export (started before timing; a first
    batch answered to warm it): its answers to the real questions, in order, and the seconds they took."""
    import contextlib

    from llavaction.evaluation.checkpoint_format import export_model
    from llavaction.evaluation.checkpoints import LoadedCheckpoint
    from llavaction.evaluation.engines import EngineOptions
    from llavaction.evaluation.serving import ServedAnswers

    export = tmp / "export"
    export_model(module.family, module.model, module.tokenizer, module.video_format, export, True, "transformers")
    loaded = LoadedCheckpoint.open(export)
    options = EngineOptions(engine="vllm", vllm_python=args.vllm_python)
    with contextlib.ExitStack() as stack:
        served = ServedAnswers(loaded, loaded.module(), options, args.max_new_tokens, stack)
        encoder = PromptEncoder(served.tokenizer, 4096, chat=served.format)
        encode = EncodePrompt(encoder, "mqa", 8, PromptOptions(), with_answer=False)
        stream = EvalStream(
            [str(shards)], args.batch_size, DecodeFrames(8), encode, Collate(encoder.tokenizer.pad_token_id)
        )
        batches = list(stream)
        served(batches[0])
        start = time.perf_counter()
        texts = [text for batch in batches for text, _ in served(batch)]
        return texts, time.perf_counter() - start


if __name__ == "__main__":
    main()
