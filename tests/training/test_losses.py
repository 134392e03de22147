"""The action-supervision loss."""

import torch
import torch.nn.functional as F


def test_action_loss_masks_samples_without_labels():
    from llavaction.training.losses import action_supervision_loss

    torch.manual_seed(0)
    logits = [(torch.randn(3, 8), torch.randn(3, 9), torch.randn(3, 40)) for _ in range(2)]
    verb, noun, action = torch.tensor([1, -1, 2]), torch.tensor([3, -1, 4]), torch.tensor([5, -1, 6])
    keep = torch.tensor([0, 2])
    per_layer = torch.stack(
        [
            0.5 * F.cross_entropy(v[keep], verb[keep])
            + 0.5 * F.cross_entropy(n[keep], noun[keep])
            + 0.1 * F.cross_entropy(a[keep], action[keep])
            for v, n, a in logits
        ]
    )
    # the released code: summed over the layers read and divided by their number + 1
    assert torch.allclose(action_supervision_loss(logits, verb, noun, action), per_layer.sum() / 3)
    assert torch.allclose(action_supervision_loss(logits[:1], verb, noun, action), per_layer[0] / 2)
    assert torch.allclose(action_supervision_loss(logits, verb, noun, action, "mean"), per_layer.mean())
    none = action_supervision_loss(logits, torch.full((3,), -1), torch.full((3,), -1), torch.full((3,), -1))
    assert none.item() == 0.0
