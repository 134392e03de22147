"""Qwen2.5-VL and Qwen3-VL as LLaVAction backbones, built from transformers' own classes
(`Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`): their vision encoder and merger, M-RoPE
positions (the model's own get_rope_index) and language model, behind the entry points LlavaVideoModel has
(preprocess, encode_video, forward, logits, last_logits, generate), plus LLaVAction's action token(s) after the video
and its verb, noun and action heads. The prompt holds every visual token (llavaction.prompts.formats)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llavaction.model.llava_video import (
    ACTION_PARAMETERS,
    HEAD_LAYERS,
    Generation,
    LlavaVideoOutput,
    _on_every_rank,
    check_attention,
    left_padded,
    unpack_rows,
)
from llavaction.model.qwen_config import ACTION_HEADS_CONFIG, ACTION_HEADS_FILE, QwenVLConfig, processor_config
from llavaction.prompts.formats import ACTION_TOKEN_INDEX
from llavaction.utils.constants import IGNORE_INDEX


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


class QwenVLModel(nn.Module):
    """A Qwen2.5-VL or Qwen3-VL model (self.hf, transformers' *ForConditionalGeneration) with LLaVAction's action
    supervision. Rows of input_ids hold their clip's vision block(s) (the video pad tokens stand for the clip's
    visual tokens) and, with action supervision, the action token(s) right after (ACTION_TOKEN_INDEX)."""

    def __init__(self, config: QwenVLConfig, hf_model: nn.Module | None = None):
        super().__init__()
        check_attention(config.attn_implementation)
        self.config = config
        if hf_model is None:
            from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

            cls = (
                Qwen2_5_VLForConditionalGeneration
                if config.backbone == "qwen2_5_vl"
                else Qwen3VLForConditionalGeneration
            )
            hf_model = cls._from_config(config.to_hf(), attn_implementation=config.attn_implementation)
        self.hf = hf_model
        width = self.hf.config.text_config.hidden_size
        if config.action_types is not None:
            self.action_supervision = nn.Parameter(torch.randn(config.action_tokens, width) * width**-0.5)
            self.verb_head, self.noun_head, self.action_head = (
                nn.Linear(width, size, bias=False) for size in config.action_types
            )
            self.init_action_supervision()

    def init_action_supervision(self) -> None:
        """Action tokens start like word embeddings (same scale), heads like the LLM's other projections."""
        std = self.hf.config.text_config.initializer_range
        with torch.no_grad():
            self.action_supervision.normal_(0.0, self.hf.config.text_config.hidden_size**-0.5)
            for head in (self.verb_head, self.noun_head, self.action_head):
                head.weight.normal_(0.0, std)

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
            "action_heads": [getattr(self, name) for name in ACTION_PARAMETERS if hasattr(self, name)],
        }

    def preprocess(self, frames: torch.Tensor, clip_seconds: torch.Tensor | None = None) -> QwenPixels:
        """uint8 [B, T, S, S, 3] frames -> the vision encoder's patches, as the backbone's video processor makes them:
        resized to the frame rule's grid (bicubic, antialiased), the last frame repeated to whole temporal groups,
        scaled to [0, 1], normalised, cut into patches in the processor's order."""
        rule = self.config.rule
        batch, steps, height, width = frames.shape[:4]
        resized_height, resized_width = rule.resized(steps, height, width)
        x = frames.permute(0, 1, 4, 2, 3).flatten(0, 1).float()
        if (height, width) != (resized_height, resized_width):
            x = F.interpolate(x, size=(resized_height, resized_width), mode="bicubic", antialias=True)
            x = x.round().clamp(0, 255)  # the processor resizes uint8 frames
        mean = torch.tensor(rule.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(rule.image_std, device=x.device).view(1, 3, 1, 1)
        x = ((x / 255.0 - mean) / std).unflatten(0, (batch, steps))
        if pad := rule.padded_frames(steps) - steps:
            x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
        groups, rows, columns = rule.grid(steps, height, width)
        patch, merge, temporal = rule.patch_size, rule.merge_size, rule.temporal_patch_size
        x = x.view(batch, groups, temporal, 3, rows // merge, merge, patch, columns // merge, merge, patch)
        x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
        values = x.reshape(batch * groups * rows * columns, 3 * temporal * patch * patch)
        grid = torch.tensor([[groups, rows, columns]] * batch, device=frames.device)
        seconds = torch.zeros(batch) if clip_seconds is None else clip_seconds.float().cpu()
        return QwenPixels(values, grid, seconds * temporal / steps)

    def encode_video(self, pixels: QwenPixels) -> QwenVisual:
        """The clips' merged visual tokens (and Qwen3-VL's deepstack features)."""
        inner = self.hf.model
        values = pixels.values.to(inner.visual.dtype)
        out = inner.get_video_features(values, pixels.grid, return_dict=True)
        deepstack = getattr(out, "deepstack_features", None)
        if deepstack is not None:
            deepstack = [list(layer) for layer in deepstack]
        return QwenVisual(list(out.pooler_output), deepstack, pixels.grid, pixels.seconds_per_group)

    def mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (input_ids == self.hf.config.video_token_id).int() * 2

    def positions(self, input_ids: torch.Tensor, mask: torch.Tensor, visual: QwenVisual) -> torch.Tensor:
        """[3, B, S] M-RoPE positions of the rows, by the model's own get_rope_index (padding left at 0)."""
        extra = {}
        if self.config.backbone == "qwen2_5_vl":
            extra["second_per_grid_ts"] = visual.seconds_per_group.to(input_ids.device)
        positions, _ = self.hf.model.get_rope_index(
            input_ids.clamp(min=0),
            self.mm_token_type_ids(input_ids),
            video_grid_thw=visual.grid.to(input_ids.device),
            attention_mask=mask,
            **extra,
        )
        return positions

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

    def _run(self, input_ids, pixel_values, attention_mask, visual_tokens, head_layers, pack, cache=None):
        visual = self.encode_video(pixel_values) if visual_tokens is None else visual_tokens
        self._check(input_ids, visual)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if head_layers is not None and (self.config.action_types is None or head_layers not in HEAD_LAYERS):
            raise ValueError(f"head_layers {head_layers!r} needs action supervision and one of {HEAD_LAYERS}")
        embeds, positions = self.embed(input_ids), self.positions(input_ids, mask, visual)
        options = dict(use_cache=False, output_hidden_states=head_layers in ("first", "all"))
        if pack:  # the rows' real tokens in one sequence: text positions restart per row, M-RoPE positions as they are
            real = mask.bool()
            text = (mask.cumsum(-1) - 1)[real][None]
            packed = torch.cat([text[None], positions[:, real][:, None]], dim=0)
            out = self.hf.model(
                inputs_embeds=embeds[real][None],
                position_ids=packed,
                mm_encoder_outputs=visual.encoder_outputs(),
                video_grid_thw=visual.grid,
                **options,
            )
            hidden = unpack_rows(out.last_hidden_state, real)
            states = out.hidden_states and tuple(unpack_rows(h, real) for h in out.hidden_states)
        else:
            out = self.hf.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                mm_encoder_outputs=visual.encoder_outputs(),
                video_grid_thw=visual.grid,
                **options,
            )
            hidden, states = out.last_hidden_state, out.hidden_states
        action_logits = None
        if head_layers is not None:
            layers = [hidden] if head_layers == "last" else list(states[1:2] if head_layers == "first" else states[1:])
            action_logits = [self.read_heads(h, input_ids) for h in layers]
        return hidden, mask, action_logits

    def read_heads(self, hidden: torch.Tensor, input_ids: torch.Tensor):
        """Verb, noun and action logits from the hidden states at the action token(s) (three_tokens: one per head)."""
        is_action = input_ids == ACTION_TOKEN_INDEX
        count = self.config.action_tokens
        held = is_action.sum(1).tolist()
        if any(n != count for n in held):
            raise ValueError(f"rows hold {held} action tokens; each must hold {count}")
        place = is_action.nonzero()
        states = hidden[place[:, 0], place[:, 1]].view(input_ids.shape[0], count, -1)
        tokens = [states[:, i if count == 3 else 0] for i in range(3)]
        return self.verb_head(tokens[0]), self.noun_head(tokens[1]), self.action_head(tokens[2])

    def forward(
        self,
        input_ids,
        pixel_values,
        attention_mask=None,
        labels=None,
        *,
        visual_tokens=None,
        head_layers=None,
        pack=False,
    ) -> LlavaVideoOutput:
        """Training: the mean cross-entropy over the supervised tokens and their logits ([N, V] at the N supervised
        positions), and with head_layers the action heads' logits."""
        if labels is None:
            raise ValueError("forward trains on labels; use logits() or last_logits() without them")
        hidden, mask, action_logits = self._run(
            input_ids, pixel_values, attention_mask, visual_tokens, head_layers, pack
        )
        targets = labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        logits = self.hf.lm_head(hidden[:, :-1][supervised])
        loss = F.cross_entropy(logits.float(), targets[supervised]) if supervised.any() else hidden.sum() * 0.0
        return LlavaVideoOutput(
            logits=logits,
            loss=loss,
            hidden_states=hidden,
            attention_mask=mask,
            labels=labels,
            action_logits=action_logits,
        )

    def logits(self, input_ids, pixel_values, attention_mask=None, *, visual_tokens=None, pack=False) -> torch.Tensor:
        """[B, S, V] logits at every position."""
        hidden, _, _ = self._run(input_ids, pixel_values, attention_mask, visual_tokens, None, pack)
        return self.hf.lm_head(hidden)

    def last_logits(
        self, input_ids, pixel_values, attention_mask=None, *, visual_tokens=None, head_layers=None, pack=False
    ) -> LlavaVideoOutput:
        """Scoring: [B, V] logits at each row's last real position, and with head_layers the action heads' logits."""
        hidden, mask, action_logits = self._run(
            input_ids, pixel_values, attention_mask, visual_tokens, head_layers, pack
        )
        last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
        logits = self.hf.lm_head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        return LlavaVideoOutput(logits=logits, hidden_states=hidden, attention_mask=mask, action_logits=action_logits)

    @torch.no_grad()
    def generate(
        self,
        input_ids,
        pixel_values,
        attention_mask,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        visual_tokens=None,
        read_heads: bool = False,
    ) -> Generation:
        """Greedy decoding with a KV cache: the prompts (left-padded) through once, then one token per step at the
        next M-RoPE position of each row. read_heads: the action heads at the last layer from the prompt's pass."""
        ids, mask = left_padded(input_ids, attention_mask, pad_token_id)
        visual = self.encode_video(pixel_values) if visual_tokens is None else visual_tokens
        self._check(ids, visual)
        embeds, positions = self.embed(ids), self.positions(ids, mask, visual)
        following = positions.amax(dim=(0, 2)) + 1  # [B] each row's next position
        cache = DynamicCache(config=self.hf.config.text_config)
        answers: list[list[int]] = [[] for _ in range(len(ids))]
        done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        first_logits, action_logits = None, None
        encoder = visual.encoder_outputs()
        for step in range(max_new_tokens):
            out = self.hf.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                mm_encoder_outputs=encoder,
                video_grid_thw=visual.grid if step == 0 else None,
                cache=cache,
                use_cache=True,
            )
            hidden = out.last_hidden_state
            logits = self.hf.lm_head(hidden[:, -1])
            if first_logits is None:
                first_logits = logits.float()
                if read_heads:
                    action_logits = [self.read_heads(hidden, ids)]
            tokens = logits.argmax(-1)
            done |= tokens == eos_token_id
            for answer, token, finished in zip(answers, tokens.tolist(), done.tolist()):
                if not finished:
                    answer.append(token)
            if _on_every_rank(bool(done.all()), ids.device):
                break
            embeds = self.hf.get_input_embeddings()(tokens)[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = (following + step).view(1, -1, 1).expand(3, -1, 1)
            encoder = None
        return Generation(tokens=answers, first_logits=first_logits, action_logits=action_logits)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, config: QwenVLConfig | None = None, allow_missing: tuple[str, ...] = ()
    ) -> QwenVLModel:
        """A Qwen checkpoint folder (or hub id): the model by transformers' own loader, the action heads from
        action_heads.safetensors when the folder has them (allow_missing: heads the run adds start fresh)."""
        from safetensors.torch import load_file
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

        from llavaction.utils.hub import resolve

        folder = resolve(directory)
        config = config or QwenVLConfig.from_checkpoint(folder)
        cls_hf = (
            Qwen2_5_VLForConditionalGeneration if config.backbone == "qwen2_5_vl" else Qwen3VLForConditionalGeneration
        )
        hf_model = cls_hf.from_pretrained(
            str(folder), attn_implementation=config.attn_implementation, dtype=torch.float32
        )
        model = cls(config, hf_model)
        heads = folder / ACTION_HEADS_FILE
        if config.action_types is not None:
            if heads.exists():
                missing = model.load_state_dict(load_file(str(heads)), strict=False).missing_keys
                absent = [k for k in missing if k.startswith(ACTION_PARAMETERS)]
                if absent:
                    raise ValueError(f"{heads}: missing {absent}")
            elif not allow_missing:
                raise ValueError(f"{folder}: no {ACTION_HEADS_FILE} for the action supervision its config names")
        return model

    def save_pretrained(
        self, directory: str | Path, state: dict[str, torch.Tensor] | None = None, tokenizer=None
    ) -> None:
        """transformers' own layout (config.json, safetensors, the video processor config) that
        AutoModelForImageTextToText.from_pretrained loads and serving engines read, the action heads in their own
        file beside it (action_heads.safetensors, action_heads.json)."""
        import json

        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict() if state is None else state
        hf_state = {k[len("hf.") :]: v for k, v in state.items() if k.startswith("hf.")}
        self.hf.save_pretrained(str(directory), state_dict=hf_state)
        (directory / "video_preprocessor_config.json").write_text(json.dumps(processor_config(self.config), indent=2))
        extra = {"frame_size": self.config.frame_size}
        if self.config.action_types is not None:
            heads = {k: v.detach().contiguous().cpu() for k, v in state.items() if k.startswith(ACTION_PARAMETERS)}
            save_file(heads, str(directory / ACTION_HEADS_FILE), metadata={"format": "pt"})
            extra |= {
                "vision_supervision": self.config.vision_supervision,
                "action_types": list(self.config.action_types),
            }
        (directory / ACTION_HEADS_CONFIG).write_text(json.dumps(extra, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
