"""The LLaVA-Video architecture from transformers parts: SigLIP (last layer removed) -> mlp2x_gelu projector ->
per-frame 2x2 pooling -> newline tokens -> spliced into the prompt of a Qwen2 LLM at the image placeholder."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from llavaction.model.base import (
    Run,
    VideoLanguageModel,
    check_attention,
    check_head_layers,
    layers_read,
    unpack_rows,
)
from llavaction.model.generation import Prefill
from llavaction.model.llava_video.config import LlavaVideoConfig
from llavaction.utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


class LlavaVideoModel(VideoLanguageModel):
    """Each row of input_ids holds IMAGE_TOKEN_INDEX once; the visual tokens of its T frames (pixel_values
    [B, T, 3, H, W]) replace it. The entry points (forward, logits, last_logits, generate) are VideoLanguageModel's."""

    def __init__(self, config: LlavaVideoConfig):
        super().__init__()
        check_attention(config.attn_implementation)
        self.config = config
        vision_config = SiglipVisionConfig(
            **(config.vision | {"num_hidden_layers": config.vision_layers_kept, "vision_use_head": False})
        )
        text_config = Qwen2Config(**config.text)
        self.vision_tower = SiglipVisionModel._from_config(
            vision_config, attn_implementation=config.attn_implementation
        )
        # Kept so checkpoints round-trip; features are taken before it, as in LLaVA-Video.
        self.vision_tower.post_layernorm.requires_grad_(False)
        width = text_config.hidden_size
        self.projector = nn.Sequential(nn.Linear(vision_config.hidden_size, width), nn.GELU(), nn.Linear(width, width))
        self.image_newline = nn.Parameter(torch.randn(width) * width**-0.5)
        self.llm = Qwen2ForCausalLM._from_config(text_config, attn_implementation=config.attn_implementation)
        self.add_action_supervision(width)  # LLaVAction's action token(s) and heads, when the config has them

    def embedding_layer(self) -> nn.Embedding:
        return self.llm.get_input_embeddings()

    def initializer_range(self) -> float:
        return self.llm.config.initializer_range

    @classmethod
    def from_pretrained(cls, directory: str | Path, strict: bool = True, **overrides) -> LlavaVideoModel:
        """Load an original LLaVA-Video / LLaVAction checkpoint directory (config.json + *.safetensors)."""
        from llavaction.model.llava_video.checkpoint import load_original

        return load_original(cls, Path(directory), strict=strict, **overrides)

    def save_pretrained(self, directory: str | Path, max_shard_bytes: int = 5 * 2**30) -> None:
        """Write the original layout: config.json and model.safetensors (sharded with an index when large)."""
        from llavaction.model.llava_video.checkpoint import save_original

        save_original(self, Path(directory), max_shard_bytes=max_shard_bytes)

    def parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        """The model's parts by the names every family shares: the vision tower (without its post-layernorm, which
        never trains: features are taken before it), the projector (with the newline vector), the LLM and the action
        heads."""
        tower = [p for name, p in self.vision_tower.named_parameters() if not name.startswith("post_layernorm.")]
        return {
            "vision_tower": tower,
            "projector": [self.projector, self.image_newline],
            "llm": [self.llm],
            "action_heads": self.action_head_parameters(),
        }

    def preprocess(self, frames: torch.Tensor, clips: list | None = None) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] frames -> pixel_values [B, T, 3, S, S]: resized to the tower's size if needed
        (bilinear, antialiased) and normalised with the tower's mean and std, as the reference does (clips:
        unused)."""
        batch, steps = frames.shape[:2]
        x = frames.permute(0, 1, 4, 2, 3).flatten(0, 1).float().div_(255)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.config.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).unflatten(0, (batch, steps))

    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] -> [B, T * tokens_per_frame, D]; all frames of the batch in one pass."""
        if pixel_values is None or pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be [B, T, 3, H, W], got {getattr(pixel_values, 'shape', None)}")
        batch, frames = pixel_values.shape[:2]
        images = pixel_values.flatten(0, 1).to(self.vision_tower.embeddings.patch_embedding.weight.dtype)
        features = self.vision_tower.encoder(inputs_embeds=self.vision_tower.embeddings(images)).last_hidden_state
        tokens = self.projector(features)
        side = int(round(tokens.shape[1] ** 0.5))
        grid = tokens.unflatten(1, (side, side)).permute(0, 3, 1, 2)  # [BT, D, side, side]
        grid = self._pool(grid).permute(0, 2, 3, 1)  # [BT, s, s, D]
        if self.config.newline_position == "grid":
            newline = self.image_newline.to(grid.dtype).expand(*grid.shape[:2], 1, -1)
            per_frame = torch.cat([grid, newline], dim=2).flatten(1, 2)
        elif self.config.newline_position == "frame":
            newline = self.image_newline.to(grid.dtype).expand(grid.shape[0], 1, -1)
            per_frame = torch.cat([grid.flatten(1, 2), newline], dim=1)
        else:
            per_frame = grid.flatten(1, 2)
        tokens = per_frame.reshape(batch, frames * per_frame.shape[1], -1)
        if self.config.action_tokens:
            tokens = torch.cat([tokens, self.action_supervision.to(tokens.dtype).expand(batch, -1, -1)], dim=1)
        if self.config.closing_tokens:  # one_token: a single newline closes the video, after the action tokens
            tokens = torch.cat([tokens, self.image_newline.to(tokens.dtype).expand(batch, 1, -1)], dim=1)
        return tokens

    def _pool(self, grid: torch.Tensor) -> torch.Tensor:
        stride = self.config.spatial_pool_stride
        if self.config.spatial_pool_mode == "bilinear":
            return F.interpolate(grid, size=(self.config.pooled_side,) * 2, mode="bilinear")
        if self.config.spatial_pool_mode == "average":
            return F.avg_pool2d(grid, stride)
        return F.max_pool2d(grid, stride)

    def splice(
        self, input_ids: torch.Tensor, visual: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace the placeholder of each row by its visual tokens (vectorised; rows may be left or right padded)."""
        is_image = input_ids == IMAGE_TOKEN_INDEX
        bad = (is_image.sum(1) != 1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"rows {bad} of input_ids do not hold the image placeholder {IMAGE_TOKEN_INDEX} exactly once"
            )
        length, num_visual = input_ids.shape[1], visual.shape[1]
        place = is_image.int().argmax(1, keepdim=True)  # [B, 1]
        out = torch.arange(length + num_visual - 1, device=input_ids.device)[None]  # [1, S]
        in_visual = (out >= place) & (out < place + num_visual)
        text_index = torch.where(out < place, out, out - num_visual + 1).clamp(0, length - 1)
        visual_index = (out - place).clamp(0, num_visual - 1)
        text = self.llm.get_input_embeddings()(input_ids.clamp(min=0))
        width = text.shape[-1]
        embeds = torch.where(
            in_visual[..., None],
            visual.to(text.dtype).gather(1, visual_index[..., None].expand(-1, -1, width)),
            text.gather(1, text_index[..., None].expand(-1, -1, width)),
        )
        mask = torch.where(in_visual, 1, attention_mask.gather(1, text_index))
        spliced_labels = None if labels is None else torch.where(in_visual, IGNORE_INDEX, labels.gather(1, text_index))
        return embeds, mask, spliced_labels

    def run(
        self,
        input_ids: torch.Tensor,
        visual: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        head_layers: str | None,
        pack: bool,
    ) -> Run:
        """The LLM over the spliced sequences (visual: encode_video's output for the rows): the last layer's hidden
        states, and the heads read at head_layers. pack: the rows' real tokens concatenated into one sequence,
        positions restarting per row, so no padding is computed; transformers then keeps attention within each row (a
        block-diagonal mask with sdpa/eager, variable-length kernels with flash-attn); outputs are laid out as
        without packing."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        check_head_layers(self.config, head_layers)
        embeds, mask, labels = self.splice(input_ids, visual, attention_mask, labels)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # No KV cache: the model's config asks for one, which would keep every layer's keys and values alive.
        options = dict(use_cache=False, output_hidden_states=head_layers in ("first", "all"))
        if pack:
            real = mask.bool()
            # transformers reads packed rows from the restarting positions when given no mask (and no cache)
            llm_out = self.llm.model(inputs_embeds=embeds[real][None], position_ids=positions[real][None], **options)
            hidden = unpack_rows(llm_out.last_hidden_state, real)
            states = llm_out.hidden_states and tuple(unpack_rows(h, real) for h in llm_out.hidden_states)
        else:
            llm_out = self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **options)
            hidden, states = llm_out.last_hidden_state, llm_out.hidden_states
        action_logits = None
        if head_layers is not None:
            places = self.action_places(input_ids, visual.shape[1])
            action_logits = [self.heads_at(h, places) for h in layers_read(head_layers, hidden, states)]
        return Run(hidden, mask, labels, action_logits)

    def action_places(self, input_ids: torch.Tensor, num_visual: int) -> torch.Tensor:
        """[B, count] positions of the action token(s) in the spliced rows: the learned tokens that end the visual
        tokens (before a closing newline), or the last newline token (action mode 'newline')."""
        place = (input_ids == IMAGE_TOKEN_INDEX).int().argmax(1)
        count = max(1, self.config.action_tokens)
        first = place + num_visual - count - (self.config.closing_tokens if self.config.action_tokens else 0)
        return first[:, None] + torch.arange(count, device=first.device)[None]

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor) -> Prefill:
        """The left-padded prompts spliced with their visual tokens; positions continue by one a step."""
        embeds, mask = self.splice(input_ids, visual, attention_mask, None)[:2]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        last = positions[:, -1:]
        places = self.action_places(input_ids, visual.shape[1]) if self.config.action_types else None
        return Prefill(
            embeds,
            mask,
            positions,
            next_positions=lambda step: last + 1 + step,
            read_heads=lambda hidden: self.heads_at(hidden, places),
        )

    def decoder_pass(self, embeds, mask, positions, cache, **extra) -> torch.Tensor:
        return self.llm.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        ).last_hidden_state

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(tokens)

    def output_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.llm.get_output_embeddings()(hidden)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.llm.config)
