"""Model families as plug-ins: every registered family's model implements the one interface and shares the one
generation loop; `model.backbone`'s choices are the registry's; and README's "Adding a model family" followed from a
test: a toy family registered here trains, validates, checkpoints and evaluates through the same code as the others."""

from dataclasses import asdict, dataclass, field, replace
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from llavaction.model.base import Run, VideoLanguageModel, check_head_layers, layers_read
from llavaction.model.families import BUILT_IN, Backbone
from llavaction.model.family import REGISTRY, LmmsEvalModel, ModelFamily, VideoLM
from llavaction.model.generation import Prefill, Sampling
from llavaction.prompts.formats import ClipTiming, Encode, VideoFormat
from llavaction.prompts.tokenizer import load_tokenizer

HOOKS = ("run", "prefill", "decoder_pass", "embed_tokens", "output_head", "new_cache")


def tiny_model(name: str, demo_dir):
    from llavaction.model.architecture import meet_tokenizer

    family = REGISTRY.get(name)
    config = meet_tokenizer(family, family.preset("tiny"), load_tokenizer(demo_dir / "tokenizer"), from_preset=True)
    torch.manual_seed(0)
    return family, family.model_class(config).eval()


def test_the_backbone_choices_are_the_registry():
    assert get_args(Backbone) == BUILT_IN == ("internvl", "llava_video", "qwen2_5_vl", "qwen3_vl")
    assert {family.name for family in REGISTRY} >= set(BUILT_IN)


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_family_implements_the_interface_and_its_spec(name, demo_dir):
    family, model = tiny_model(name, demo_dir)
    assert isinstance(model, VideoLM) and isinstance(model, VideoLanguageModel)
    assert all(callable(getattr(model, hook)) for hook in HOOKS)
    assert set(model.parts()) == {"vision_tower", "projector", "llm", "action_heads"}
    blocks = [m for m in model.modules() if isinstance(m, family.block_types)]
    assert len(blocks) >= 2 and family.export_layouts[0] == "original"
    assert family.config_class.from_dict(asdict(model.config)) == model.config  # what checkpoints record round-trips
    assert family.lmms_eval.arguments.format(pretrained="p", num_frames=8)
    assert isinstance(family.preset("tiny"), family.config_class)


@pytest.mark.parametrize("name", BUILT_IN)
def test_sampling_is_seeded_and_top_k_1_is_greedy(name, demo_dir):
    from llavaction.prompts.encoding import PromptEncoder, pad_right

    family, model = tiny_model(name, demo_dir)
    tokenizer = load_tokenizer(demo_dir / "tokenizer")
    encoder = PromptEncoder(tokenizer, chat=model.config.chat_format())
    encoded = [
        encoder.encode(question, None, encoder.visual(ClipTiming.even(4, 2.0), 32))
        for question in ("open?", "what now?")
    ]
    batch = pad_right([(e.input_ids, e.labels) for e in encoded], tokenizer.pad_token_id)
    pixels = model.preprocess(
        torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8), [ClipTiming.even(4, 2.0)] * 2
    )
    visual = model.encode_video(pixels)

    def answers(sampling, seed=0):
        generator = torch.Generator().manual_seed(seed)
        kwargs = dict(max_new_tokens=5, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id, visual_tokens=visual)
        out = model.generate(
            batch["input_ids"], None, batch["attention_mask"], sampling=sampling, generator=generator, **kwargs
        )
        return out.tokens

    greedy = answers(Sampling())
    assert answers(Sampling(temperature=1.0, top_k=1)) == greedy
    assert answers(Sampling(temperature=1.0, top_p=1e-6)) == greedy
    hot = Sampling(temperature=5.0)
    assert answers(hot, seed=1) == answers(hot, seed=1)
    assert any(answers(hot, seed=s) != greedy for s in range(2, 6))


def test_bad_sampling_settings_are_refused():
    for bad in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1)):
        with pytest.raises(ValueError):
            Sampling(**bad)


def test_registry_refuses_a_second_family_of_one_name_or_checkpoint_type():
    llava = REGISTRY.get("llava_video")
    with pytest.raises(ValueError, match="registered twice"):
        REGISTRY.register(replace(llava, title="another"))
    with pytest.raises(ValueError, match="checkpoint types already claimed: llava"):
        REGISTRY.register(replace(llava, name="copy"))
    with pytest.raises(ValueError, match="model_type 'gpt2' is no known model family's checkpoint"):
        REGISTRY.of_checkpoint({"model_type": "gpt2"}, "x/config.json")
    with pytest.raises(ValueError, match="model.backbone 'nope': expected one of"):
        REGISTRY.get("nope")


# ---- README "Adding a model family", followed: a toy family, its format, model, config and spec ----

VIDEO_TOKEN = "<toy_video>"


@dataclass(frozen=True)
class ToyVideo(VideoFormat):
    """The toy's format: one `<toy_video>` a visual token, in place of the clip's marker."""

    system: str | None = None
    tokens_per_frame: int = 2
    video_id: int = -1

    @property
    def video_marker(self) -> str:
        return VIDEO_TOKEN

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return (VIDEO_TOKEN,)

    def visual_ids(self, clip: ClipTiming, frame_size: int, encode: Encode):
        ids = [self.video_id] * (clip.count * self.tokens_per_frame)
        return ids, len(ids)


@dataclass
class ToyConfig:
    text: dict = field(default_factory=lambda: dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=1100, max_position_embeddings=2048, tie_word_embeddings=False,
    ))  # fmt: skip
    image_size: int = 32
    tokens_per_frame: int = 2
    video_id: int = -1
    attn_implementation: str = "sdpa"
    vision_supervision: str | None = None
    action_types: tuple[int, int, int] | None = None

    @property
    def action_tokens(self) -> int:
        return 0

    def chat_format(self) -> ToyVideo:
        return ToyVideo(tokens_per_frame=self.tokens_per_frame, video_id=self.video_id)

    def extra_tokens(self, num_frames: int) -> int:
        return 0

    @classmethod
    def from_dict(cls, fields: dict) -> "ToyConfig":
        return cls(**fields)


class ToyModel(VideoLanguageModel):
    """Each frame averaged into tokens_per_frame colour cells, projected into a tiny Qwen2 LLM."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        width = config.text["hidden_size"]
        self.vision_tower = nn.Linear(3, 16)
        self.projector = nn.Linear(16, width)
        self.llm = Qwen2ForCausalLM._from_config(Qwen2Config(**config.text), attn_implementation="sdpa")

    def embedding_layer(self):
        return self.llm.get_input_embeddings()

    def initializer_range(self) -> float:
        return 0.02

    def parts(self):
        return {
            "vision_tower": [self.vision_tower],
            "projector": [self.projector],
            "llm": [self.llm],
            "action_heads": [],
        }

    def preprocess(self, frames, clips=None):
        return frames.permute(0, 1, 4, 2, 3).float() / 255.0

    def encode_video(self, pixels):
        batch, steps = pixels.shape[:2]
        cells = F.adaptive_avg_pool2d(pixels.flatten(0, 1), (1, self.config.tokens_per_frame))  # [BT, 3, 1, n]
        tokens = self.projector(torch.tanh(self.vision_tower(cells.flatten(2).transpose(1, 2))))
        return tokens.reshape(batch, steps * self.config.tokens_per_frame, -1)

    def embed(self, input_ids, visual):
        embeds = self.llm.get_input_embeddings()(input_ids.clamp(min=0))
        return embeds.masked_scatter((input_ids == self.config.video_id)[..., None], visual.to(embeds.dtype))

    def run(self, input_ids, visual, attention_mask, labels, head_layers, pack) -> Run:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        check_head_layers(self.config, head_layers)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.llm.model(
            inputs_embeds=self.embed(input_ids, visual), attention_mask=mask, position_ids=positions, use_cache=False
        )
        layers_read("last", out.last_hidden_state, None)
        return Run(out.last_hidden_state, mask, labels, None)

    def prefill(self, input_ids, attention_mask, visual) -> Prefill:
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        last = positions[:, -1:]
        return Prefill(self.embed(input_ids, visual), attention_mask, positions, lambda step: last + 1 + step)

    def decoder_pass(self, embeds, mask, positions, cache, **extra):
        out = self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache)
        return out.last_hidden_state

    def embed_tokens(self, tokens):
        return self.llm.get_input_embeddings()(tokens)

    def output_head(self, hidden):
        return self.llm.lm_head(hidden)

    def new_cache(self):
        return DynamicCache(config=self.llm.config)


def toy_tokenizer_ids(config: ToyConfig, tokenizer) -> ToyConfig:
    return replace(config, video_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN))


TOY = ModelFamily(
    name="toy",
    title="a toy family for README's guide",
    config_class=ToyConfig,
    presets={"tiny": ToyConfig},
    model_class=ToyModel,
    checkpoint_types=("toy",),
    read_checkpoint=lambda folder, config, source: ToyConfig(),
    load=lambda weights, config, new_heads: ToyModel(config),
    block_types=(Qwen2DecoderLayer,),
    vision_flops=lambda config, frames, size: 0.0,
    export=lambda model, state, folder, tokenizer, layout: None,
    lmms_eval=LmmsEvalModel("toy", "pretrained={pretrained}"),
    special_tokens=(VIDEO_TOKEN,),
    meet_tokenizer=toy_tokenizer_ids,
)


@pytest.fixture
def toy_family():
    REGISTRY.register(TOY)
    yield TOY
    REGISTRY.unregister(TOY.name)


def test_a_family_registered_from_outside_trains_validates_and_evaluates(toy_family, demo_dir, demo_shards, tmp_path):
    import lightning as L

    from llavaction.evaluation.checkpoints import LoadedCheckpoint
    from llavaction.evaluation.options import EvaluationOptions
    from llavaction.training.checkpointing import RunCheckpoint
    from llavaction.training.module import LlavaActionModule
    from tests.helpers import datamodule

    module = LlavaActionModule(
        backbone="toy",
        tokenizer=str(demo_dir / "tokenizer"),
        evaluation=EvaluationOptions(mqa_scoring=("generate", "letter"), max_new_tokens=3),
    )
    data = datamodule(demo_dir, demo_shards, chat_format=module.chat_format, tokenizer=module.tokenizer_path)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[RunCheckpoint()],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["val/mqa_accuracy"])
    loaded = LoadedCheckpoint.open(tmp_path / "checkpoints" / "last.ckpt")
    assert loaded.backbone == "toy"
    answers = loaded.module().answerer
    assert isinstance(answers.model, ToyModel) and answers.encoder.chat == module.config.chat_format()
