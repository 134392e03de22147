"""Qwen2.5-VL and Qwen3-VL as LLaVAction backbones, built from transformers' own classes
(`Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`): their vision encoder and merger, M-RoPE
positions (the model's own get_rope_index) and language model, behind the entry points LlavaVideoModel has
(preprocess, encode_video, forward, logits, last_logits, generate), plus LLaVAction's action token(s) after the video
and its verb, noun and action heads. The prompt holds every visual token (llavaction.prompts.formats)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llavaction.model.base import Run, VideoLanguageModel, check_attention, check_head_layers, layers_read, unpack_rows
from llavaction.model.generation import Prefill
from llavaction.model.hf_layout import load_hf_layout
from llavaction.model.pixels import normalize, processor_resize
from llavaction.model.qwen_vl.config import QwenVLConfig
from llavaction.model.qwen_vl.positions import mrope_positions
from llavaction.prompts.formats import ACTION_TOKEN_INDEX, ClipTiming


@dataclass
class QwenPixels:
    """Clips as the vision encoder takes them: patches [sum of patches, C x temporal x patch x patch], each clip's
    grid [B, 3] (temporal groups, patch rows, patch columns) and seconds per temporal group [B] (Qwen2.5-VL's
    M-RoPE time step)."""

    values: torch.Tensor
    grid: torch.Tensor
    seconds_per_group: torch.Tensor


@dataclass
class QwenVisual:
    """The visual tokens of B clips: per clip its merged tokens [N_b, D] (and Qwen3-VL's deepstack features per
    layer), its grid and seconds per group. Indexing picks clips (several prompts about one clip)."""

    tokens: list[torch.Tensor]
    deepstack: list[list[torch.Tensor]] | None
    grid: torch.Tensor
    seconds_per_group: torch.Tensor

    def __getitem__(self, index) -> QwenVisual:
        rows = torch.as_tensor(index).flatten().tolist()
        deepstack = None if self.deepstack is None else [[layer[r] for r in rows] for layer in self.deepstack]
        return QwenVisual([self.tokens[r] for r in rows], deepstack, self.grid[rows], self.seconds_per_group[rows])

    def encoder_outputs(self) -> dict:
        """The precomputed video features as transformers' models take them (mm_encoder_outputs)."""
        output = BaseModelOutputWithPooling(pooler_output=tuple(self.tokens))
        if self.deepstack is not None:
            output["deepstack_features"] = [tuple(layer) for layer in self.deepstack]
        return {"video": output}


class QwenVLModel(VideoLanguageModel):
    """A Qwen2.5-VL or Qwen3-VL model (self.hf, transformers' *ForConditionalGeneration) with LLaVAction's action
    supervision. Rows of input_ids hold their clip's vision block(s) (the video pad tokens stand for the clip's
    visual tokens) and, with action supervision, the action token(s) right after (ACTION_TOKEN_INDEX)."""

    def __init__(self, config: QwenVLConfig, hf_model: nn.Module | None = None):
        super().__init__()
        check_attention(config.attn_implementation)
        self.config = config
        if hf_model is None:
            hf_model = config.hf_class()._from_config(config.to_hf(), attn_implementation=config.attn_implementation)
        self.hf = hf_model
        self.add_action_supervision(self.hf.config.text_config.hidden_size)

    def embedding_layer(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def initializer_range(self) -> float:
        return self.hf.config.text_config.initializer_range

    def token_scale(self, embeddings: torch.Tensor) -> float:
        return self.hf.config.text_config.hidden_size**-0.5

    def parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        """The model's parts by the names every backbone shares: the vision tower, the projector (the merger, and
        Qwen3-VL's deepstack mergers), the LLM (with its output head) and the action heads."""
        visual = self.hf.model.visual
        mergers = [visual.merger, *getattr(visual, "deepstack_merger_list", [])]
        merger_ids = {id(p) for m in mergers for p in m.parameters()}
        tower = [p for p in visual.parameters() if id(p) not in merger_ids]
        return {
            "vision_tower": tower,
            "projector": mergers,
            "llm": [self.hf.model.language_model, self.hf.lm_head],
            "action_heads": self.action_head_parameters(),
        }

    def preprocess(self, frames: torch.Tensor, clips: list[ClipTiming] | None = None) -> QwenPixels:
        """uint8 [B, T, S, S, 3] frames -> the vision encoder's patches, as the backbone's video processor makes them
        (model/pixels.py): resized to the frame rule's grid, normalised, the last frame repeated to whole temporal
        groups, cut into patches in the processor's order; each clip's time step from its frames' timing (clips;
        None: frames evenly over one second a frame)."""
        rule = self.config.rule
        batch, steps, height, width = frames.shape[:4]
        resized = processor_resize(frames.permute(0, 1, 4, 2, 3).flatten(0, 1), *rule.resized(steps, height, width))
        x = normalize(resized, rule.image_mean, rule.image_std).unflatten(0, (batch, steps))
        if pad := rule.padded_frames(steps) - steps:
            x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
        groups, rows, columns = rule.grid(steps, height, width)
        patch, merge, temporal = rule.patch_size, rule.merge_size, rule.temporal_patch_size
        x = x.view(batch, groups, temporal, 3, rows // merge, merge, patch, columns // merge, merge, patch)
        x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
        values = x.reshape(batch * groups * rows * columns, 3 * temporal * patch * patch)
        grid = torch.tensor([[groups, rows, columns]] * batch, device=frames.device)
        clips = clips or [ClipTiming(tuple(range(steps)), 24.0, steps)] * batch
        return QwenPixels(values, grid, torch.tensor([rule.seconds_per_group(clip) for clip in clips]))

    def encode_video(self, pixels: QwenPixels) -> QwenVisual:
        """The clips' merged visual tokens (and Qwen3-VL's deepstack features)."""
        inner = self.hf.model
        values = pixels.values.to(inner.visual.dtype)
        out = inner.get_video_features(values, pixels.grid, return_dict=True)
        deepstack = getattr(out, "deepstack_features", None)
        if deepstack is not None:
            deepstack = [list(layer) for layer in deepstack]
        return QwenVisual(list(out.pooler_output), deepstack, pixels.grid, pixels.seconds_per_group)

    def positions(self, input_ids: torch.Tensor, mask: torch.Tensor, visual: QwenVisual) -> torch.Tensor:
        """[3, B, S] M-RoPE positions of the rows by the released models' rule (model/qwen_vl/positions.py): Qwen2.5-VL
        a block a clip, Qwen3-VL a block a temporal group."""
        merge = self.config.rule.merge_size
        grids = []
        for groups, rows, columns in visual.grid.tolist():
            if self.config.timestamps:
                grids.append([(1, rows // merge, columns // merge)] * groups)
            else:
                grids.append([(groups, rows // merge, columns // merge)])
        seconds = visual.seconds_per_group.tolist()
        per_second = float(self.config.vision.get("tokens_per_second") or 1)
        return mrope_positions(input_ids, mask, self.hf.config.video_token_id, grids, seconds, per_second)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the learned action token(s) at their placeholders."""
        embeds = self.hf.get_input_embeddings()(input_ids.clamp(min=0))
        place = input_ids == ACTION_TOKEN_INDEX
        if place.any():
            if self.config.action_tokens == 0:
                raise ValueError("input_ids hold action tokens but the model has no action supervision")
            count = self.config.action_tokens
            vectors = self.action_supervision.to(embeds.dtype).repeat(int(place.sum()) // count, 1)
            embeds = embeds.masked_scatter(place[..., None], vectors)
        return embeds

    def _check(self, input_ids: torch.Tensor, visual: QwenVisual) -> None:
        counts = (input_ids == self.hf.config.video_token_id).sum(1).tolist()
        expected = [t.shape[0] for t in visual.tokens]
        if counts != expected:
            raise ValueError(f"rows hold {counts} video tokens but their clips give {expected} visual tokens")

    def run(self, input_ids, visual: QwenVisual, attention_mask, labels, head_layers, pack) -> Run:
        """The model's LLM over the rows with their clips' visual features (and M-RoPE positions); labels are the
        rows' own (the prompt holds every visual token)."""
        self._check(input_ids, visual)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        check_head_layers(self.config, head_layers)
        embeds, positions = self.embed(input_ids), self.positions(input_ids, mask, visual)
        options = dict(use_cache=False, output_hidden_states=head_layers in ("first", "all"))
        visual_inputs = dict(mm_encoder_outputs=visual.encoder_outputs(), video_grid_thw=visual.grid)
        if pack:  # the rows' real tokens in one sequence: text positions restart per row, M-RoPE positions as they are
            real = mask.bool()
            text = (mask.cumsum(-1) - 1)[real][None]
            packed = torch.cat([text[None], positions[:, real][:, None]], dim=0)
            out = self.hf.model(inputs_embeds=embeds[real][None], position_ids=packed, **visual_inputs, **options)
            hidden = unpack_rows(out.last_hidden_state, real)
            states = out.hidden_states and tuple(unpack_rows(h, real) for h in out.hidden_states)
        else:
            out = self.hf.model(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **visual_inputs, **options
            )
            hidden, states = out.last_hidden_state, out.hidden_states
        action_logits = None
        if head_layers is not None:
            places = self.action_places(input_ids)
            action_logits = [self.heads_at(h, places) for h in layers_read(head_layers, hidden, states)]
        return Run(hidden, mask, labels, action_logits)

    def action_places(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, count] positions of each row's action token(s) (three_tokens: one a head)."""
        is_action = input_ids == ACTION_TOKEN_INDEX
        count = self.config.action_tokens
        held = is_action.sum(1).tolist()
        if any(n != count for n in held):
            raise ValueError(f"rows hold {held} action tokens; each must hold {count}")
        return is_action.nonzero()[:, 1].view(input_ids.shape[0], count)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: QwenVisual) -> Prefill:
        """The left-padded prompts with their visual features; each generated token at the next M-RoPE position of
        its row (one past the largest so far, on all three axes)."""
        self._check(input_ids, visual)
        positions = self.positions(input_ids, attention_mask, visual)
        following = positions.amax(dim=(0, 2)) + 1  # [B] each row's next position
        places = self.action_places(input_ids) if self.config.action_types else None
        return Prefill(
            self.embed(input_ids),
            attention_mask,
            positions,
            next_positions=lambda step: (following + step).view(1, -1, 1).expand(3, -1, 1),
            first_pass=dict(mm_encoder_outputs=visual.encoder_outputs(), video_grid_thw=visual.grid),
            read_heads=lambda hidden: self.heads_at(hidden, places),
        )

    def decoder_pass(self, embeds, mask, positions, cache, mm_encoder_outputs=None, video_grid_thw=None):
        return self.hf.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            mm_encoder_outputs=mm_encoder_outputs,
            video_grid_thw=video_grid_thw,
            cache=cache,
            use_cache=True,
        ).last_hidden_state

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf.get_input_embeddings()(tokens)

    def output_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.hf.lm_head(hidden)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.hf.config.text_config)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, config: QwenVLConfig | None = None, allow_missing_heads: bool = False
    ) -> QwenVLModel:
        """A Qwen checkpoint folder (or hub id) by transformers' own loader, the action heads from
        action_heads.safetensors when its config has action supervision (allow_missing_heads: heads the run adds start
        fresh)."""
        from llavaction.utils.hub import resolve

        folder = resolve(directory)
        config = config or QwenVLConfig.from_checkpoint(folder)
        return load_hf_layout(cls, folder, config, config.hf_class(), allow_missing_heads)
