"""LLaVA-Video exported to transformers' LlavaOnevisionForConditionalGeneration: the same logits where the layouts agree
(newline_position one_token), refused where they do not (LLaVA-Video's grid newlines), with the difference measured."""

import json
from dataclasses import replace

import pytest
import torch

from llavaction.model.llava_video import LlavaVideoModel, preset
from llavaction.model.llava_video.onevision import (
    ExportRefused,
    check_exportable,
    onevision_config,
    onevision_state,
    save_onevision,
)
from llavaction.prompts.tokenizer import build_tokenizer
from llavaction.utils.constants import IMAGE_TOKEN_INDEX

FRAMES = 3


def tiny(**overrides) -> LlavaVideoModel:
    torch.manual_seed(0)
    return LlavaVideoModel(preset("tiny", **overrides)).eval()


def prompt(model: LlavaVideoModel, video_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our ids (one placeholder), transformers' ids (the placeholder expanded to the visual tokens), pixel values."""
    torch.manual_seed(1)
    before, after = torch.randint(0, 900, (1, 5)), torch.randint(0, 900, (1, 7))
    ours = torch.cat([before, torch.tensor([[IMAGE_TOKEN_INDEX]]), after], 1)
    visual = model.config.visual_tokens(FRAMES)
    theirs = torch.cat([before, torch.full((1, visual), video_token_id), after], 1)
    frames = torch.randint(0, 256, (1, FRAMES, 32, 32, 3), dtype=torch.uint8)
    return ours, theirs, model.preprocess(frames)


def test_one_token_exports_with_the_same_logits(tmp_path):
    from transformers import AutoModelForImageTextToText

    model = tiny(newline_position="one_token")
    tokenizer = build_tokenizer(["a narration"], vocab_size=1000)
    save_onevision(model, tmp_path / "export", tokenizer=tokenizer)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "export").eval()
    assert type(loaded).__name__ == "LlavaOnevisionForConditionalGeneration"
    ours, theirs, pixels = prompt(model, loaded.config.video_token_index)
    with torch.no_grad():
        expected = model.logits(ours, pixels)
        got = loaded(input_ids=theirs, pixel_values_videos=pixels).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5
    processor = json.loads((tmp_path / "export" / "video_preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32} and processor["image_mean"] == [0.5, 0.5, 0.5]
    assert (tmp_path / "export" / "tokenizer.json").is_file()


def test_the_newline_heads_go_beside_the_export(tmp_path):
    from safetensors.torch import load_file

    model = tiny(newline_position="one_token", vision_supervision="newline", action_types=(3, 4, 5))
    save_onevision(model, tmp_path / "export", tokenizer=build_tokenizer(["a narration"], vocab_size=1000))
    heads = load_file(tmp_path / "export" / "action_heads.safetensors")
    assert torch.equal(heads["verb_head.weight"], model.verb_head.weight)
    assert json.loads((tmp_path / "export" / "action_heads.json").read_text())["vision_supervision"] == "newline"


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({}, "newline_position 'grid'"),
        ({"newline_position": "frame"}, "newline_position 'frame'"),
        ({"newline_position": "one_token", "spatial_pool_mode": "average"}, "spatial pooling 'average'"),
        (
            {"newline_position": "one_token", "vision_supervision": "one_token", "action_types": (3, 4, 5)},
            "vision_supervision 'one_token'",
        ),
    ],
)
def test_other_layouts_are_refused_naming_why(overrides, named, tmp_path):
    model = tiny(**overrides)
    with pytest.raises(ExportRefused, match=named):
        save_onevision(model, tmp_path / "export", tokenizer=build_tokenizer(["x"], vocab_size=1000))
    assert not (tmp_path / "export").exists()


def test_a_tokenizer_without_room_for_the_video_token_is_refused(tmp_path):
    tokenizer = build_tokenizer(["x"], vocab_size=1000)
    rows = len(tokenizer) + 1  # room for <image>, not for <video>
    model = tiny(newline_position="one_token", text=preset("tiny").text | {"vocab_size": rows})
    with pytest.raises(ExportRefused, match=f"outside the {rows} embedding rows"):
        save_onevision(model, tmp_path / "export", tokenizer=tokenizer)
    assert not (tmp_path / "export").exists()


def test_llava_video_weights_in_the_onevision_class_compute_other_logits():
    """What the refusal prevents: LLaVA-Video's grid model, its weights loaded into LlavaOnevision, answers from
    another sequence (196 + 1 visual tokens where it was trained on 210 a frame); README quotes this difference."""
    from transformers import LlavaOnevisionForConditionalGeneration

    model = tiny()
    with pytest.raises(ExportRefused):
        check_exportable(model.config)
    config = onevision_config(replace(model.config, newline_position="one_token"), 1000, 1001)
    hf = LlavaOnevisionForConditionalGeneration(config).eval()
    hf.load_state_dict(onevision_state(model.state_dict()), strict=True)
    ours, _, pixels = prompt(model, 1001)
    _, theirs, _ = prompt(tiny(newline_position="one_token"), 1001)
    with torch.no_grad():
        expected = model.last_logits(ours, pixels).logits
        got = hf(input_ids=theirs, pixel_values_videos=pixels).logits[:, -1]
    assert (got - expected).abs().max() > 1e-2
