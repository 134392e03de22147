"""Reinforcement learning from verifiable rewards on EK-100-MQA: the GRPO stage (module.GRPOModule) and its parts:
options, rewards, advantages and losses, rollouts, the reference policy, what it logs."""

from llavaction.training.grpo.module import GRPOModule

__all__ = ["GRPOModule"]
