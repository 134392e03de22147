"""What every family's model shares: LLaVAction's action token(s) and verb, noun and action heads, the LM loss at the
supervised positions, the four entry points (forward, logits, last_logits, generate) over one family-specific LLM
pass (`run`), and the generation loop (model/generation.py). A family implements preprocess, encode_video, run,
prefill, decoder_pass, embed_tokens, output_head, new_cache and parts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import is_flash_attn_2_available

from llavaction.model.generation import GREEDY, Generation, Sampling, generate
from llavaction.utils.constants import IGNORE_INDEX

HEAD_LAYERS = ("last", "first", "all")
ACTION_PARAMETERS = ("action_supervision", "verb_head", "noun_head", "action_head")


@dataclass
class ModelOutput:
    """What the entry points return.

    Args:
        logits: [N, V] at the N supervised positions (forward), or [B, V] (last_logits).
        loss: mean cross-entropy over the supervised tokens (forward).
        hidden_states: [B, S, D] last-layer hidden states of the sequence the LLM read.
        attention_mask: [B, S] of that sequence.
        labels: [B, S] of that sequence (the input labels laid out as the LLM read them).
        action_logits: per head layer read, the verb, noun and action logits [B, classes] at the action token(s);
            None without action supervision.
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None


@dataclass
class Run:
    """One LLM pass over prompts with their clips: the last layer's hidden states [B, S, D], the mask and labels of
    the sequence read, and the action heads' logits at the layers asked."""

    hidden: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor | None
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None


def check_attention(implementation: str) -> None:
    """Fail early and clearly when flash-attn is asked for but cannot run."""
    if implementation != "flash_attention_2":
        return
    if not torch.cuda.is_available():
        raise ValueError("attn_implementation='flash_attention_2' needs a CUDA GPU; use 'sdpa' on this machine")
    if not is_flash_attn_2_available():
        raise ValueError("attn_implementation='flash_attention_2' needs flash-attn: pip install 'llavaction[gpu]'")


def check_head_layers(config, head_layers: str | None) -> None:
    if head_layers is not None and (config.action_types is None or head_layers not in HEAD_LAYERS):
        raise ValueError(f"head_layers {head_layers!r} needs action supervision and one of {HEAD_LAYERS}")


def layers_read(head_layers: str, hidden: torch.Tensor, states: tuple | None) -> list[torch.Tensor]:
    """The hidden states the heads read: the last layer's, the first decoder layer's output, or every layer's
    (states[0] is the input embeddings; states[i] the output of decoder layer i)."""
    if head_layers == "last":
        return [hidden]
    return list(states[1:2] if head_layers == "first" else states[1:])


def unpack_rows(packed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[1, N, d] states of the packed real tokens -> [B, S, d] in the rows' own layout (zeros at padding); real is the
    [B, S] mask of real tokens (N of them)."""
    return packed.new_zeros(*real.shape, packed.shape[-1]).index_put((real,), packed[0])


class VideoLanguageModel(nn.Module):
    """The shared part of every family's model (module docstring)."""

    config: object

    def add_action_supervision(self, width: int) -> None:
        """The learned action token(s) and the verb, noun and action heads the config asks for (none without action
        supervision); saved and loaded with the model."""
        if self.config.action_types is None:
            return
        if self.config.action_tokens:
            self.action_supervision = nn.Parameter(torch.randn(self.config.action_tokens, width) * width**-0.5)
        self.verb_head, self.noun_head, self.action_head = (
            nn.Linear(width, size, bias=False) for size in self.config.action_types
        )
        self.init_action_supervision()

    def init_action_supervision(self) -> None:
        """Action tokens start at the scale of word embeddings, heads like the LLM's other projections."""
        embeddings = self.embedding_layer().weight
        with torch.no_grad():
            if hasattr(self, "action_supervision"):
                self.action_supervision.copy_(torch.randn_like(self.action_supervision) * self.token_scale(embeddings))
            for head in (self.verb_head, self.noun_head, self.action_head):
                head.weight.normal_(0.0, self.initializer_range())

    def token_scale(self, embeddings: torch.Tensor) -> float | torch.Tensor:
        """The standard deviation new action tokens start with."""
        return embeddings.std()

    def action_head_parameters(self) -> list[nn.Module | nn.Parameter]:
        return [getattr(self, name) for name in ACTION_PARAMETERS if hasattr(self, name)]

    def heads_at(self, hidden: torch.Tensor, places: torch.Tensor):
        """Verb, noun and action logits from the hidden states at the action token(s): places [B, count] (three
        tokens: one a head; one token serves all three)."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        states = hidden[rows, places]  # [B, count, D]
        tokens = [states[:, i if places.shape[1] == 3 else 0] for i in range(3)]
        return self.verb_head(tokens[0]), self.noun_head(tokens[1]), self.action_head(tokens[2])

    def visual_of(self, pixel_values, visual_tokens):
        """encode_video's output for the rows: given (several prompts about one clip reuse it), or computed."""
        return self.encode_video(pixel_values) if visual_tokens is None else visual_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        visual_tokens=None,
        head_layers: str | None = None,
        pack: bool = False,
    ) -> ModelOutput:
        """Training: the mean cross-entropy over the supervised tokens and their logits ([N, V] at the N supervised
        positions: no [S, V] logits for the rest), and with head_layers the action heads' logits. visual_tokens:
        encode_video's output for these rows (pixel_values is then ignored). pack: the rows' real tokens in one
        sequence, attention kept within each row (no compute on padding)."""
        if labels is None:
            raise ValueError("forward trains on labels; use logits() or last_logits() without them")
        visual = self.visual_of(pixel_values, visual_tokens)
        run = self.run(input_ids, visual, attention_mask, labels, head_layers, pack)
        targets = run.labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        logits = self.output_head(run.hidden[:, :-1][supervised])
        # a batch without supervised tokens (all padding) still gives a loss in the graph of every parameter used
        loss = F.cross_entropy(logits.float(), targets[supervised]) if supervised.any() else run.hidden.sum() * 0.0
        return ModelOutput(logits, loss, run.hidden, run.mask, run.labels, run.action_logits)

    def logits(
        self, input_ids: torch.Tensor, pixel_values, attention_mask=None, *, visual_tokens=None, pack: bool = False
    ) -> torch.Tensor:
        """[B, S, V] logits at every position of the sequences the LLM reads."""
        visual = self.visual_of(pixel_values, visual_tokens)
        return self.output_head(self.run(input_ids, visual, attention_mask, None, None, pack).hidden)

    def last_logits(
        self,
        input_ids: torch.Tensor,
        pixel_values,
        attention_mask=None,
        *,
        visual_tokens=None,
        head_layers: str | None = None,
        pack: bool = False,
    ) -> ModelOutput:
        """Scoring: [B, V] logits at each row's last real position (the next token after a prompt), and with
        head_layers the action heads' logits."""
        visual = self.visual_of(pixel_values, visual_tokens)
        run = self.run(input_ids, visual, attention_mask, None, head_layers, pack)
        last = run.mask.shape[1] - 1 - run.mask.flip(1).int().argmax(1)
        rows = torch.arange(run.hidden.shape[0], device=run.hidden.device)
        logits = self.output_head(run.hidden[rows, last])
        return ModelOutput(logits, None, run.hidden, run.mask, run.labels, run.action_logits)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        visual_tokens=None,
        read_heads: bool = False,
        sampling: Sampling = GREEDY,
        generator: torch.Generator | None = None,
    ) -> Generation:
        """Answers by the shared KV-cached loop (greedy unless `sampling` says otherwise). visual_tokens:
        encode_video's output for these rows (pixel_values is then ignored). read_heads: also read the action heads
        at the last layer from the prompt's pass (needs action supervision)."""
        visual = self.visual_of(pixel_values, visual_tokens)
        return generate(
            self,
            input_ids,
            attention_mask,
            visual,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            read_heads=read_heads,
            sampling=sampling,
            generator=generator,
        )
