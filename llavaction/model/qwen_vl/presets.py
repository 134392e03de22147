"""The Qwen-VL presets: a tiny random-init one per backbone for CPU tests and demos, and the published shapes (FLOP
counts, the 7B/8B recipes)."""

from __future__ import annotations

from dataclasses import replace

from llavaction.model.qwen_vl.config import MODEL_TYPES, RULES, QwenVLConfig

TINY_VISION = {
    "qwen2_5_vl": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=128,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
    ),
    "qwen3_vl": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=128,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0],
    ),
}
TINY_TEXT = dict(
    bos_token_id=None,  # the tiny tokenizer has no Qwen bos/eos ids; generation is given its end-of-turn id
    eos_token_id=None,
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1100,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
TINY_ROPE = {
    "qwen2_5_vl": {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0},
    "qwen3_vl": {"rope_type": "default", "mrope_section": [4, 6, 6], "mrope_interleaved": True, "rope_theta": 10000.0},
}
QWEN2_5_VL_7B = dict(
    vision_config=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=3584,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
    ),
    text_config=dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    ),
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    tie_word_embeddings=False,
)
QWEN3_VL_8B = dict(
    vision_config=dict(
        depth=27,
        hidden_size=1152,
        intermediate_size=4304,
        num_heads=16,
        out_hidden_size=4096,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[8, 16, 24],
    ),
    text_config=dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "default",
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
            "rope_theta": 5000000.0,
        },
    ),
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    tie_word_embeddings=False,
)


def tiny_hf(backbone: str, token_ids: dict[str, int] | None = None) -> dict:
    """The tiny preset's transformers config (token ids of the vision tokens as the tokenizer gives them)."""
    ids = token_ids or {"image": 1000, "video": 1001, "vision_start": 1002, "vision_end": 1003}
    return dict(
        vision_config=dict(TINY_VISION[backbone]),
        text_config=TINY_TEXT
        | {"rope_parameters": dict(TINY_ROPE[backbone])}
        | ({"head_dim": 32} if backbone == "qwen3_vl" else {}),
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=False,
        model_type=MODEL_TYPES[backbone],
    )


QWEN_PRESETS = {
    ("qwen2_5_vl", "7b"): lambda: QwenVLConfig("qwen2_5_vl", dict(QWEN2_5_VL_7B, model_type="qwen2_5_vl")),
    ("qwen3_vl", "8b"): lambda: QwenVLConfig(
        "qwen3_vl", dict(QWEN3_VL_8B, model_type="qwen3_vl"), rule=RULES["qwen3_vl"]
    ),
    ("qwen2_5_vl", "tiny"): lambda: QwenVLConfig("qwen2_5_vl", tiny_hf("qwen2_5_vl"), frame_size=32),
    ("qwen3_vl", "tiny"): lambda: QwenVLConfig("qwen3_vl", tiny_hf("qwen3_vl"), rule=RULES["qwen3_vl"], frame_size=32),
}


def qwen_preset(backbone: str, name: str, **overrides) -> QwenVLConfig:
    if (backbone, name) not in QWEN_PRESETS:
        names = sorted(n for b, n in QWEN_PRESETS if b == backbone)
        raise ValueError(f"unknown {backbone} preset {name!r}; expected one of {names} (model.preset_name)")
    return replace(QWEN_PRESETS[(backbone, name)](), **overrides)
