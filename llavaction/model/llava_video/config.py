"""Configuration of the LLaVA-Video architecture, its presets, and the original checkpoint's config.json fields."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePath

from llavaction.prompts.formats import SplicedVideo

POOL_MODES = ("bilinear", "average", "max")
NEWLINE_POSITIONS = ("grid", "frame", "one_token", "none")
# the original config.json names "none" as the reference code does
ORIGINAL_NEWLINE_NAMES = {"none": "no_token"}
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "flex_attention", "eager")

SIGLIP_SO400M_384 = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    layer_norm_eps=1e-6,
    hidden_act="gelu_pytorch_tanh",
)
# Published vision towers whose shapes are known when a checkpoint's config.json carries no vision_config.
KNOWN_VISION_TOWERS = {"google/siglip-so400m-patch14-384": SIGLIP_SO400M_384}

QWEN2_7B = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    tie_word_embeddings=False,
    hidden_act="silu",
)
QWEN2_0_5B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151647,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
    hidden_act="silu",
)
MM_FIELDS = (
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_spatial_pool_mode",
    "mm_spatial_pool_stride",
    "mm_newline_position",
    "mm_hidden_size",
    "mm_vision_tower",
    "vision_config",
    "architectures",
    "model_type",
    "image_mean",
    "image_std",
    "vision_supervision",
    "action_types",
    "vision_token_training",
)
ACTION_TOKEN_MODES = ("one_token", "three_tokens", "newline")


@dataclass
class LlavaVideoConfig:
    """The LLaVA-Video architecture: SigLIP tower (minus its last layers), mlp2x_gelu projector, 2D pooling, newline
    tokens, Qwen2 LLM."""

    vision: dict  # SiglipVisionConfig fields of the full published tower
    text: dict  # Qwen2Config fields
    vision_tower_name: str = "google/siglip-so400m-patch14-384"
    vision_select_layer: int = -2  # -2: features of the penultimate layer, i.e. the last layer removed
    projector_type: str = "mlp2x_gelu"
    spatial_pool_mode: str = "bilinear"
    spatial_pool_stride: int = 2
    newline_position: str = "grid"
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    attn_implementation: str = "sdpa"
    vision_supervision: str | None = None  # LLaVAction action tokens: one_token, three_tokens, newline; None: absent
    action_types: tuple[int, int, int] | None = None  # verb, noun and action head sizes, e.g. (97, 300, 3806)
    extra: dict = field(default_factory=dict)  # other config.json fields, written back unchanged

    def __post_init__(self):
        if self.spatial_pool_mode not in POOL_MODES:
            raise ValueError(f"spatial_pool_mode {self.spatial_pool_mode!r} not in {POOL_MODES}")
        if self.newline_position not in NEWLINE_POSITIONS:
            raise ValueError(f"newline_position {self.newline_position!r} not in {NEWLINE_POSITIONS}")
        if self.projector_type != "mlp2x_gelu":
            raise ValueError(f"projector_type {self.projector_type!r}: only 'mlp2x_gelu' is implemented")
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} not in {ATTENTION_IMPLEMENTATIONS}")
        if self.vision_supervision is not None and self.vision_supervision not in ACTION_TOKEN_MODES:
            raise ValueError(f"vision_supervision {self.vision_supervision!r} not in {ACTION_TOKEN_MODES}")
        if (self.vision_supervision is None) != (self.action_types is None):
            raise ValueError("vision_supervision and action_types go together")
        if self.vision_supervision == "newline" and self.newline_position == "none":
            raise ValueError(
                "vision_supervision 'newline' reads the last newline token: newline_position must not be none"
            )
        if not -self.vision["num_hidden_layers"] <= self.vision_select_layer <= -1:
            raise ValueError(f"vision_select_layer {self.vision_select_layer} outside the tower")

    @property
    def vision_layers_kept(self) -> int:
        """Layers of the published tower that the model holds (hidden_states[select] is their output)."""
        return self.vision["num_hidden_layers"] + self.vision_select_layer + 1

    @property
    def action_tokens(self) -> int:
        """Learned action tokens stored as model.action_supervision (0 when the newline token serves)."""
        return {"one_token": 1, "three_tokens": 3}.get(self.vision_supervision, 0)

    @property
    def image_size(self) -> int:
        return self.vision["image_size"]

    @property
    def pooled_side(self) -> int:
        side = self.vision["image_size"] // self.vision["patch_size"]
        if self.spatial_pool_mode == "bilinear":
            return math.ceil(side / self.spatial_pool_stride)
        return side // self.spatial_pool_stride

    @property
    def tokens_per_frame(self) -> int:
        side = self.pooled_side
        if self.newline_position == "grid":
            return side * (side + 1)
        return side * side + (self.newline_position == "frame")

    @property
    def closing_tokens(self) -> int:
        """Tokens after the frames and action tokens: one_token's single newline for the whole video."""
        return int(self.newline_position == "one_token")

    def visual_tokens(self, num_frames: int) -> int:
        """Tokens that replace the placeholder: every frame's, the learned action tokens, the closing newline."""
        return num_frames * self.tokens_per_frame + self.action_tokens + self.closing_tokens

    def extra_tokens(self, num_frames: int) -> int:
        """Sequence positions the model adds beyond its input ids: the visual tokens less their one placeholder."""
        return self.visual_tokens(num_frames) - 1

    def chat_format(self) -> SplicedVideo:
        """How this model reads a sample: the qwen_1_5 template, one `<image>` placeholder for the visual tokens."""
        return SplicedVideo(
            tokens_per_frame=self.tokens_per_frame, action_tokens=self.action_tokens, closing_tokens=self.closing_tokens
        )

    @classmethod
    def from_dict(cls, fields: dict) -> LlavaVideoConfig:
        """The config from its fields as dataclasses.asdict wrote them (sequences may come back as lists)."""
        tuples = ("image_mean", "image_std", "action_types")
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in fields.items()})

    def to_original(self) -> dict:
        """The config.json of an original LLaVA-Video checkpoint (LlavaQwenForCausalLM)."""
        vision = dict(self.vision)
        actions = (
            {}
            if self.action_types is None
            else {"vision_supervision": self.vision_supervision, "action_types": ",".join(map(str, self.action_types))}
        )
        return (
            self.extra
            | self.text
            | actions
            | {
                "architectures": ["LlavaQwenForCausalLM"],
                "model_type": self.extra.get("model_type", "llava"),
                "mm_projector_type": self.projector_type,
                "mm_vision_select_layer": self.vision_select_layer,
                "mm_spatial_pool_mode": self.spatial_pool_mode,
                "mm_spatial_pool_stride": self.spatial_pool_stride,
                "mm_newline_position": ORIGINAL_NEWLINE_NAMES.get(self.newline_position, self.newline_position),
                "mm_hidden_size": vision["hidden_size"],
                "mm_vision_tower": self.vision_tower_name,
                "vision_config": vision,
                "image_mean": list(self.image_mean),
                "image_std": list(self.image_std),
            }
        )

    @classmethod
    def from_original(cls, config: dict, source: str = "config.json") -> LlavaVideoConfig:
        """Read an original config.json; the vision tower from `vision_config`, else a known published tower."""
        missing = [k for k in ("mm_vision_tower", "hidden_size", "num_hidden_layers", "vocab_size") if k not in config]
        if missing:
            raise ValueError(f"{source}: missing {', '.join(missing)}")
        tower = config["mm_vision_tower"]
        if "vision_config" in config:
            vision = dict(config["vision_config"])
        else:
            vision = _known_tower(tower)
            if vision is None:
                raise ValueError(
                    f"{source}: no vision_config and the vision tower {tower!r} is not a known one "
                    f"({', '.join(KNOWN_VISION_TOWERS)}); add a vision_config dict describing the full tower"
                )
        if "mm_hidden_size" in config and config["mm_hidden_size"] != vision["hidden_size"]:
            raise ValueError(
                f"{source}: mm_hidden_size {config['mm_hidden_size']} != tower width {vision['hidden_size']}"
            )
        text = {k: v for k, v in config.items() if k not in MM_FIELDS and not k.startswith(("mm_", "_"))}
        return cls(
            vision=vision,
            text=text,
            vision_tower_name=tower,
            vision_select_layer=config.get("mm_vision_select_layer", -2),
            projector_type=config.get("mm_projector_type", "mlp2x_gelu"),
            spatial_pool_mode=config.get("mm_spatial_pool_mode", "bilinear"),
            spatial_pool_stride=config.get("mm_spatial_pool_stride", 2),
            newline_position={v: k for k, v in ORIGINAL_NEWLINE_NAMES.items()}.get(
                config.get("mm_newline_position", "grid"), config.get("mm_newline_position", "grid")
            ),
            image_mean=tuple(config.get("image_mean", (0.5, 0.5, 0.5))),
            image_std=tuple(config.get("image_std", (0.5, 0.5, 0.5))),
            vision_supervision=config.get("vision_supervision"),
            action_types=tuple(int(x) for x in str(config["action_types"]).split(","))
            if "action_types" in config
            else None,
            extra={k: config[k] for k in ("model_type", "vision_token_training") if k in config},
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _known_tower(name: str) -> dict | None:
    """A known tower by its exact name or the exact name of its local folder."""
    for known, shape in KNOWN_VISION_TOWERS.items():
        if name == known or PurePath(name).name == PurePath(known).name:
            return dict(shape)
    return None


TINY_VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=2,
    image_size=32,
    patch_size=4,
    layer_norm_eps=1e-6,
    hidden_act="gelu_pytorch_tanh",
)
TINY_TEXT = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    hidden_act="silu",
)
PRESETS = {
    "tiny": lambda: LlavaVideoConfig(vision=dict(TINY_VISION), text=dict(TINY_TEXT), vision_tower_name="tiny-siglip"),
    "0.5b": lambda: LlavaVideoConfig(vision=dict(SIGLIP_SO400M_384), text=dict(QWEN2_0_5B)),
    "7b": lambda: LlavaVideoConfig(vision=dict(SIGLIP_SO400M_384), text=dict(QWEN2_7B)),
}


def preset(name: str, **overrides) -> LlavaVideoConfig:
    """A named preset ('tiny', '0.5b', '7b') with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name](), **overrides)  # __post_init__ validates the result
