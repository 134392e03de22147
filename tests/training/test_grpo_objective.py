"""The GRPO stage's arithmetic against hand-computed values: advantages each way, each loss form with clipping at both
epsilons and the k3 term, the gradient as the policy-gradient estimator it stands for, and a seeded toy task whose
reward rises."""

import math

import pytest
import torch

from llavaction.training.grpo.objective import CompletionTokens, advantages, grpo_loss, k3, zero_variance
from llavaction.training.grpo.options import CLIP_DEFAULTS, ObjectiveOptions

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])


def test_advantages_by_group_by_batch_and_unscaled():
    group_std = math.sqrt(1 / 3)  # [1, 0, 0, 1]: squared deviations 4 x 0.25, over 3
    expected = torch.tensor([[1, -1, -1, 1], [0, 0, 0, 0]]) * 0.5 / (group_std + 1e-4)
    assert torch.allclose(advantages(REWARDS, "group"), expected)
    batch_std = math.sqrt(1.5 / 7)  # mean 0.25 over 8: 2 x 0.75^2 + 6 x 0.25^2 = 1.5, over 7
    centred = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]])
    assert torch.allclose(advantages(REWARDS, "batch"), centred / (batch_std + 1e-4))
    assert torch.allclose(advantages(REWARDS, "none"), centred)
    assert zero_variance(REWARDS).tolist() == [False, True]
    with pytest.raises(ValueError, match="scale_rewards"):
        advantages(REWARDS, "std")


def example(ref: bool = False) -> CompletionTokens:
    """Two completions: row 0 of two tokens with ratios 1.5 and 1.0, row 1 of one token with ratio 0.5."""
    old = torch.log(torch.tensor([0.2, 0.4, 0.4]))
    logp = torch.log(torch.tensor([0.3, 0.4, 0.2])).requires_grad_()
    reference = logp.detach() + torch.tensor([0.0, math.log(2.0), 0.0]) if ref else None
    return CompletionTokens(logp, old, torch.tensor([0, 0, 1]), 2, reference)


ADVANTAGE = torch.tensor([1.0, -1.0])
DAPO = (0.2, 0.28)


def test_token_loss_clips_at_both_epsilons():
    # token 0: r 1.5 > 1.28 with A > 0: clipped to 1.28 -> -1.28; token 1: r 1 -> -1; token 2: r 0.5 < 0.8 with A < 0:
    # min(-0.5, -0.8) = -0.8 -> +0.8
    terms = grpo_loss(example(), ADVANTAGE, torch.tensor([True, True]), "token", DAPO)
    assert terms.loss.item() == pytest.approx((-1.28 - 1.0 + 0.8) / 3)
    assert terms.clip_fraction.item() == pytest.approx(2 / 3) and terms.kl.item() == 0
    kept = grpo_loss(example(), ADVANTAGE, torch.tensor([True, False]), "token", DAPO)
    assert kept.loss.item() == pytest.approx((-1.28 - 1.0) / 2)  # the skipped row out of the sum and the count
    assert kept.clip_fraction.item() == pytest.approx(1 / 2)
    wider = grpo_loss(example(), ADVANTAGE, torch.tensor([True, True]), "token", (0.6, 0.6))
    assert wider.loss.item() == pytest.approx((-1.5 - 1.0 + 0.5) / 3) and wider.clip_fraction.item() == 0
    given = grpo_loss(example(), ADVANTAGE, torch.tensor([True, True]), "token", DAPO, token_total=6.0)
    assert given.loss.item() == pytest.approx((-1.28 - 1.0 + 0.8) / 6)  # the global count over the world size


def test_sequence_loss_is_the_mean_of_each_completions_token_mean():
    terms = grpo_loss(example(), ADVANTAGE, torch.tensor([True, True]), "sequence", DAPO)
    assert terms.loss.item() == pytest.approx(((-1.28 - 1.0) / 2 + 0.8) / 2)


def test_gspo_clips_one_sequence_ratio_a_completion():
    # row 0: s = exp(mean(log 1.5, log 1)) = sqrt(1.5) = 1.2247, inside (0.8, 1.28); row 1: s = 0.5 -> +0.8
    terms = grpo_loss(example(), ADVANTAGE, torch.tensor([True, True]), "gspo", DAPO)
    assert terms.loss.item() == pytest.approx((-math.sqrt(1.5) + 0.8) / 2)
    assert terms.clip_fraction.item() == pytest.approx(1 / 2)
    low, high = CLIP_DEFAULTS["gspo"]
    assert (low, high) == (3e-4, 4e-4) == ObjectiveOptions(loss="gspo").clip
    tight = grpo_loss(example(), ADVANTAGE, torch.tensor([True, True]), "gspo", (low, high))
    assert tight.loss.item() == pytest.approx((-(1 + high) + (1 - low)) / 2, abs=1e-7)
    assert tight.clip_fraction.item() == 1.0


def test_k3_is_added_per_token_with_beta():
    assert k3(torch.tensor([0.0]), torch.tensor([math.log(2.0)])).item() == pytest.approx(2 - math.log(2) - 1)
    kl = 2 - math.log(2) - 1  # token 1's reference is twice as likely; the others agree (0)
    terms = grpo_loss(example(ref=True), ADVANTAGE, torch.tensor([True, True]), "token", DAPO, beta=0.1)
    assert terms.loss.item() == pytest.approx((-1.28 - 1.0 + 0.8 + 0.1 * kl) / 3)
    assert terms.kl.item() == pytest.approx(kl / 3)
    gspo = grpo_loss(example(ref=True), ADVANTAGE, torch.tensor([True, True]), "gspo", DAPO, beta=0.1)
    assert gspo.loss.item() == pytest.approx((-math.sqrt(1.5) + 0.1 * kl / 2 + 0.8) / 2)


def test_clip_defaults_and_refused_options():
    assert ObjectiveOptions().clip == (0.2, 0.28) == ObjectiveOptions(loss="sequence").clip
    assert ObjectiveOptions(epsilon_low=0.1).clip == (0.1, 0.28)
    for bad in ({"beta": -0.1}, {"epsilon_low": -0.2}, {"epsilon_high": -1.0}, {"ppo_epochs": 0}):
        with pytest.raises(ValueError, match="model.objective"):
            ObjectiveOptions(**bad)


@pytest.mark.parametrize("loss", ["token", "sequence", "gspo"])
def test_the_gradient_is_the_policy_gradient_estimator(loss):
    """On a toy policy (one softmax over 5 tokens, every position alike) at the rollout's weights (ratio 1), the loss's
    gradient is -sum_i w_i A_i grad log pi(y_i,t) with the form's weights, where grad log softmax(theta)[y] =
    onehot(y) - softmax(theta): token 1/T per token, sequence and GSPO 1/(R |y_i|)."""
    theta = torch.tensor([0.3, -0.2, 0.0, 0.5, -1.0], requires_grad=True)
    sampled = torch.tensor([2, 0, 3, 3, 1])  # row 0: 3 tokens, row 1: 2 tokens
    row = torch.tensor([0, 0, 0, 1, 1])
    logp = theta.log_softmax(-1)[sampled]
    tokens = CompletionTokens(logp, logp.detach(), row, 2)
    advantage = torch.tensor([0.7, -1.3])
    grpo_loss(tokens, advantage, torch.tensor([True, True]), loss, DAPO).loss.backward()
    p = theta.detach().softmax(-1)
    lengths = torch.tensor([3.0, 2.0])
    weight = torch.full((5,), 1 / 5) if loss == "token" else 1 / (2 * lengths[row])
    expected = -sum(weight[t] * advantage[row[t]] * (torch.eye(5)[sampled[t]] - p) for t in range(5))
    assert torch.allclose(theta.grad, expected, atol=1e-6)


def test_a_seeded_toy_task_learns_its_reward():
    """A toy policy over 5 answers, rewarded 1 for answer 2: GRPO (token loss, group scaling, AdamW) raises the mean
    reward from about chance to nearly 1 within a few dozen steps."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    theta = torch.zeros(5, requires_grad=True)
    optimizer = torch.optim.AdamW([theta], lr=0.1)
    curve = []
    for _ in range(30):
        with torch.no_grad():
            sampled = torch.multinomial(theta.softmax(-1).expand(4 * 8, 5), 1, generator=generator).squeeze(1)
        rewards = (sampled == 2).float().view(4, 8)
        curve.append(rewards.mean().item())
        logp = theta.log_softmax(-1)[sampled]
        tokens = CompletionTokens(logp, logp.detach(), torch.arange(32), 32)
        keep = ~zero_variance(rewards).repeat_interleave(8)
        terms = grpo_loss(tokens, advantages(rewards, "group").flatten(), keep, "token", DAPO)
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
    assert sum(curve[:3]) / 3 < 0.4 and sum(curve[-5:]) / 5 > 0.9, curve


@pytest.mark.parametrize("loss", ["token", "sequence", "gspo"])
def test_nothing_kept_is_a_loss_of_zero(loss):
    """Every group skipped on every rank (global counts 0): a loss of 0 with a zero gradient, not NaN."""
    tokens = example()
    terms = grpo_loss(tokens, ADVANTAGE, torch.tensor([False, False]), loss, DAPO, token_total=0.0, row_total=0.0)
    terms.loss.backward()
    assert terms.loss.item() == 0 and torch.equal(tokens.logp.grad, torch.zeros(3))
