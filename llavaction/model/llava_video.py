"""The LLaVA-Video architecture from transformers parts: SigLIP (last layer removed) -> mlp2x_gelu projector ->
per-frame 2x2 pooling -> newline tokens -> spliced into the prompt of a Qwen2 LLM at the image placeholder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel
from transformers.utils import is_flash_attn_2_available

from llavaction.model.config import LlavaVideoConfig
from llavaction.utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

HEAD_LAYERS = ("last", "first", "all")
ACTION_PARAMETERS = ("action_supervision", "verb_head", "noun_head", "action_head")


@dataclass
class LlavaVideoOutput:
    logits: torch.Tensor | None  # [N, V] at the N supervised positions (forward), or [B, V] (last_logits)
    loss: torch.Tensor | None = None  # mean cross-entropy over the supervised tokens
    hidden_states: torch.Tensor | None = None  # [B, S, D] last-layer hidden states of the spliced sequence
    attention_mask: torch.Tensor | None = None  # [B, S] of the spliced sequence
    labels: torch.Tensor | None = None  # [B, S] of the spliced sequence
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None  # per head layer: verb, noun,
    # action logits [B, classes] read at the action token(s); None without action supervision


@dataclass
class _Run:
    """What one pass of the LLM over spliced sequences gives the entry points."""

    hidden: torch.Tensor  # [B, S, D] last-layer hidden states
    labels: torch.Tensor | None  # [B, S] spliced labels
    output: LlavaVideoOutput  # everything but logits and loss


@dataclass
class Generation:
    tokens: list[list[int]]  # each row's new tokens, without eos
    first_logits: torch.Tensor  # [B, V] float logits of the first answer token (the letter of an MQA answer)
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None  # last layer's heads


def left_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int):
    """Right-padded rows moved to the right end (left padding, as cached decoding appends to every row): ids, mask."""
    rows = [ids[mask.bool()] for ids, mask in zip(input_ids, attention_mask)]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_token_id, device=input_ids.device, dtype=input_ids.dtype)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = row
        mask[i, length - len(row) :] = 1
    return ids, mask


def check_attention(implementation: str) -> None:
    """Fail early and clearly when flash-attn is asked for but cannot run."""
    if implementation != "flash_attention_2":
        return
    if not torch.cuda.is_available():
        raise ValueError("attn_implementation='flash_attention_2' needs a CUDA GPU; use 'sdpa' on this machine")
    if not is_flash_attn_2_available():
        raise ValueError("attn_implementation='flash_attention_2' needs flash-attn: pip install 'llavaction[gpu]'")


class LlavaVideoModel(nn.Module):
    """Each row of input_ids holds IMAGE_TOKEN_INDEX once; the visual tokens of its T frames (pixel_values
    [B, T, 3, H, W]) replace it. Entry points: forward (training: loss and supervised logits), logits (every
    position), last_logits (scoring: the next token after each prompt), generate (greedy answers)."""

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
        if config.action_types is not None:  # LLaVAction's action supervision: loaded and saved with the checkpoint
            if config.action_tokens:
                self.action_supervision = nn.Parameter(torch.randn(config.action_tokens, width) * width**-0.5)
            self.verb_head, self.noun_head, self.action_head = (
                nn.Linear(width, size, bias=False) for size in config.action_types
            )
            self.init_action_supervision()

    def init_action_supervision(self) -> None:
        """Action tokens start like word embeddings (same scale), heads like the LLM's other projections."""
        std = self.llm.config.initializer_range
        with torch.no_grad():
            if hasattr(self, "action_supervision"):
                embeddings = self.llm.get_input_embeddings().weight
                self.action_supervision.copy_(torch.randn_like(self.action_supervision) * embeddings.std())
            for head in (self.verb_head, self.noun_head, self.action_head):
                head.weight.normal_(0.0, std)

    @classmethod
    def from_pretrained(cls, directory: str | Path, strict: bool = True, **overrides) -> LlavaVideoModel:
        """Load an original LLaVA-Video / LLaVAction checkpoint directory (config.json + *.safetensors)."""
        from llavaction.model.checkpoint import load_original

        return load_original(cls, Path(directory), strict=strict, **overrides)

    def save_pretrained(self, directory: str | Path, max_shard_bytes: int = 5 * 2**30) -> None:
        """Write the original layout: config.json and model.safetensors (sharded with an index when large)."""
        from llavaction.model.checkpoint import save_original

        save_original(self, Path(directory), max_shard_bytes=max_shard_bytes)

    def parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        """The model's parts by the names every backbone shares: the vision tower, the projector (with the newline
        vector), the LLM and the action heads."""
        return {
            "vision_tower": [self.vision_tower],
            "projector": [self.projector, self.image_newline],
            "llm": [self.llm],
            "action_heads": [getattr(self, n) for n in ACTION_PARAMETERS if hasattr(self, n)],
        }

    def preprocess(self, frames: torch.Tensor, clip_seconds: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] frames -> pixel_values [B, T, 3, S, S]: resized to the tower's size if needed
        (bilinear, antialiased) and normalised with the tower's mean and std (clip_seconds: unused here)."""
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

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        visual_tokens: torch.Tensor | None = None,
        head_layers: str | None = None,
        pack: bool = False,
    ) -> LlavaVideoOutput:
        """Training: the mean cross-entropy over the supervised tokens and their logits ([N, V] at the N supervised
        positions: no [S, V] logits for the rest), and with head_layers the action heads' logits."""
        if labels is None:
            raise ValueError("forward trains on labels; use logits() or last_logits() without them")
        run = self._run(input_ids, pixel_values, attention_mask, labels, visual_tokens, head_layers, pack)
        head, labels = self.llm.get_output_embeddings(), run.labels
        targets = labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        logits = head(run.hidden[:, :-1][supervised])
        # a batch without supervised tokens (all padding) still gives a loss in the graph of every parameter used
        loss = F.cross_entropy(logits.float(), targets[supervised]) if supervised.any() else run.hidden.sum() * 0.0
        return replace(run.output, logits=logits, loss=loss)

    def logits(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        *,
        visual_tokens: torch.Tensor | None = None,
        pack: bool = False,
    ) -> torch.Tensor:
        """[B, S, V] logits at every position of the spliced sequences."""
        run = self._run(input_ids, pixel_values, attention_mask, None, visual_tokens, None, pack)
        return self.llm.get_output_embeddings()(run.hidden)

    def last_logits(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        *,
        visual_tokens: torch.Tensor | None = None,
        head_layers: str | None = None,
        pack: bool = False,
    ) -> LlavaVideoOutput:
        """Scoring: [B, V] logits at each row's last real position (the next token after a prompt), and with
        head_layers the action heads' logits."""
        run = self._run(input_ids, pixel_values, attention_mask, None, visual_tokens, head_layers, pack)
        mask, hidden = run.output.attention_mask, run.hidden
        last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
        logits = self.llm.get_output_embeddings()(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        return replace(run.output, logits=logits)

    def _run(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        visual_tokens: torch.Tensor | None,
        head_layers: str | None,
        pack: bool,
    ) -> _Run:
        """The LLM over the spliced sequences: the last layer's hidden states, and the heads read at head_layers.
        visual_tokens: encode_video's output for these rows, to reuse it (several prompts about one clip); pixel_values
        is then ignored. pack: the rows' real tokens concatenated into one sequence, positions restarting per row, so
        no padding is computed; transformers then keeps attention within each row (a block-diagonal mask with
        sdpa/eager, variable-length kernels with flash-attn); outputs are laid out as without packing."""
        if visual_tokens is None:
            if pixel_values is None or pixel_values.dim() != 5:
                raise ValueError(f"pixel_values must be [B, T, 3, H, W], got {getattr(pixel_values, 'shape', None)}")
            visual_tokens = self.encode_video(pixel_values)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if head_layers is not None and (self.config.action_types is None or head_layers not in HEAD_LAYERS):
            raise ValueError(f"head_layers {head_layers!r} needs action supervision and one of {HEAD_LAYERS}")
        embeds, mask, labels = self.splice(input_ids, visual_tokens, attention_mask, labels)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep_layers = head_layers in ("first", "all")
        # No KV cache: the model's config asks for one, which would keep every layer's keys and values alive.
        options = dict(use_cache=False, output_hidden_states=keep_layers)
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
            # hidden_states[0] is the input embeddings; [i] the output of decoder layer i
            layers = [hidden] if head_layers == "last" else list(states[1:2] if head_layers == "first" else states[1:])
            action_logits = [self.read_heads(h, input_ids, visual_tokens.shape[1]) for h in layers]
        output = LlavaVideoOutput(
            logits=None, hidden_states=hidden, attention_mask=mask, labels=labels, action_logits=action_logits
        )
        return _Run(hidden, labels, output)

    def read_heads(self, hidden: torch.Tensor, input_ids: torch.Tensor, num_visual: int):
        """Verb, noun and action logits from the hidden states at the action token(s): the learned tokens that end
        the visual tokens (three_tokens: one per head), or the last newline token ("newline")."""
        place = (input_ids == IMAGE_TOKEN_INDEX).int().argmax(1)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        count = max(1, self.config.action_tokens)
        # the newline mode reads the closing newline itself; action tokens sit before it
        first = place + num_visual - count - (self.config.closing_tokens if self.config.action_tokens else 0)
        tokens = [hidden[rows, first + (i if count == 3 else 0)] for i in range(3)]
        return self.verb_head(tokens[0]), self.noun_head(tokens[1]), self.action_head(tokens[2])

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        visual_tokens: torch.Tensor | None = None,
        read_heads: bool = False,
    ) -> Generation:
        """Greedy decoding with a KV cache: the clips and prompts (left-padded) go through once, then one token per
        step. visual_tokens: encode_video's output for these rows (pixel_values is then ignored). read_heads: also
        read the action heads at the last layer from the prompt's pass (needs action supervision)."""
        ids, mask = left_padded(input_ids, attention_mask, pad_token_id)
        visual = self.encode_video(pixel_values) if visual_tokens is None else visual_tokens
        embeds, mask = self.splice(ids, visual, mask, None)[:2]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.llm.config)
        head, embed = self.llm.get_output_embeddings(), self.llm.get_input_embeddings()
        answers: list[list[int]] = [[] for _ in range(len(ids))]
        done = torch.zeros(len(ids), dtype=torch.bool, device=input_ids.device)
        first_logits, action_logits = None, None
        for _ in range(max_new_tokens):
            hidden = self.llm.model(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
            ).last_hidden_state
            logits = head(hidden[:, -1])
            if first_logits is None:
                first_logits = logits.float()
                if read_heads:
                    action_logits = [self.read_heads(hidden, ids, visual.shape[1])]
            tokens = logits.argmax(-1)
            done |= tokens == eos_token_id
            for answer, token, finished in zip(answers, tokens.tolist(), done.tolist()):
                if not finished:
                    answer.append(token)
            if _on_every_rank(bool(done.all()), input_ids.device):
                break
            embeds = embed(tokens)[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
        return Generation(tokens=answers, first_logits=first_logits, action_logits=action_logits)


def unpack_rows(packed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[1, N, d] states of the packed real tokens -> [B, S, d] in the rows' own layout (zeros at padding); real is the
    [B, S] mask of real tokens (N of them)."""
    return packed.new_zeros(*real.shape, packed.shape[-1]).index_put((real,), packed[0])


def _on_every_rank(flag: bool, device: torch.device) -> bool:
    """True when the flag holds on every rank: sharded models must run the same forwards on all ranks."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return flag
    value = torch.tensor(int(flag), device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value)
