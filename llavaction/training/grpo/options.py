"""Typed options of the GRPO stage: rollouts, rewards and the objective. Each default names its source (the peers'
files and lines are in README, "RL post-training"); the clipping defaults of each loss form live in one table,
CLIP_DEFAULTS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llavaction.utils.checks import check_count, check_range

Loss = Literal["token", "sequence", "gspo"]
RewardScale = Literal["group", "batch", "none"]
DynamicSampling = Literal["keep", "skip", "refill"]
RolloutEngine = Literal["model", "vllm"]

# (epsilon_low, epsilon_high) of each loss form when the options leave them unset: DAPO's clip-higher 0.2 / 0.28
# (DAPO paper section 4.1; verl's DAPO recipe) for the token and sequence forms, GSPO's 3e-4 / 4e-4 (verl's GSPO
# example, "as recommended by the paper, Sec. 5.1"; TRL's paper index) for its sequence-level ratio.
CLIP_DEFAULTS: dict[str, tuple[float, float]] = {
    "token": (0.2, 0.28),
    "sequence": (0.2, 0.28),
    "gspo": (3e-4, 4e-4),
}


@dataclass(frozen=True)
class RolloutOptions:
    """How the completions of each question are sampled.

    Args:
        group_size: completions per question (G); a training batch is its questions x G (TRL's and Video-R1's 8).
        temperature: sampling temperature (1.0: Video-R1, EasyR1, verl, TRL); the log-probabilities of the loss are
            taken at the same temperature, as TRL and verl do.
        top_p: nucleus sampling (1.0: EasyR1, verl, TRL; Video-R1 0.95).
        top_k: sample from the k most likely tokens (0: all; verl -1, TRL 0).
        max_new_tokens: longest completion; generation stops earlier at the end-of-turn token (TRL's 512).
        engine: 'model': the model's own KV-cached sampling in the training process, on the weights being trained
            (every backbone); 'vllm': vLLM serving the policy's export in a worker process, the weights pushed to it
            after each update (the families vLLM runs; one training process).
        vllm_python: engine 'vllm': the Python of an environment with vLLM (None: this one); vLLM pins its own
            transformers, so it usually has an environment of its own (README, "Engines").
        vllm_memory: engine 'vllm': share of the GPU's memory the engine may hold beside the training.
        seed: the rollouts' generator is seeded from (seed, optimizer step, rank), so that a resumed run samples the
            rollouts of the run it continues.
        dynamic_sampling: groups whose rewards are all equal carry no signal: 'keep' them in the loss (zero
            advantage; GRPO as published), 'skip' them (left out of the loss and its normalisation) or 'refill' (their
            completions drawn again, up to refill_attempts times; those still equal are then skipped).
        refill_attempts: draws of a group whose rewards are all equal, under 'refill' (DAPO's verl recipe allows 10
            generation batches).
    """

    group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    engine: RolloutEngine = "model"
    vllm_python: str | None = None
    vllm_memory: float = 0.3
    seed: int = 0
    dynamic_sampling: DynamicSampling = "keep"
    refill_attempts: int = 10

    def __post_init__(self):
        check_count("model.rollout.group_size", self.group_size, minimum=2)
        check_range("model.rollout.temperature", self.temperature, 0.0)
        if self.temperature == 0.0:
            raise ValueError(
                f"model.rollout.temperature 0 samples {self.group_size} equal completions a question (no advantage): "
                "use a temperature above 0"
            )
        check_range("model.rollout.top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0.0:
            raise ValueError("model.rollout.top_p 0 keeps no token: use a value in (0, 1]")
        check_count("model.rollout.top_k", self.top_k, minimum=0)
        check_count("model.rollout.max_new_tokens", self.max_new_tokens, minimum=1)
        check_count("model.rollout.refill_attempts", self.refill_attempts, minimum=1)
        check_range("model.rollout.vllm_memory", self.vllm_memory, 0.05, 1.0)


@dataclass(frozen=True)
class RewardOptions:
    """The reward of a completion: the weighted sum of named rewards (llavaction.training.grpo.rewards.REWARDS).

    Args:
        weights: reward name -> weight: 'accuracy' (the paper's answer rule, 1 or 0), 'format' (the reasoning format,
            1 or 0; needs model.reasoning), 'temporal' (Video-R1's T-GRPO bonus; rolls out extra completions on
            shuffled frames). Video-R1 sums accuracy and format with weight 1 each.
        temporal_alpha: the T-GRPO bonus a correct completion gets when its group beats the shuffled frames
            (Video-R1's 0.3).
        temporal_mu: the group beats the shuffled frames when its accuracy >= mu x the shuffled completions' accuracy
            (Video-R1's 0.8).
        temporal_rollouts: completions a question on shuffled frames, reward only, no loss (None: half the group, as
            Video-R1).
    """

    weights: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})
    temporal_alpha: float = 0.3
    temporal_mu: float = 0.8
    temporal_rollouts: int | None = None

    def __post_init__(self):
        if not self.weights:
            raise ValueError("model.rewards.weights names no reward: give at least one, e.g. {accuracy: 1.0}")
        for name, weight in self.weights.items():
            check_range(f"model.rewards.weights.{name}", weight, float("-inf"))
        check_range("model.rewards.temporal_alpha", self.temporal_alpha, 0.0)
        check_range("model.rewards.temporal_mu", self.temporal_mu, 0.0)
        if self.temporal_rollouts is not None:
            check_count("model.rewards.temporal_rollouts", self.temporal_rollouts, minimum=1, null=True)


@dataclass(frozen=True)
class ObjectiveOptions:
    """Advantages and the loss.

    Args:
        loss: 'token': DAPO's token-level mean over every completion token of the batch (TRL's and verl's default);
            'sequence': each completion's token mean, then the mean over completions (GRPO as first published,
            Video-R1); 'gspo': GSPO's sequence-level ratio exp(mean token log-ratio), one clipped term a completion.
        scale_rewards: advantages are reward minus the group's mean, divided by the group's std ('group': GRPO,
            TRL's default), by the batch's std ('batch') or by nothing ('none': Dr. GRPO).
        epsilon_low: the ratio is clipped below at 1 - epsilon_low (None: the loss form's default, CLIP_DEFAULTS).
        epsilon_high: the ratio is clipped above at 1 + epsilon_high (None: the loss form's default).
        beta: weight of the KL divergence to the frozen starting policy (k3 estimator); 0 holds no reference copy
            (TRL's default since 0.19, DAPO); Video-R1 0.04, EasyR1 and verl's Qwen2.5-VL example 0.01.
        ppo_epochs: optimizer steps on each batch of rollouts (1: the ratio is 1 at the update, as TRL, verl and
            EasyR1 by default).
        sft_weight: weight of the supervised loss on the ground-truth answer (the reference's answer as a completion,
            its LM loss) mixed in; 0 leaves it out.
    """

    loss: Loss = "token"
    scale_rewards: RewardScale = "group"
    epsilon_low: float | None = None
    epsilon_high: float | None = None
    beta: float = 0.0
    ppo_epochs: int = 1
    sft_weight: float = 0.0

    def __post_init__(self):
        for name in ("epsilon_low", "epsilon_high"):
            if getattr(self, name) is not None:
                check_range(f"model.objective.{name}", getattr(self, name), 0.0)
        if self.epsilon_low is not None and self.epsilon_low >= 1.0:
            raise ValueError(f"model.objective.epsilon_low must be below 1, got {self.epsilon_low}")
        check_range("model.objective.beta", self.beta, 0.0)
        check_range("model.objective.sft_weight", self.sft_weight, 0.0)
        check_count("model.objective.ppo_epochs", self.ppo_epochs, minimum=1)

    @property
    def clip(self) -> tuple[float, float]:
        """(epsilon_low, epsilon_high): those given, else the loss form's defaults."""
        low, high = CLIP_DEFAULTS[self.loss]
        return (
            low if self.epsilon_low is None else self.epsilon_low,
            high if self.epsilon_high is None else self.epsilon_high,
        )
