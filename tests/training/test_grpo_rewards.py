"""The GRPO stage's rewards: the paper's rule, the reasoning format, Video-R1's temporal bonus, the registry, and the
options refused in one line."""

import pytest

from llavaction.training.grpo.options import RewardOptions, RolloutOptions
from llavaction.training.grpo.rewards import REWARDS, Completions, build_rewards, final_answer, register, score

QUESTION = {"narration_id": "a", "options": ["open drawer", "close drawer", "wash cup"], "answer_index": 1}


def test_accuracy_is_the_papers_rule_and_reads_after_the_last_think():
    texts = [
        "B. close drawer",
        "close drawer.",
        "A. open drawer",
        "B. shut it",
        "<think>A. open drawer?</think> close drawer",
    ]
    accuracy = build_rewards(RewardOptions(), reasoning=False)["accuracy"]
    assert accuracy(Completions(texts, [QUESTION], 5)) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert accuracy(Completions(texts, [QUESTION], 5, reasoning=True))[-1] == 1.0
    assert final_answer("<think>a</think> x <think>b</think>  B. y", True) == "B. y"
    assert final_answer("no tags", True) == "no tags" and final_answer("<think>a</think>B", False).startswith("<think>")
    assert Completions(texts, [QUESTION], 5).choices() == [1, 1, 0, None, None]


def test_format_and_weighted_sum():
    options = RewardOptions(weights={"accuracy": 1.0, "format": 0.5})
    rewards = build_rewards(options, reasoning=True)
    texts = [
        "<think>it closes</think> B. close drawer",
        "B. close drawer",
        "<think></think>",
        "<think>x</think>A. open",
    ]
    values = score(rewards, options.weights, Completions(texts, [QUESTION], 4, reasoning=True))
    assert values["format"] == [1.0, 0.0, 0.0, 1.0] and values["accuracy"] == [1.0, 1.0, 0.0, 0.0]
    assert values["total"] == [1.5, 1.0, 0.0, 0.5]


def test_temporal_bonus_goes_to_correct_ordered_completions_when_they_beat_the_shuffled_frames():
    rewards = build_rewards(RewardOptions(weights={"accuracy": 1.0, "temporal": 1.0}), reasoning=False)
    other = QUESTION | {"narration_id": "b", "answer_index": 0}
    ordered = ["B. close drawer", "A. open drawer", "A. open drawer", "A. open drawer"]  # q0: 1/2 right, q1: 2/2
    shuffled = ["B. close drawer", "B. close drawer", "A. open drawer", "A. open drawer"]  # q0: 2/2 right, q1: 2/2
    completions = Completions(ordered, [QUESTION, other], 2, shuffled=shuffled)
    # q0: 0.5 >= 0.8 x 1.0 fails: no bonus; q1: 1.0 >= 0.8 x 1.0: each correct ordered one gets 0.3
    assert rewards["temporal"](completions) == [0.0, 0.0, 0.3, 0.3]
    assert rewards["temporal"].shuffled and not rewards["accuracy"].shuffled
    with pytest.raises(ValueError, match="shuffled frames"):
        rewards["temporal"](Completions(ordered, [QUESTION, other], 2))


def test_a_reward_added_to_the_registry_is_used_by_name():
    class Brevity:
        name, shuffled = "brevity", False

        def __call__(self, completions):
            return [1.0 / (1 + len(text)) for text in completions.texts]

    register("brevity_test")(lambda options: Brevity())
    try:
        rewards = build_rewards(RewardOptions(weights={"brevity_test": 2.0}), reasoning=False)
        assert score(rewards, {"brevity_test": 2.0}, Completions(["", "abc"], [QUESTION], 2))["total"] == [2.0, 0.5]
        with pytest.raises(ValueError, match="registered twice"):
            register("brevity_test")(lambda options: Brevity())
    finally:
        REWARDS.pop("brevity_test")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: build_rewards(RewardOptions(weights={"acuracy": 1.0}), False), "unknown reward 'acuracy'"),
        (lambda: build_rewards(RewardOptions(weights={"format": 1.0}), False), "set model.reasoning"),
        (lambda: RewardOptions(weights={}), "names no reward"),
        (lambda: RolloutOptions(group_size=1), "group_size must be an integer >= 2"),
        (lambda: RolloutOptions(temperature=0.0), "temperature 0 samples 8 equal completions"),
        (lambda: RolloutOptions(temperature=-1.0), "temperature must be a number >= 0"),
        (lambda: RolloutOptions(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (lambda: RolloutOptions(engine="vllm", vllm_memory=0.0), "vllm_memory must be a number between 0.05 and 1.0"),
    ],
)
def test_bad_options_are_refused_in_one_line(make, message):
    with pytest.raises(ValueError, match=message) as error:
        make()
    assert "\n" not in str(error.value)
