"""Rollouts: G completions of each question sampled by the model's own KV-cached generation loop (every family), the
clip's visual tokens encoded once and indexed for its G rows; the completions' token log-probabilities by the
model's training forward over prompt + completion rows; the generator seeded from (seed, optimizer step, rank)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from llavaction.data.batch import Batch
from llavaction.model.generation import Sampling
from llavaction.prompts.encoding import pad_right
from llavaction.prompts.tasks import answer_text
from llavaction.training.grpo.options import RolloutOptions
from llavaction.utils.constants import IGNORE_INDEX


def rollout_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of one training step's rollouts on one rank: seeded from (seed, optimizer step, rank) alone, so
    a run resumed at a step samples what the uninterrupted run sampled there (no state to checkpoint)."""
    digest = hashlib.sha256(f"grpo-rollouts:{seed}:{step}:{rank}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@dataclass
class Drawn:
    """Completions drawn for some rows: each one's new tokens (without the end token) and whether it ended with the
    end token (otherwise max_new_tokens cut it)."""

    tokens: list[list[int]]
    ended: list[bool]


@dataclass(frozen=True)
class TextSampling(Sampling):
    """Sampling that never draws the banned token ids."""

    banned: tuple[int, ...] = ()

    def choose(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return super().choose(without(logits, self.banned), generator)


def without(logits: torch.Tensor, banned: tuple[int, ...]) -> torch.Tensor:
    """[..., V] logits with the banned ids at -inf."""
    if not banned:
        return logits
    return logits.index_fill(-1, torch.tensor(banned, device=logits.device), float("-inf"))


def banned_ids(tokenizer, eos: int) -> tuple[int, ...]:
    """The tokenizer's special tokens but the end of turn: a completion holding one (a vision placeholder, a turn's
    start) would not read back as the text it decodes to, so rollouts never draw them and the loss scores the
    completions under the same distribution."""
    return tuple(sorted(i for i, token in tokenizer.added_tokens_decoder.items() if token.special and i != eos))


class Sampler:
    """Samples completions of a batch's prompts with the model's generate (special tokens but the end of turn never
    drawn: banned_ids)."""

    encodes = True  # draws from the clips' visual tokens, which the caller encodes

    def __init__(self, tokenizer, options: RolloutOptions):
        self.tokenizer, self.options = tokenizer, options
        self.eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        self.pad = tokenizer.pad_token_id
        self.banned = banned_ids(tokenizer, self.eos)
        self.sampling = TextSampling(options.temperature, options.top_p, options.top_k, banned=self.banned)

    def draw(self, model, batch: Batch, visual, questions: list[int], generator: torch.Generator) -> Drawn:
        """One completion for each entry of `questions` (row numbers of the batch, repeated for a group), from the
        clips' visual tokens `visual` (encode_video of the batch's clips)."""
        index = torch.tensor(questions, device=batch.input_ids.device)
        out = model.generate(
            batch.input_ids[index],
            None,
            batch.attention_mask[index],
            visual_tokens=visual[index],
            max_new_tokens=self.options.max_new_tokens,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            sampling=self.sampling,
            generator=generator,
        )
        # fewer tokens than the limit: the end token stopped it (one generated at the last step is not kept either)
        return Drawn(out.tokens, [len(t) < self.options.max_new_tokens for t in out.tokens])

    def serve(self, module) -> None:
        """Nothing: the model being trained samples its own completions (an engine's sampler loads its weights)."""

    def close(self) -> None:
        """Nothing to stop (an engine's sampler stops its engine)."""

    def decode(self, tokens: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]


def prompt_ids(batch: Batch) -> list[list[int]]:
    """Each batch row's prompt ids (its real tokens)."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask)]


def completion_rows(
    prompts: list[list[int]], completions: list[list[int]], ended: list[bool], eos: int, pad: int
) -> dict[str, torch.Tensor]:
    """Rows of prompt + completion (+ the end token where it ended so), labels on the completion and its end token:
    what the training forward gives the log-probabilities of."""
    rows = []
    for prompt, tokens, end in zip(prompts, completions, ended):
        answer = list(tokens) + ([eos] if end else [])
        rows.append((list(prompt) + answer, [IGNORE_INDEX] * len(prompt) + answer))
    return pad_right(rows, pad)


def supervised_rows(tokenizer, batch: Batch, eos: int) -> dict[str, torch.Tensor]:
    """Each batch row's prompt + its ground-truth answer ('B. open drawer') + the end token, labels on the answer: the
    supervised loss a GRPO stage may mix in."""
    answers = [tokenizer(answer_text(meta, "mqa"), add_special_tokens=False)["input_ids"] for meta in batch.meta]
    rows = completion_rows(prompt_ids(batch), answers, [True] * len(answers), eos, tokenizer.pad_token_id)
    return {k: v.to(batch.input_ids.device) for k, v in rows.items()}


@dataclass
class TokenScores:
    """Per completion token (flat over the rows): its log-probability at the rollout temperature, the row it belongs
    to, and the entropy of the distribution it was drawn from (detached)."""

    logp: torch.Tensor
    row: torch.Tensor
    entropy: torch.Tensor


def token_scores(
    model, rows: dict[str, torch.Tensor], visual, temperature: float, pack: bool = False, banned: tuple[int, ...] = ()
) -> TokenScores:
    """The completion tokens' log-probabilities by the model's training forward (logits at the supervised positions
    only), the logits divided by the sampling temperature as the tokens were drawn (as TRL and verl do) and the
    banned ids left out as the sampler leaves them out."""
    out = model(rows["input_ids"], None, rows["attention_mask"], rows["labels"], visual_tokens=visual, pack=pack)
    targets = out.labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    log_probs = (without(out.logits.float(), banned) / temperature).log_softmax(-1)
    logp = log_probs.gather(1, targets[supervised][:, None]).squeeze(1)
    with torch.no_grad():
        entropy = torch.special.entr(log_probs.exp()).sum(-1)  # -p log p, 0 where p is 0 (the banned ids)
    return TokenScores(logp, supervised.nonzero()[:, 0], entropy)
