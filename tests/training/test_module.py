"""The training module: action supervision needs class labels; checkpointing before compilation."""

import pytest


def test_action_supervision_needs_class_labels(demo_dir):
    from types import SimpleNamespace

    from llavaction.model.options import ActionSupervision
    from llavaction.training.module import LlavaActionModule

    module = LlavaActionModule(
        tokenizer=str(demo_dir / "tokenizer"), action=ActionSupervision(mode="one_token", types=(8, 8, 64))
    )
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(has_class_labels=lambda: False))
    with pytest.raises(ValueError, match="no training source carries verb/noun classes"):
        module.setup("fit")


def test_block_switches_apply_checkpointing_then_compilation(demo_dir, monkeypatch):
    from llavaction.model.options import ComputeOptions
    from llavaction.training import sharding
    from llavaction.training.module import LlavaActionModule

    calls = []
    monkeypatch.setattr(sharding, "checkpoint_blocks", lambda model, blocks: calls.append("checkpoint"))
    monkeypatch.setattr(sharding, "compile_blocks", lambda model, blocks: calls.append("compile"))
    module = LlavaActionModule(
        tokenizer=str(demo_dir / "tokenizer"),
        compute=ComputeOptions(activation_checkpointing=True, compile_blocks=True),
    )
    module.configure_model()
    assert calls == ["checkpoint", "compile"]
