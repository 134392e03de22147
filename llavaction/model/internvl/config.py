"""Configuration of InternVL (InternVL3 / InternVL3.5 in transformers' layout): transformers' own config of the model,
the frame rule its checkpoints were trained with (448 px frames, bicubic, ImageNet mean and std: set here rather than
read from the hub's video processor files, some of which carry the class defaults instead), LLaVAction's action
supervision, and the presets (a tiny random-init one for CPU tests and demos, the published 8B shapes)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from llavaction.model.hf_layout import action_supervision, read_action_settings
from llavaction.model.internvl.prompt import CONTEXT_IMAGE, END_IMAGE, START_IMAGE, InternVLVideo

ACTION_TOKEN_MODES = ("one_token", "three_tokens")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "flex_attention", "eager")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MODEL_TYPE = "internvl"


@dataclass
class InternVLConfig:
    """An InternVL model.

    Args:
        hf: transformers' InternVLConfig fields as a dict.
        start_image_id: `<img>`'s id (the tokenizer's; transformers' config does not hold it).
        end_image_id: `</img>`'s id.
        image_mean: per-channel mean of the normalisation.
        image_std: per-channel standard deviation of the normalisation.
        attn_implementation: 'sdpa', 'flash_attention_2', 'flex_attention' or 'eager'.
        vision_supervision: LLaVAction's action tokens ('one_token', 'three_tokens'), or None.
        action_types: verb, noun and action head sizes, with vision_supervision.
    """

    hf: dict
    start_image_id: int = -1
    end_image_id: int = -1
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    attn_implementation: str = "sdpa"
    vision_supervision: str | None = None
    action_types: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} not in {ATTENTION_IMPLEMENTATIONS}")
        if self.vision_supervision == "newline":
            raise ValueError(
                "model.action.mode 'newline' reads LLaVA-Video's newline token, which InternVL does not have: "
                "use 'one_token' or 'three_tokens'"
            )
        if self.vision_supervision is not None and self.vision_supervision not in ACTION_TOKEN_MODES:
            raise ValueError(f"vision_supervision {self.vision_supervision!r} not in {ACTION_TOKEN_MODES}")
        if (self.vision_supervision is None) != (self.action_types is None):
            raise ValueError("vision_supervision and action_types go together")
        side = self.image_size // square(self.vision["patch_size"])
        if (side * self.hf.get("downsample_ratio", 0.5)) % 1:
            raise ValueError(f"a {side} x {side} patch grid cannot be pixel-shuffled by {self.hf['downsample_ratio']}")

    @property
    def text(self) -> dict:
        return self.hf["text_config"]

    @property
    def vision(self) -> dict:
        return self.hf["vision_config"]

    @property
    def image_size(self) -> int:
        """The side frames are resized to (and decoded at when the model answers about video files)."""
        return square(self.vision["image_size"])

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens of a frame: its patch grid pixel-shuffled by the downsample ratio."""
        side = self.image_size // square(self.vision["patch_size"])
        return int(side * self.hf.get("downsample_ratio", 0.5)) ** 2

    @property
    def action_tokens(self) -> int:
        return {"one_token": 1, "three_tokens": 3}.get(self.vision_supervision, 0)

    def chat_format(self) -> InternVLVideo:
        return InternVLVideo(
            action_tokens=self.action_tokens,
            tokens_per_frame=self.tokens_per_frame,
            context_id=self.hf["image_token_id"],
            start_id=self.start_image_id,
            end_id=self.end_image_id,
        )

    def extra_tokens(self, num_frames: int) -> int:
        """Sequence positions the model adds beyond its input ids: none (the prompt holds every visual token)."""
        return 0

    def to_hf(self):
        from transformers import InternVLConfig as HFInternVLConfig

        return HFInternVLConfig(**self.hf)

    @classmethod
    def from_dict(cls, fields: dict) -> InternVLConfig:
        tuples = ("image_mean", "image_std", "action_types")
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in fields.items()})

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, directory: Path, source: str, config: dict) -> InternVLConfig:
        """The config of a checkpoint folder in transformers' layout: config.json, the `<img>` / `</img>` ids of its
        tokenizer (added_tokens of tokenizer.json or tokenizer_config.json, when present) and, for a LLaVAction
        export, its action supervision (action_heads.json)."""
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(f"{source}: model_type {config.get('model_type')!r} is not InternVL")
        hf = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version", "_name_or_path")}
        ids = added_token_ids(directory)
        return cls(
            hf=hf,
            start_image_id=ids.get(START_IMAGE, -1),
            end_image_id=ids.get(END_IMAGE, -1),
            **action_supervision(read_action_settings(directory)),
        )


def square(value: int | list[int]) -> int:
    """A side given as one number or, as transformers writes InternVL's config.json, as [height, width]."""
    if isinstance(value, int):
        return value
    height, width = value
    if height != width:
        raise ValueError(f"InternVL frames of {height} x {width}: only square frames and patches are supported")
    return height


def added_token_ids(directory: Path) -> dict[str, int]:
    """{token: id} of the special tokens a checkpoint's tokenizer files list."""
    found: dict[str, int] = {}
    path = directory / "tokenizer.json"
    if path.exists():
        found |= {t["content"]: t["id"] for t in json.loads(path.read_text()).get("added_tokens", [])}
    path = directory / "tokenizer_config.json"
    if path.exists():
        decoder = json.loads(path.read_text()).get("added_tokens_decoder", {})
        found |= {t["content"]: int(i) for i, t in decoder.items()}
    return found


def with_token_ids(config: InternVLConfig, tokenizer) -> InternVLConfig:
    """The config with the tokenizer's ids of `<img>`, `</img>` and `<IMG_CONTEXT>`."""
    from dataclasses import replace

    ids = tokenizer.convert_tokens_to_ids([START_IMAGE, END_IMAGE, CONTEXT_IMAGE])
    return replace(config, start_image_id=ids[0], end_image_id=ids[1], hf=config.hf | {"image_token_id": ids[2]})


INTERNVIT_300M = dict(
    model_type="internvl_vision",
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    image_size=448,
    patch_size=14,
    hidden_act="gelu",
    norm_type="layer_norm",
    layer_norm_eps=1e-6,
    attention_bias=True,
    use_qk_norm=False,
    layer_scale_init_value=0.1,
    use_absolute_position_embeddings=True,
    use_mean_pooling=True,
)
TOP_LEVEL = dict(
    downsample_ratio=0.5,
    vision_feature_layer=-1,
    vision_feature_select_strategy="default",
    projector_hidden_act="gelu",
    image_seq_length=256,
    tie_word_embeddings=False,  # InternVLConfig's default ties, and only this flag decides; the 8B LLMs are untied
    model_type=MODEL_TYPE,
)
INTERNVL3_8B = TOP_LEVEL | dict(
    vision_config=INTERNVIT_300M,
    text_config=dict(
        model_type="qwen2",
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=151674,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000.0},
        tie_word_embeddings=False,
    ),
    image_token_id=151667,
)
INTERNVL3_5_8B = TOP_LEVEL | dict(
    vision_config=INTERNVIT_300M,
    text_config=dict(
        model_type="qwen3",
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,
    ),
    image_token_id=151671,
)
TINY = TOP_LEVEL | dict(
    vision_config=INTERNVIT_300M
    | dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=32, patch_size=4
    ),
    text_config=dict(
        model_type="qwen2",
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1100,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=None,  # the tiny tokenizer has no Qwen bos/eos ids; generation is given its end-of-turn id
        eos_token_id=None,
    ),
    image_token_id=1000,  # replaced by the tokenizer's <IMG_CONTEXT> id when a preset meets its tokenizer
    image_seq_length=16,
)
PRESETS = {
    "tiny": lambda: InternVLConfig(hf=json.loads(json.dumps(TINY))),
    "3-8b": lambda: InternVLConfig(hf=json.loads(json.dumps(INTERNVL3_8B)), start_image_id=151665, end_image_id=151666),
    "3.5-8b": lambda: InternVLConfig(
        hf=json.loads(json.dumps(INTERNVL3_5_8B)), start_image_id=151669, end_image_id=151670
    ),
}
