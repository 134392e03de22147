"""InternVL3 / InternVL3.5 as a LLaVAction backbone, built from transformers' own `InternVLForConditionalGeneration`:
its InternViT tower, pixel-shuffle projector and Qwen2 / Qwen3 language model, plus LLaVAction's action token(s) after
the video and its verb, noun and action heads. A clip's frames are images to the model: each gives its
tokens_per_frame visual tokens, placed at the prompt's `<IMG_CONTEXT>` tokens in order."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache

from llavaction.model.base import (
    Run,
    VideoLanguageModel,
    check_attention,
    check_head_layers,
    layers_read,
    unpack_rows,
)
from llavaction.model.generation import Prefill
from llavaction.model.hf_layout import load_hf_layout
from llavaction.model.internvl.config import InternVLConfig
from llavaction.model.pixels import normalize, processor_resize
from llavaction.prompts.formats import ACTION_TOKEN_INDEX


class InternVLModel(VideoLanguageModel):
    """An InternVL model (self.hf) with LLaVAction's action supervision. Rows of input_ids hold one `<IMG_CONTEXT>` a
    visual token of their clip and, with action supervision, the action token(s) right after the video
    (ACTION_TOKEN_INDEX)."""

    def __init__(self, config: InternVLConfig, hf_model: nn.Module | None = None):
        super().__init__()
        check_attention(config.attn_implementation)
        self.config = config
        if hf_model is None:
            from transformers import InternVLForConditionalGeneration

            hf_model = InternVLForConditionalGeneration._from_config(
                config.to_hf(), attn_implementation=config.attn_implementation
            )
        self.hf = hf_model
        self.add_action_supervision(self.hf.config.text_config.hidden_size)

    def embedding_layer(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def initializer_range(self) -> float:
        return self.hf.config.text_config.initializer_range

    def parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        inner = self.hf.model
        return {
            "vision_tower": [inner.vision_tower],
            "projector": [inner.multi_modal_projector],
            "llm": [inner.language_model, self.hf.lm_head],
            "action_heads": self.action_head_parameters(),
        }

    def preprocess(self, frames: torch.Tensor, clips: list | None = None) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] frames -> pixel values [B, T, 3, S, S] as its processor makes them (model/pixels.py):
        resized to the tower's side, normalised (clips: unused, a frame's time is its `FrameN:` label)."""
        batch, steps = frames.shape[:2]
        size = self.config.image_size
        resized = processor_resize(frames.permute(0, 1, 4, 2, 3).flatten(0, 1), size, size)
        return normalize(resized, self.config.image_mean, self.config.image_std).unflatten(0, (batch, steps))

    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, S, S] -> [B, T * tokens_per_frame, D]: every frame through the tower and projector at once."""
        if pixel_values is None or pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be [B, T, 3, H, W], got {getattr(pixel_values, 'shape', None)}")
        batch, steps = pixel_values.shape[:2]
        features = self.hf.model.get_image_features(pixel_values=pixel_values.flatten(0, 1)).pooler_output
        return features.reshape(batch, steps * features.shape[1], -1)

    def embed(self, input_ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Token embeddings with each clip's visual tokens at its `<IMG_CONTEXT>` tokens and the learned action
        token(s) at their placeholders."""
        embeds = self.hf.get_input_embeddings()(input_ids.clamp(min=0))
        is_visual = input_ids == self.config.hf["image_token_id"]
        counts = is_visual.sum(1).tolist()
        if counts != [visual.shape[1]] * len(counts):
            raise ValueError(f"rows hold {counts} <IMG_CONTEXT> tokens but their clips give {visual.shape[1]} each")
        embeds = embeds.masked_scatter(is_visual[..., None], visual.to(embeds.dtype))
        place = input_ids == ACTION_TOKEN_INDEX
        if place.any():
            if self.config.action_tokens == 0:
                raise ValueError("input_ids hold action tokens but the model has no action supervision")
            vectors = self.action_supervision.to(embeds.dtype).repeat(int(place.sum()) // self.config.action_tokens, 1)
            embeds = embeds.masked_scatter(place[..., None], vectors)
        return embeds

    def action_places(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, count] positions of each row's action token(s)."""
        is_action = input_ids == ACTION_TOKEN_INDEX
        count = self.config.action_tokens
        held = is_action.sum(1).tolist()
        if any(n != count for n in held):
            raise ValueError(f"rows hold {held} action tokens; each must hold {count}")
        return is_action.nonzero()[:, 1].view(input_ids.shape[0], count)

    def run(self, input_ids, visual: torch.Tensor, attention_mask, labels, head_layers, pack) -> Run:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        check_head_layers(self.config, head_layers)
        embeds = self.embed(input_ids, visual)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        options = dict(use_cache=False, output_hidden_states=head_layers in ("first", "all"))
        llm = self.hf.model.language_model
        if pack:
            real = mask.bool()
            out = llm(inputs_embeds=embeds[real][None], position_ids=positions[real][None], **options)
            hidden = unpack_rows(out.last_hidden_state, real)
            states = out.hidden_states and tuple(unpack_rows(h, real) for h in out.hidden_states)
        else:
            out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **options)
            hidden, states = out.last_hidden_state, out.hidden_states
        action_logits = None
        if head_layers is not None:
            places = self.action_places(input_ids)
            action_logits = [self.heads_at(h, places) for h in layers_read(head_layers, hidden, states)]
        return Run(hidden, mask, labels, action_logits)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor) -> Prefill:
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        last = positions[:, -1:]
        places = self.action_places(input_ids) if self.config.action_types else None
        return Prefill(
            self.embed(input_ids, visual),
            attention_mask,
            positions,
            next_positions=lambda step: last + 1 + step,
            read_heads=lambda hidden: self.heads_at(hidden, places),
        )

    def decoder_pass(self, embeds, mask, positions, cache, **extra) -> torch.Tensor:
        return self.hf.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        ).last_hidden_state

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf.get_input_embeddings()(tokens)

    def output_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.hf.lm_head(hidden)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.hf.config.text_config)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, config: InternVLConfig | None = None, allow_missing_heads: bool = False
    ) -> InternVLModel:
        """A checkpoint folder (or hub id) in transformers' layout by transformers' own loader, with the action heads of
        action_heads.safetensors (allow_missing_heads: heads the run adds start fresh)."""
        from transformers import InternVLForConditionalGeneration

        from llavaction.utils.hub import resolve

        folder = resolve(directory)
        if config is None:
            config = InternVLConfig.from_checkpoint(
                folder, str(folder), json.loads((folder / "config.json").read_text())
            )
        return load_hf_layout(cls, folder, config, InternVLForConditionalGeneration, allow_missing_heads)
