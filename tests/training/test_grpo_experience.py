"""A batch's experience with scripted completions: groups whose rewards are all equal kept, skipped or drawn again;
the rows the updates score; the rollouts' generator seeded by (seed, step, rank) alone."""

import pytest
import torch

from llavaction.prompts.formats import ClipTiming
from llavaction.training.grpo.experience import Collector
from llavaction.training.grpo.options import RewardOptions, RolloutOptions
from llavaction.training.grpo.rewards import build_rewards
from llavaction.training.grpo.rollouts import Drawn, rollout_generator
from llavaction.utils.constants import IGNORE_INDEX
from tests.helpers import make_batch

QUESTIONS = [
    {"narration_id": "q0", "options": ["open drawer", "close drawer"], "answer_index": 1},
    {"narration_id": "q1", "options": ["wash cup", "cut onion"], "answer_index": 0},
]
RIGHT, WRONG = "B. close drawer", "A. open drawer"


class ScriptedSampler:
    """Gives the next scripted texts for the rows asked (their tokens: the characters' codes) and records the asks."""

    eos, pad, encodes = 1, 0, True

    def __init__(self, draws: list[list[str]]):
        self.draws, self.asked = list(draws), []

    def draw(self, model, batch, visual, questions, generator) -> Drawn:
        texts = self.draws.pop(0)
        assert len(texts) == len(questions)
        self.asked.append(list(questions))
        return Drawn([[ord(c) for c in text] for text in texts], [True] * len(texts))

    def decode(self, tokens):
        return ["".join(map(chr, t)) for t in tokens]


class Visual:
    def encode_video(self, pixels):
        return torch.zeros(2, 3)

    def preprocess(self, frames, clips):
        return frames


def collect(dynamic_sampling: str, draws: list[list[str]]):
    sampler = ScriptedSampler(draws)
    options = RolloutOptions(group_size=4, dynamic_sampling=dynamic_sampling, refill_attempts=3)
    collector = Collector(sampler, build_rewards(RewardOptions(), False), RewardOptions(), options, reasoning=False)
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]])
    batch = make_batch(2, meta=QUESTIONS, input_ids=ids, attention_mask=(ids > 0).long())
    batch.clips = [ClipTiming.even(4, 1.0)] * 2
    return collector(Visual(), batch, None, torch.Generator(), "group"), sampler


FIRST = [RIGHT] * 4 + ["A. wash cup", "B. cut onion", "B. cut onion", "A. wash cup"]  # q0 all right: no signal


def test_a_group_without_signal_is_kept_with_zero_advantage():
    experience, _ = collect("keep", [FIRST])
    assert experience.zero_variance == 1 and experience.kept.all()
    assert experience.advantages[:4].abs().max() == 0 and experience.advantages[4:].abs().min() > 0
    assert experience.rewards["total"].tolist() == [1, 1, 1, 1, 1, 0, 0, 1]
    # rows: prompt + completion + end token, labels on the completion and its end token only
    rows = experience.rows
    assert rows["input_ids"][0, :3].tolist() == [5, 6, 7] and rows["labels"][0, :3].tolist() == [IGNORE_INDEX] * 3
    completion = [ord(c) for c in RIGHT] + [ScriptedSampler.eos]
    assert rows["labels"][0, 3 : 3 + len(completion)].tolist() == completion
    assert experience.kept_tokens == sum(len(t) + 1 for t in FIRST) and experience.kept_rows == 8
    assert experience.question.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_a_group_without_signal_is_skipped_from_the_loss_and_its_normalisation():
    experience, _ = collect("skip", [FIRST])
    assert experience.zero_variance == 1 and experience.kept.tolist() == [False] * 4 + [True] * 4
    assert experience.kept_rows == 4 and experience.kept_tokens == sum(len(t) + 1 for t in FIRST[4:])


def test_a_group_without_signal_is_drawn_again_until_it_differs():
    again_wrong, again_mixed = [WRONG] * 4, [RIGHT, WRONG, WRONG, WRONG]
    experience, sampler = collect("refill", [FIRST, again_wrong, again_mixed])
    assert sampler.asked[1:] == [[0, 0, 0, 0], [0, 0, 0, 0]]  # only q0's group, drawn until its rewards differ
    assert experience.zero_variance == 0 and experience.refilled == 1 and experience.kept.all()
    assert experience.completions.texts[:4] == again_mixed and experience.rewards["total"][:4].tolist() == [1, 0, 0, 0]
    assert experience.generated == sum(len(t) for draw in (FIRST, again_wrong, again_mixed) for t in draw)
    # never differing within the attempts: skipped
    experience, sampler = collect("refill", [FIRST, again_wrong, [RIGHT] * 4, again_wrong])
    assert len(sampler.asked) == 4 and experience.zero_variance == 1 and not experience.kept[:4].any()


def test_padding_rows_are_in_no_loss():
    sampler = ScriptedSampler([FIRST])
    collector = Collector(sampler, build_rewards(RewardOptions(), False), RewardOptions(), RolloutOptions(group_size=4))
    ids = torch.tensor([[5, 6, 7], [5, 6, 7]])
    batch = make_batch(2, length=3, meta=QUESTIONS, input_ids=ids, is_padding=torch.tensor([False, True]))
    experience = collector(Visual(), batch, None, torch.Generator(), "group")
    assert experience.kept.tolist() == [True] * 4 + [False] * 4 and experience.kept_rows == 4


def test_the_rollout_generator_depends_on_seed_step_and_rank_alone():
    def draws(*key):
        return torch.rand(4, generator=rollout_generator(*key, torch.device("cpu"))).tolist()

    assert draws(0, 7, 1) == draws(0, 7, 1)
    assert len({tuple(draws(*key)) for key in [(0, 7, 1), (1, 7, 1), (0, 8, 1), (0, 7, 0)]}) == 4


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_of_the_experience_follow_scale_rewards(scale):
    from llavaction.training.grpo.objective import advantages

    sampler = ScriptedSampler([FIRST])
    collector = Collector(sampler, build_rewards(RewardOptions(), False), RewardOptions(), RolloutOptions(group_size=4))
    ids = torch.tensor([[5, 6, 7], [5, 6, 7]])
    experience = collector(
        Visual(), make_batch(2, length=3, meta=QUESTIONS, input_ids=ids), None, torch.Generator(), scale
    )
    expected = advantages(experience.rewards["total"].view(2, 4), scale).flatten()
    assert torch.allclose(experience.advantages, expected)


def test_rollouts_never_draw_special_tokens_and_the_loss_scores_them_alike(demo_dir):
    """A completion holding a vision placeholder would not read back as its text (a Qwen row would then hold one
    video token too many): the sampler never draws the special tokens but the end of turn, even when they are the most
    likely, and the loss's log-probabilities leave them out alike."""
    from llavaction.training.grpo.module import GRPOModule
    from llavaction.training.grpo.rollouts import token_scores

    for backbone in ("qwen2_5_vl", "llava_video"):
        sampler = GRPOModule(backbone=backbone, tokenizer=str(demo_dir / "tokenizer")).collect.sampler
        tokens = sampler.tokenizer.convert_ids_to_tokens(list(sampler.banned))
        assert "<|im_start|>" in tokens and sampler.eos not in sampler.banned
        assert ("<|video_pad|>" in tokens) == (backbone == "qwen2_5_vl")
    logits = torch.zeros(64, len(sampler.tokenizer))
    logits[:, list(sampler.banned)] = 50.0
    drawn = sampler.sampling.choose(logits, torch.Generator().manual_seed(0))
    assert not set(drawn.tolist()) & set(sampler.banned) and drawn.unique().numel() > 1

    class Scripted(torch.nn.Module):
        def forward(self, input_ids, pixels, attention_mask, labels, visual_tokens=None, pack=False):
            return type("Out", (), {"logits": logits[:2], "labels": labels})()

    rows = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3)}
    rows["labels"] = torch.tensor([[IGNORE_INDEX, 5, 6]])
    scores = token_scores(Scripted(), rows, None, 1.0, banned=sampler.banned)
    expected = -torch.log(torch.tensor(float(len(sampler.tokenizer) - len(sampler.banned))))
    assert torch.allclose(scores.logp, expected.expand(2))
    assert torch.allclose(scores.entropy, -expected.expand(2))  # uniform over the allowed ids; the banned add nothing
