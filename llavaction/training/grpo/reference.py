"""The frozen reference policy of the KL term (objective.beta > 0): the starting policy built again from the same start
(model.checkpoint, or the preset with the run's seed), sharded like the policy, never trained and never in the run's
checkpoints (held outside the module's state; a resumed run rebuilds it from the same start)."""

from __future__ import annotations

import torch

from llavaction.training.grpo.rollouts import token_scores


class ReferencePolicy:
    """A frozen copy of the starting policy, scoring the completions the policy drew."""

    def __init__(self, model: torch.nn.Module):
        model.requires_grad_(False)
        self.model = model.eval()

    def place(self, module) -> None:
        """On the policy's device and precision (a sharded reference is placed by its sharding already)."""
        if module.device_mesh is None:
            self.model.to(module.device)
            self.model = module.trainer.precision_plugin.convert_module(self.model)

    def parameter_bytes(self) -> int:
        """Bytes its parameters hold on this rank (a shard's under FSDP2)."""
        return sum(_local(p).numel() * p.element_size() for p in self.model.parameters())

    @torch.no_grad()
    def logp(self, experience, pixels, temperature: float, banned: tuple[int, ...] = ()) -> torch.Tensor:
        """[T] each completion token's log-probability under the reference, in the policy's token order."""
        visual = self.model.encode_video(pixels)
        rows = experience.rows
        return token_scores(self.model, rows, visual[experience.question], temperature, banned=banned).logp


def _local(parameter: torch.Tensor) -> torch.Tensor:
    return parameter.to_local() if hasattr(parameter, "to_local") else parameter
