"""Typed argument groups of the LightningModule and the DataModule: small frozen dataclasses, one docstring line per
field, Literal for fixed choices, so `train.py fit --print_config` documents them and jsonargparse rejects bad values
before anything is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ScoringMode = Literal["generate", "letter", "likelihood"]


@dataclass(frozen=True)
class TrainableParts:
    """Which parts of the model are updated.

    Args:
        vision_tower: update the SigLIP tower.
        projector: update the projector and the newline vector.
        llm: update the Qwen2 LLM.
    """

    vision_tower: bool = True
    projector: bool = True
    llm: bool = True


@dataclass(frozen=True)
class OptimizerOptions:
    """AdamW with a learning rate per part and a cosine schedule after linear warmup.

    Args:
        lr: learning rate of the LLM (and of the action heads).
        vision_lr: learning rate of the vision tower.
        projector_lr: learning rate of the projector (default: lr).
        weight_decay: AdamW weight decay (never on norms and biases).
        warmup_ratio: share of the steps with linear warmup before the cosine decay.
    """

    lr: float = 1e-5
    vision_lr: float = 2e-6
    projector_lr: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03


@dataclass(frozen=True)
class ComputeOptions:
    """How the model is computed; none of these changes the results beyond numerical noise.

    Args:
        attn_implementation: 'sdpa', 'flash_attention_2' (GPU with flash-attn), 'flex_attention' (PyTorch's; trains on a
            GPU only, and keeps packed samples apart without a dense mask) or 'eager'.
        activation_checkpointing: recompute vision and LLM blocks in the backward pass.
        compile_blocks: torch.compile each vision and LLM block (the first steps then take longer).
        pack_sequences: run the LLM on a batch's samples packed into one sequence, attention kept within each sample
            (no compute on padding; with sdpa the mask is dense, so meant for flash_attention_2 or flex_attention on a
            GPU).
    """

    attn_implementation: Literal["sdpa", "flash_attention_2", "flex_attention", "eager"] = "sdpa"
    activation_checkpointing: bool = False
    compile_blocks: bool = False
    pack_sequences: bool = False


@dataclass(frozen=True)
class ActionSupervision:
    """LLaVAction's action token(s) with verb, noun and action heads, trained beside the LM loss.

    Args:
        mode: 'one_token' (one learned token after the visual tokens), 'three_tokens' (verb, noun, action) or
            'newline' (the last newline token); None: off (a checkpoint's own heads are then kept frozen and exported
            unchanged).
        types: verb, noun and action head sizes (the action head indexes the dense action vocabulary).
        head_layers: LLM layers the heads read: 'last', 'first' (after the first decoder layer) or 'all'.
        loss_weight: w in loss = LM + w * head loss.
        normalization: head loss over the layers read: 'reference' sums (0.5 CE_verb + 0.5 CE_noun + 0.1 CE_action)
            over them and divides by their number + 1, as the released code (0.05 a unit of CE with one layer: the
            published model); 'mean' takes their mean.
    """

    mode: Literal["one_token", "three_tokens", "newline"] | None = None
    types: tuple[int, int, int] = (97, 300, 3806)
    head_layers: Literal["last", "first", "all"] = "last"
    loss_weight: float = 0.1
    normalization: Literal["reference", "mean"] = "reference"


@dataclass(frozen=True)
class EvaluationOptions:
    """How validation and test answer the MQA questions.

    Args:
        mqa_scoring: each mode logs val/mqa_accuracy_<mode>, the first also val/mqa_accuracy: 'generate' (greedy
            answer scored by the paper's rule: its text after the last 'X. ' equals the right option's), 'letter'
            (next-token logits of the option letters; free with 'generate') or 'likelihood' (log-likelihood of each
            option's text given the clip).
        max_new_tokens: longest generated answer; generation stops earlier at the end-of-turn token (the reference's
            4096).
    """

    mqa_scoring: tuple[ScoringMode, ...] = ("generate", "letter")
    max_new_tokens: int = 4096

    def __post_init__(self):
        if not self.mqa_scoring or len(set(self.mqa_scoring)) != len(self.mqa_scoring):
            raise ValueError(f"mqa_scoring must list distinct modes, got {list(self.mqa_scoring)}")
        check_count("model.evaluation.max_new_tokens", self.max_new_tokens, minimum=1)


@dataclass(frozen=True)
class LoaderOptions:
    """How samples are batched and loaded.

    Args:
        batch_size: training samples per batch and device.
        eval_batch_size: validation/test samples per batch and device.
        num_workers: loader worker processes per device (0: in the training process).
        samples_per_epoch: training samples per epoch over all devices when some source has a numeric weight (the
            weighted sources share what the sources taken whole leave); null when every source is taken whole
            (weight 'size' or a sampling strategy): an epoch is then each of their samples once.
        shuffle_buffer: samples each loader worker holds per training source for shuffling (memory: this many
            samples' JPEG frames per source and worker).
        length_group_window: when > 0, training batches are formed from this many batches' worth of samples sorted by
            their length in words (less padding); 0 batches samples as they come.
        open_shards: shards of a training source each loader worker reads at once, their samples interleaved at random
            (shards hold a few videos each, in time order: more open shards, better mixed batches).
    """

    batch_size: int = 1
    eval_batch_size: int = 8
    num_workers: int = 2
    samples_per_epoch: int | None = None
    shuffle_buffer: int = 500
    length_group_window: int = 0
    open_shards: int = 4

    def __post_init__(self):
        for name in ("batch_size", "eval_batch_size", "shuffle_buffer", "open_shards"):
            check_count(f"data.loader.{name}", getattr(self, name), minimum=1)
        for name in ("num_workers", "length_group_window"):
            check_count(f"data.loader.{name}", getattr(self, name), minimum=0)
        if self.samples_per_epoch is not None:
            check_count("data.loader.samples_per_epoch", self.samples_per_epoch, minimum=1, null=True)


def check_count(name: str, value, minimum: int, null: bool = False) -> None:
    """A count read from a config: an integer (not a bool) of at least `minimum`; the error names the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if null else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class PriorActionOptions:
    """The two previous actions in MQA questions (the reference's learn_neighbor_actions='prior').

    Args:
        train_probability: chance that a training question whose two prior actions are known shows them (the
            published recipe: 0.3).
        evaluation: what validation and test questions show: 'none' (the reference's evaluation), 'oracle' (the
            ground-truth prior actions) or 'pseudo' (the model's own earlier answers for them).
        pseudo_predictions: predictions.jsonl of an earlier `llavaction.evaluate mqa` run, for 'pseudo'.
    """

    train_probability: float = 0.0
    evaluation: Literal["none", "oracle", "pseudo"] = "none"
    pseudo_predictions: str | None = None

    def __post_init__(self):
        if not 0.0 <= self.train_probability <= 1.0:
            raise ValueError(f"prior_actions.train_probability {self.train_probability} is not a probability")
        if (self.evaluation == "pseudo") != (self.pseudo_predictions is not None):
            raise ValueError("prior_actions.evaluation='pseudo' needs pseudo_predictions, and only it uses them")

    @property
    def shown(self) -> bool:
        return self.train_probability > 0 or self.evaluation != "none"
