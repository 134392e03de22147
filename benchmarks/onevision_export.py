"""What LLaVA-Video's weights compute in transformers' LlavaOnevisionForConditionalGeneration: the next-token logits
after a prompt from our model (newline_position grid: a newline after every row of every frame) against the same
weights in that class (one newline after the whole video), on random clips and prompts. This is why `export_layout
transformers` refuses LLaVA-Video's grid models; a one_token model is printed beside as the control (equal logits).

    python benchmarks/onevision_export.py [--checkpoint runs/demo/checkpoints/last.ckpt] [--prompts 16]
Without --checkpoint: the random-init tiny preset.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from llavaction.model.llava_video import LlavaVideoModel, preset
from llavaction.model.llava_video.onevision import onevision_config, onevision_state
from llavaction.utils.constants import IMAGE_TOKEN_INDEX


def compare(model: LlavaVideoModel, prompts: int, frames: int) -> tuple[float, float, float]:
    """Max and mean |logit difference| at the next token, and how often both pick the same token."""
    from transformers import LlavaOnevisionForConditionalGeneration

    # LlavaOnevision's reading of the same weights: one closing newline, no learned action tokens (left out)
    layout = replace(model.config, newline_position="one_token", vision_supervision=None, action_types=None)
    hf = LlavaOnevisionForConditionalGeneration(onevision_config(layout, 0, 1)).eval()
    hf.load_state_dict(onevision_state(model.state_dict()), strict=True)
    visual = layout.visual_tokens(frames)
    size, vocab = model.config.image_size, model.config.text["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    diffs, same = [], 0
    for _ in range(prompts):
        before = torch.randint(2, vocab, (1, 6), generator=generator)
        after = torch.randint(2, vocab, (1, 9), generator=generator)
        clip = torch.randint(0, 256, (1, frames, size, size, 3), dtype=torch.uint8, generator=generator)
        pixels = model.preprocess(clip)
        ours = torch.cat([before, torch.tensor([[IMAGE_TOKEN_INDEX]]), after], 1)
        theirs = torch.cat([before, torch.ones(1, visual, dtype=torch.long), after], 1)
        with torch.no_grad():
            expected = model.last_logits(ours, pixels).logits[0].float()
            got = hf(input_ids=theirs, pixel_values_videos=pixels).logits[0, -1].float()
        diffs.append((got - expected).abs())
        same += int(got.argmax() == expected.argmax())
    stacked = torch.stack(diffs)
    return stacked.max().item(), stacked.mean().item(), same / prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a Lightning checkpoint or original-layout folder of a LLaVA-Video model")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.checkpoint:
        from llavaction.evaluation.checkpoints import LoadedCheckpoint

        model = LoadedCheckpoint.open(args.checkpoint).module(None).model.float().eval()
        name = args.checkpoint
    else:
        model, name = LlavaVideoModel(preset("tiny")).eval(), "random-init tiny preset"
    if model.config.newline_position != "grid":
        raise SystemExit(f"error: {name} has newline_position {model.config.newline_position!r}, not grid")
    print(f"{name}, {args.frames} frames, {args.prompts} random prompts, next-token logits:")
    worst, mean, agree = compare(model, args.prompts, args.frames)
    print(f"  grid model in LlavaOnevision: max |diff| {worst:.4f}, mean |diff| {mean:.4f}, same top token {agree:.0%}")
    layout = replace(model.config, newline_position="one_token", vision_supervision=None, action_types=None)
    control = LlavaVideoModel(layout).eval()
    control.load_state_dict(model.state_dict(), strict=False)  # the same weights, less the action heads
    control_worst, _, control_agree = compare(control, args.prompts, args.frames)
    print(f"  one_token control:             max |diff| {control_worst:.2e}, same top token {control_agree:.0%}")
    figures = dict(max_abs_diff=worst, mean_abs_diff=mean, same_top_token=agree, control_same_top_token=control_agree)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
