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


def test_a_sample_with_a_verb_label_is_supervised_as_the_reference_selects_it():
    """The reference keeps the samples with a verb label: one with a verb but no action index (an action outside the
    vocabulary of one's own data) trains the verb and noun heads, and leaves out only the missing term."""
    from llavaction.training.losses import action_supervision_loss

    torch.manual_seed(0)
    logits = [(torch.randn(3, 8), torch.randn(3, 9), torch.randn(3, 40))]
    verb, noun, action = torch.tensor([1, 2, -1]), torch.tensor([3, 4, -1]), torch.tensor([5, -1, -1])
    (v, n, a), rows = logits[0], torch.tensor([0, 1])
    expected = (
        0.5 * F.cross_entropy(v[rows], verb[rows])
        + 0.5 * F.cross_entropy(n[rows], noun[rows])
        + 0.1 * F.cross_entropy(a[:1], action[:1])
    )
    assert torch.allclose(action_supervision_loss(logits, verb, noun, action), expected / 2)


def test_each_tasks_loss_is_the_mean_over_its_own_tokens():
    from llavaction.training.losses import task_losses
    from llavaction.utils.constants import IGNORE_INDEX

    torch.manual_seed(0)
    labels = torch.full((3, 6), IGNORE_INDEX)
    labels[0, 3:5] = torch.tensor([1, 2])  # row 0 (mqa): targets at positions 2, 3 of labels[:, 1:]
    labels[1, 2:6] = torch.tensor([3, 4, 5, 6])  # row 1 (narration)
    supervised = labels[:, 1:] != IGNORE_INDEX
    logits = torch.randn(int(supervised.sum()), 10)
    losses = task_losses(logits, labels, ["mqa", "narration", "padding"])
    targets = labels[:, 1:][supervised]
    assert torch.allclose(losses["mqa"], F.cross_entropy(logits[:2], targets[:2]))
    assert torch.allclose(losses["narration"], F.cross_entropy(logits[2:], targets[2:]))
    assert set(losses) == {"mqa", "narration"}
    assert task_losses(logits, labels[:1], ["mqa"]) == {}  # rows packed into one: cannot be told apart


def test_warmup_steps_are_the_reference_trainers():
    """transformers' TrainingArguments.get_warmup_steps, which the reference's trainer uses: ceil(total x ratio) (the
    int() of it before gave 157 where the reference warms up for 158 steps)."""
    from llavaction.training.optim import warmup_steps

    assert warmup_steps(5235, 0.03) == 158 and int(5235 * 0.03) == 157
    assert [warmup_steps(total, 0.5) for total in (1, 2, 7)] == [1, 1, 4]
    assert warmup_steps(1000, 0.0) == 0


def test_a_class_beyond_its_head_is_one_line_naming_the_option():
    import pytest

    from llavaction.training.losses import action_supervision_loss

    logits = [(torch.randn(2, 8), torch.randn(2, 9), torch.randn(2, 40))]
    verb, noun, action = torch.tensor([1, 2]), torch.tensor([3, 12]), torch.tensor([5, 6])
    with pytest.raises(ValueError, match=r"noun class is 12, beyond the noun head's 9 classes: set model.action.types"):
        action_supervision_loss(logits, verb, noun, action)
