"""The Qwen2.5-VL and Qwen3-VL backbones against transformers' own classes: the same logits and greedy answers as
`*ForConditionalGeneration` on the same inputs, the processors' frame rule and patch order, action tokens and heads,
packing, and the export that AutoModelForImageTextToText loads."""

import json

import pytest
import torch

from llavaction.model.qwen_vl.config import QwenVLConfig, rule_from_processor
from llavaction.model.qwen_vl.frames import FrameRule, qwen2_resize, qwen3_resize
from llavaction.model.qwen_vl.model import QwenVLModel
from llavaction.model.qwen_vl.presets import qwen_preset, tiny_hf
from llavaction.prompts.formats import ACTION_TOKEN_INDEX, ClipTiming
from llavaction.utils.constants import IGNORE_INDEX

BACKBONES = ("qwen2_5_vl", "qwen3_vl")
IDS = {"image": 90, "video": 91, "vision_start": 92, "vision_end": 93}


def tiny(backbone: str, **overrides) -> QwenVLModel:
    torch.manual_seed(0)
    config = qwen_preset(backbone, "tiny", hf=tiny_hf(backbone, IDS), **overrides)
    return QwenVLModel(config).eval()


def inputs(model: QwenVLModel, frames: int = 4, size: int = 64, rows: int = 2, pad_first: int = 3, action: int = 0):
    """Right-padded rows `text, vision block(s), action tokens, text` over random clips, as the data pipeline makes
    them (Qwen3-VL: a block a temporal group inside the outer pair, timestamps as one token)."""
    torch.manual_seed(1)
    rule, hf = model.config.rule, model.config.hf
    start, end = hf["vision_start_token_id"], hf["vision_end_token_id"]
    groups, per_group = rule.grid(frames, size, size)[0], rule.tokens_per_group(frames, size, size)
    pads = [hf["video_token_id"]] * per_group
    blocks = [start, *pads * groups, end]
    if model.config.backbone == "qwen3_vl":
        blocks = [start, *[t for _ in range(groups) for t in (7, start, *pads, end)], end]
    length = 5 + len(blocks) + action + 6
    ids = torch.zeros(rows, length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row in range(rows):
        real = length - (pad_first if row == 0 else 0)
        text = torch.randint(100, 300, (real,)).tolist()
        text[5 : 5 + len(blocks) + action] = blocks + [ACTION_TOKEN_INDEX] * action
        ids[row, :real], mask[row, :real] = torch.tensor(text), 1
    clips = torch.randint(0, 256, (rows, frames, size, size, 3), dtype=torch.uint8)
    # short clips: their time positions stay below the spatial extent, where transformers 5.2x places text as the
    # released rule does (model/qwen_vl/positions.py)
    timings = [ClipTiming.even(frames, 0.5), ClipTiming.even(frames, 1.0)][:rows]
    return ids, mask, model.preprocess(clips, timings)


def transformers_inputs(model, ids, mask, pixels) -> dict:
    extra = {"second_per_grid_ts": pixels.seconds_per_group} if model.config.backbone == "qwen2_5_vl" else {}
    return dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=pixels.values,
        video_grid_thw=pixels.grid,
        mm_token_type_ids=(ids == model.hf.config.video_token_id).int() * 2,
        **extra,
    )


@pytest.mark.parametrize("backbone", BACKBONES)
def test_logits_equal_transformers_forward(backbone):
    model = tiny(backbone)
    ids, mask, pixels = inputs(model)
    with torch.no_grad():
        ours = model.logits(ids, pixels, mask)
        theirs = model.hf(**transformers_inputs(model, ids, mask, pixels)).logits
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() <= 1e-5
    assert ours.shape == theirs.shape and not torch.equal(ours[0, 0], ours[1, 0])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_greedy_answers_equal_transformers_generate(backbone):
    model = tiny(backbone)
    ids, mask, pixels = inputs(model)
    left = torch.zeros_like(ids)
    left_mask = torch.zeros_like(mask)
    for row in range(ids.shape[0]):  # transformers' generate takes left-padded rows
        real = ids[row][mask[row].bool()]
        left[row, ids.shape[1] - len(real) :], left_mask[row, ids.shape[1] - len(real) :] = real, 1
    ours = model.generate(ids, pixels, mask, max_new_tokens=6, eos_token_id=-1, pad_token_id=0)
    with torch.no_grad():
        theirs = model.hf.generate(
            **transformers_inputs(model, left, left_mask, pixels), max_new_tokens=6, do_sample=False, pad_token_id=0
        )
    assert ours.tokens == theirs[:, ids.shape[1] :].tolist()


@pytest.mark.parametrize("height, width", [(384, 384), (64, 64), (32, 32), (240, 320), (1080, 1920), (14, 600)])
def test_frame_rule_is_the_processors(height, width):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as qwen2_reference
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as qwen3_reference

    for low, high in ((3136, 12845056), (128 * 28 * 28, 768 * 28 * 28), (3136, 200000)):
        assert qwen2_resize(height, width, 28, low, high) == qwen2_reference(height, width, 28, low, high)
    for frames in (2, 7, 16, 64):
        for low, high in ((4096, 25165824), (4096, 2000000)):
            reference = qwen3_reference(frames, height, width, 2, 32, low, high)
            assert qwen3_resize(frames, height, width, 32, 2, low, high) == reference
    rule = FrameRule()  # Qwen2.5-VL's: 384 px frames become a 28 x 28 patch grid, 196 tokens a group of two frames
    assert rule.grid(16, 384, 384) == (8, 28, 28) and rule.tokens_per_group(16, 384, 384) == 196
    assert rule.grid(7, 384, 384)[0] == 4  # an odd count repeats the last frame


def test_patches_in_the_processors_order_and_values():
    """The processor's own patchify (transformers' Qwen3VLVideoProcessor) on the same normalised frames gives our
    patches; the rule's values are the checkpoint processor config's."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    model = tiny("qwen3_vl")
    clips = torch.randint(0, 256, (2, 5, 64, 64, 3), dtype=torch.uint8)
    pixels = model.preprocess(clips)
    rule = model.config.rule
    x = clips.permute(0, 1, 4, 2, 3).float() / 255
    x = (x - torch.tensor(rule.image_mean).view(1, 1, 3, 1, 1)) / torch.tensor(rule.image_std).view(1, 1, 3, 1, 1)
    patches, *grid = Qwen3VLVideoProcessor.patchify(None, x, rule.patch_size, rule.merge_size, rule.temporal_patch_size)
    assert torch.allclose(pixels.values, patches.flatten(0, 1), atol=1e-6) and pixels.grid[0].tolist() == grid


def test_the_rule_is_read_from_the_processor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 1000, "max_pixels": 99999}))
    assert rule_from_processor(tmp_path, "qwen2_5_vl") == FrameRule(min_pixels=1000, max_pixels=99999)
    video = {"size": {"shortest_edge": 4096, "longest_edge": 25165824}, "patch_size": 16, "image_mean": [0.5] * 3}
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(video))
    rule = rule_from_processor(tmp_path, "qwen3_vl")
    assert (rule.min_pixels, rule.max_pixels, rule.patch_size, rule.per_clip_budget) == (4096, 25165824, 16, True)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("mode, count", [("one_token", 1), ("three_tokens", 3)])
def test_action_tokens_follow_the_video_and_feed_the_heads(backbone, mode, count):
    model = tiny(backbone, vision_supervision=mode, action_types=(5, 6, 7))
    ids, mask, pixels = inputs(model, action=count)
    labels = torch.where(mask.bool(), ids, IGNORE_INDEX).masked_fill(ids < 0, IGNORE_INDEX)
    out = model(ids, pixels, mask, labels, head_layers="all")
    assert len(out.action_logits) == 4 and [t.shape for t in out.action_logits[-1]] == [(2, 5), (2, 6), (2, 7)]
    verb, noun, action = model(ids, pixels, mask, labels, head_layers="last").action_logits[0]
    (verb.sum() + noun.sum() + action.sum()).backward()
    assert model.action_supervision.grad.abs().sum(-1).gt(0).all()  # every action token feeds the heads
    model.zero_grad()
    ids[0][ids[0] == ACTION_TOKEN_INDEX] = 100  # a row without its action token: refused, not read elsewhere
    with pytest.raises(ValueError, match="action tokens; each must hold"):
        model(ids, pixels, mask, labels, head_layers="last")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_packed_rows_give_the_padded_loss(backbone):
    model = tiny(backbone)
    ids, mask, pixels = inputs(model)
    labels = torch.where(mask.bool(), ids, IGNORE_INDEX)
    padded = model(ids, pixels, mask, labels).loss
    packed = model(ids, pixels, mask, labels, pack=True).loss
    assert torch.allclose(padded, packed, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_export_loads_in_transformers_with_the_same_logits(backbone, tmp_path, demo_dir):
    from transformers import AutoModelForImageTextToText

    from llavaction.model.architecture import meet_tokenizer
    from llavaction.model.family import REGISTRY
    from llavaction.prompts.tokenizer import load_tokenizer

    family, tokenizer = REGISTRY.get(backbone), load_tokenizer(demo_dir / "tokenizer")
    config = qwen_preset(backbone, "tiny", vision_supervision="one_token", action_types=(5, 6, 7))
    config = meet_tokenizer(family, config, tokenizer, from_preset=True)
    torch.manual_seed(0)
    model = QwenVLModel(config).eval()
    family.export(model, model.state_dict(), tmp_path / "export", tokenizer, "original", config.chat_format())
    ids, mask, pixels = inputs(model)
    loaded = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "export")).eval()
    with torch.no_grad():
        ours = model.logits(ids, pixels, mask)
        theirs = loaded(**transformers_inputs(model, ids, mask, pixels)).logits
    assert (ours[mask.bool()] - theirs[mask.bool()]).abs().max() <= 1e-5
    again = QwenVLModel.from_pretrained(tmp_path / "export")
    assert again.config.action_types == (5, 6, 7) and again.config.rule == model.config.rule
    for name in ("action_supervision", "verb_head.weight", "noun_head.weight", "action_head.weight"):
        assert torch.equal(again.state_dict()[name], model.state_dict()[name]), name
    config = QwenVLConfig.from_checkpoint(tmp_path / "export")
    assert config.backbone == backbone and config.frame_size == model.config.frame_size


def test_bad_combinations_are_refused():  # noqa: D103
    with pytest.raises(ValueError, match="'newline' reads LLaVA-Video's newline token"):
        qwen_preset("qwen2_5_vl", "tiny", vision_supervision="newline", action_types=(1, 2, 3))
    with pytest.raises(ValueError, match="unknown qwen3_vl preset '7b'"):
        qwen_preset("qwen3_vl", "7b")
    model = tiny("qwen2_5_vl")
    ids, mask, pixels = inputs(model)
    other_clips = model.preprocess(torch.zeros(2, 8, 64, 64, 3, dtype=torch.uint8))  # twice the frames
    with pytest.raises(ValueError, match="video tokens but their clips give"):
        model.logits(ids, other_clips, mask)


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("frames, size", [(8, 384), (7, 250)])
def test_preprocess_equals_transformers_video_processor(backbone, frames, size):
    """Where torchvision exists (not with the CPU wheel here; on the GPU machine), our frame rule against the
    backbone's own video processor built from the config we export: the same grid, and pixel values within the
    rounding of one uint8 level after resizing."""
    pytest.importorskip("torchvision")
    from transformers import Qwen2VLVideoProcessor, Qwen3VLVideoProcessor

    from llavaction.model.qwen_vl.config import processor_config

    config = qwen_preset(backbone, "7b" if backbone == "qwen2_5_vl" else "8b")
    values = {k: v for k, v in processor_config(config).items() if k not in ("video_processor_type", "processor_class")}
    kind = Qwen3VLVideoProcessor if backbone == "qwen3_vl" else Qwen2VLVideoProcessor
    processor = kind(**values, do_sample_frames=False)
    torch.manual_seed(0)
    clip = torch.randint(0, 256, (1, frames, size, size, 3), dtype=torch.uint8)
    theirs = processor(videos=[clip[0].numpy()], return_tensors="pt")
    model = QwenVLModel.__new__(QwenVLModel)
    model.config = config
    ours = QwenVLModel.preprocess(model, clip)
    assert ours.grid.tolist() == theirs["video_grid_thw"].tolist()
    assert ours.values.shape == theirs["pixel_values_videos"].shape
    difference = (ours.values - theirs["pixel_values_videos"].float()).abs()
    assert difference.max() <= 0.03 and difference.mean() <= 2e-3


def test_a_folder_without_processor_config_reads_as_transformers_defaults(tmp_path, caplog):
    """transformers' video processors' own defaults (128 to 768 merged patches a frame, Qwen3-VL's a clip), said in
    one warning naming the folder."""
    with caplog.at_level("WARNING"):
        rule = rule_from_processor(tmp_path, "qwen3_vl")
    assert (rule.min_pixels, rule.max_pixels, rule.per_clip_budget) == (128 * 32 * 32, 768 * 32 * 32, True)
    assert f"{tmp_path} ships no processor config" in caplog.text
    # 16 frames of 384 px: 288 visual tokens, as transformers' Qwen3VLVideoProcessor gives them
    assert rule.grid(16, 384, 384)[0] * rule.tokens_per_group(16, 384, 384) == 288
    assert rule_from_processor(tmp_path, "qwen2_5_vl").max_pixels == 768 * 28 * 28


def test_the_system_turn_is_the_checkpoints_template(demo_dir):
    """A checkpoint's own chat template decides its system turn (a preset keeps the family's)."""
    from llavaction.model.architecture import meet_tokenizer, video_format
    from llavaction.model.family import REGISTRY
    from llavaction.prompts.templates import TemplateError, chatml_template
    from llavaction.prompts.tokenizer import load_tokenizer

    family, tokenizer = REGISTRY.get("qwen2_5_vl"), load_tokenizer(demo_dir / "tokenizer")
    config = meet_tokenizer(family, qwen_preset("qwen2_5_vl", "tiny"), tokenizer, from_preset=True)
    assert video_format(family, config, tokenizer, True, "tiny").system == "You are a helpful assistant."
    tokenizer.chat_template = chatml_template("Look closely.", "<|vision_start|><|video_pad|><|vision_end|>", "")
    assert video_format(family, config, tokenizer, False, "ckpt").system == "Look closely."
    tokenizer.chat_template = chatml_template(None, "", "")
    assert video_format(family, config, tokenizer, False, "ckpt").system is None
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    with pytest.raises(TemplateError, match="ckpt: its chat template is not ChatML"):
        video_format(family, config, tokenizer, False, "ckpt")
