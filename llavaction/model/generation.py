"""The one generation loop of every family: the prompts (left-padded) through the LLM once with a KV cache, then one
token a step, greedy or sampled. A family supplies the prompt pass's inputs (`prefill`), one LLM pass
(`decoder_pass`), token embeddings and the output head; the loop is the same for all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llavaction.utils.checks import check_count, check_range


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen.

    Args:
        temperature: 0 chooses the most likely token (greedy); above 0 samples from the softmax of logits/temperature.
        top_p: sample from the smallest set of most likely tokens whose probability reaches top_p (1: all).
        top_k: sample from the k most likely tokens (0: all).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        check_range("temperature", self.temperature, 0.0)
        check_range("top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0.0:
            raise ValueError("top_p 0 keeps no token: use a value in (0, 1]")
        check_count("top_k", self.top_k, minimum=0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def choose(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, V] logits -> [B] chosen token ids."""
        if self.greedy:
            return logits.argmax(-1)
        scores = logits.float() / self.temperature
        if self.top_k:
            kth = scores.topk(min(self.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = scores.sort(dim=-1, descending=True)
            before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # mass of the tokens ranked above
            ordered = ordered.masked_fill(before >= self.top_p, float("-inf"))
            scores = scores.scatter(-1, order, ordered)
        probabilities = scores.softmax(-1)
        if generator is not None and generator.device != probabilities.device:
            return torch.multinomial(probabilities.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


GREEDY = Sampling()


@dataclass
class Generation:
    """What generation gives: each row's new tokens (without the end token), the first step's logits (an MQA answer's
    letter) and, when asked, the action heads read at the last layer from the prompt pass."""

    tokens: list[list[int]]
    first_logits: torch.Tensor  # [B, V] float
    action_logits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None


@dataclass
class Prefill:
    """A family's inputs of the prompt pass and how positions continue.

    Args:
        embeds: [B, S, D] the left-padded prompts' input embeddings (visual tokens in place).
        mask: [B, S] 1 on real tokens.
        positions: the prompt's position ids as the LLM takes them ([B, S], or M-RoPE's [3, B, S]).
        next_positions: step -> the position ids of the token generated at that step (0: the first).
        first_pass: extra arguments of the prompt pass only (visual features the LLM adds at its layers).
        read_heads: the prompt pass's last hidden states [B, S, D] -> the action heads' logits.
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    next_positions: Callable[[int], torch.Tensor]
    first_pass: dict = field(default_factory=dict)
    read_heads: Callable[[torch.Tensor], tuple] | None = None


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


def on_every_rank(flag: bool, device: torch.device) -> bool:
    """True when the flag holds on every rank: sharded models must run the same forwards on all ranks."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return flag
    value = torch.tensor(int(flag), device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    visual,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    read_heads: bool = False,
    sampling: Sampling = GREEDY,
    generator: torch.Generator | None = None,
) -> Generation:
    """Decode up to max_new_tokens per row with a KV cache (model: a VideoLM with prefill, decoder_pass, embed_tokens,
    output_head, new_cache). A row stops at eos_token_id; the loop stops when every row of every rank has."""
    check_count("max_new_tokens", max_new_tokens, minimum=1)
    ids, mask = left_padded(input_ids, attention_mask, pad_token_id)
    start = model.prefill(ids, mask, visual)
    embeds, mask, positions, extra = start.embeds, start.mask, start.positions, start.first_pass
    cache = model.new_cache()
    answers: list[list[int]] = [[] for _ in range(len(ids))]
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    first_logits, action_logits = None, None
    for step in range(max_new_tokens):
        hidden = model.decoder_pass(embeds, mask, positions, cache, **extra)
        logits = model.output_head(hidden[:, -1])
        if first_logits is None:
            first_logits = logits.float()
            if read_heads:
                action_logits = [start.read_heads(hidden)]
        tokens = sampling.choose(logits, generator)
        done |= tokens == eos_token_id
        for answer, token, finished in zip(answers, tokens.tolist(), done.tolist()):
            if not finished:
                answer.append(token)
        if on_every_rank(bool(done.all()), ids.device):
            break
        embeds = model.embed_tokens(tokens)[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions, extra = start.next_positions(step), {}
    return Generation(tokens=answers, first_logits=first_logits, action_logits=action_logits)
