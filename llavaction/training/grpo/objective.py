"""Advantages and the GRPO losses over completion tokens, as flat tensors: each token's log-probability under the
policy being trained, at the rollout (old) and under the frozen reference, and the completion (row) it belongs to.

The clipped surrogate of a token with ratio r = exp(logp - old) and advantage A is -min(r A, clip(r, 1 - eps_low,
1 + eps_high) A) (PPO; the two epsilons as DAPO's clip-higher); GSPO clips one ratio a completion, exp(mean over its
tokens of logp - old). The KL term is the k3 estimator exp(ref - logp) - (ref - logp) - 1 (Schulman's, as TRL, verl
and Video-R1), added per token with weight beta before the tokens are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# added to the std that advantages are divided by (TRL's and Video-R1's 1e-4)
STD_EPSILON = 1e-4


def advantages(rewards: torch.Tensor, scale: str) -> torch.Tensor:
    """[Q, G] rewards -> [Q, G] advantages: the reward less its group's mean, divided by the group's std + 1e-4
    ('group'), the whole batch's std + 1e-4 ('batch') or not at all ('none'); stds are unbiased (torch.std, as TRL
    and Video-R1)."""
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "group":
        return centred / (rewards.std(dim=1, keepdim=True) + STD_EPSILON)
    if scale == "batch":
        return centred / (rewards.std() + STD_EPSILON)
    if scale == "none":
        return centred
    raise ValueError(f"scale_rewards {scale!r}: expected group, batch or none")


def zero_variance(rewards: torch.Tensor) -> torch.Tensor:
    """[Q, G] rewards -> [Q] bool: the groups whose rewards are all equal (no signal)."""
    return (rewards == rewards[:, :1]).all(dim=1)


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per token, the k3 estimate of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


@dataclass(frozen=True)
class CompletionTokens:
    """The completion tokens of R rows, flat.

    Args:
        logp: [T] each token's log-probability under the policy being trained (with its graph).
        old_logp: [T] under the policy that sampled it (the rollout's weights; detached).
        row: [T] long, the completion each token belongs to (0 .. R-1).
        rows: R.
        ref_logp: [T] under the frozen reference, None without one.
    """

    logp: torch.Tensor
    old_logp: torch.Tensor
    row: torch.Tensor
    rows: int
    ref_logp: torch.Tensor | None = None

    def per_row_mean(self, values: torch.Tensor) -> torch.Tensor:
        """[T] -> [R] each row's mean over its tokens."""
        total = values.new_zeros(self.rows).index_add(0, self.row, values)
        count = values.new_zeros(self.rows).index_add(0, self.row, torch.ones_like(values))
        return total / count.clamp(min=1)

    def lengths(self) -> torch.Tensor:
        return torch.bincount(self.row, minlength=self.rows)


@dataclass
class LossTerms:
    """The loss and what is logged of it (over the rows kept)."""

    loss: torch.Tensor
    kl: torch.Tensor  # mean k3 over the kept tokens (0 without a reference)
    clip_fraction: torch.Tensor  # share of kept tokens (GSPO: completions) whose ratio is clipped against A


def grpo_loss(
    tokens: CompletionTokens,
    advantage: torch.Tensor,
    kept: torch.Tensor,
    loss: str,
    clip: tuple[float, float],
    beta: float = 0.0,
    token_total: float | None = None,
    row_total: float | None = None,
) -> LossTerms:
    """The loss of one update over the kept rows ([R] bool) with their advantages ([R]).

    'token': the clipped term (+ beta k3) summed over the kept rows' tokens, divided by their number (DAPO);
    'sequence': each kept row's token mean, then the mean over kept rows (GRPO, Video-R1); 'gspo': one clipped term
    a kept row on its sequence-level ratio, + beta x its mean k3, then the mean over kept rows. token_total /
    row_total replace the denominators (the global counts over the world size, so that gradients averaged over ranks
    are the global mean, as TRL's 'dapo' loss); the figures logged are this batch's own means."""
    low, high = clip
    advantage = advantage.float()
    kept_tokens = kept[tokens.row]
    log_ratio = tokens.logp.float() - tokens.old_logp.float()
    kl = k3(tokens.logp.float(), tokens.ref_logp.float()) if tokens.ref_logp is not None else None
    if loss == "gspo":
        ratio = torch.exp(tokens.per_row_mean(log_ratio))
        terms = _clipped(ratio, advantage, low, high)
        if kl is not None:
            terms = terms + beta * tokens.per_row_mean(kl)
        clipped = _clipped_against(ratio, advantage, low, high)[kept]
    else:
        per_token_advantage = advantage[tokens.row]
        terms = _clipped(torch.exp(log_ratio), per_token_advantage, low, high)
        if kl is not None:
            terms = terms + beta * kl
        clipped = _clipped_against(torch.exp(log_ratio), per_token_advantage, low, high)[kept_tokens]
        if loss == "sequence":
            terms = tokens.per_row_mean(terms)
    # nothing kept anywhere (every group skipped): a loss of 0 whose gradient is 0
    if loss == "token":
        denominator = (token_total or 1.0) if token_total is not None else kept_tokens.sum().clamp(min=1)
        value = terms[kept_tokens].sum() / denominator
    elif loss in ("sequence", "gspo"):
        denominator = (row_total or 1.0) if row_total is not None else kept.sum().clamp(min=1)
        value = terms[kept].sum() / denominator
    else:
        raise ValueError(f"loss {loss!r}: expected token, sequence or gspo")
    kl_mean = kl[kept_tokens].mean() if kl is not None and kept_tokens.any() else torch.zeros(())
    fraction = clipped.float().mean() if clipped.numel() else torch.zeros(())
    return LossTerms(value, kl_mean.detach(), fraction.detach())


def _clipped(ratio: torch.Tensor, advantage: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """-min(r A, clip(r, 1 - low, 1 + high) A)."""
    return -torch.minimum(ratio * advantage, ratio.clamp(1.0 - low, 1.0 + high) * advantage)


def _clipped_against(ratio: torch.Tensor, advantage: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Where the clip takes the gradient away: r < 1 - low with A < 0, or r > 1 + high with A > 0 (TRL's
    clip_ratio/low and /high)."""
    return ((ratio < 1.0 - low) & (advantage < 0)) | ((ratio > 1.0 + high) & (advantage > 0))
