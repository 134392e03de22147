import pytest

from llavaction.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llavaction.prompts import PromptEncoder, PromptOptions, PromptTooLong, build_answer, build_question
from llavaction.tokenizer import build_tokenizer

RECORD = {
    "narration_id": "P01_01_7", "options": ["take plate", "open drawer", "wash cup", "put pan", "cut onion"],
    "answer_index": 1, "narration": "open the drawer", "clip_start_sec": 10.0, "clip_stop_sec": 12.5,
    "frame_times_sec": [10.5, 11.5], "answer": "0.50, 2.00",
    "prior_actions": [{"text": "take plate", "offset_sec": 6.25}, {"text": "put plate", "offset_sec": 3.0}],
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(RECORD["options"] + [RECORD["narration"]])


def test_chatml_with_placeholder_and_answer_labels(tokenizer):
    encoder = PromptEncoder(tokenizer)
    question = build_question(RECORD, "mqa", 8, PromptOptions())
    encoded = encoder.encode(question, build_answer(RECORD, "mqa"), num_visual_tokens=40)
    assert encoded.input_ids.count(IMAGE_TOKEN_INDEX) == 1
    text = tokenizer.decode([i for i in encoded.input_ids if i != IMAGE_TOKEN_INDEX])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "\nA. take plate\nB. open drawer\n" in text
    assert text.endswith("<|im_start|>assistant\nB. open drawer<|im_end|>")
    labelled = [i for i, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "B. open drawer<|im_end|>"
    assert all(l == IGNORE_INDEX or l == i for i, l in zip(encoded.input_ids, encoded.labels))


def test_prompt_without_answer_ends_at_assistant_turn(tokenizer):
    encoder = PromptEncoder(tokenizer)
    encoded = encoder.encode("Q?", None, num_visual_tokens=4)
    assert tokenizer.decode(encoded.input_ids[-3:]).endswith("assistant\n")
    assert set(encoded.labels) == {IGNORE_INDEX}
    assert len(set(encoder.letter_token_ids(26))) == 26


def test_too_long_error_or_truncate(tokenizer):
    question = build_question(RECORD, "narration", 8, PromptOptions())
    answer = "a long description " * 30
    full = PromptEncoder(tokenizer).encode(question, answer, num_visual_tokens=50)
    limit = len(full.input_ids) + 49 - 10
    with pytest.raises(PromptTooLong, match="P01_01_7"):
        PromptEncoder(tokenizer, max_length=limit).encode(question, answer, 50, name="P01_01_7")
    cut = PromptEncoder(tokenizer, max_length=limit, overflow="truncate").encode(question, answer, 50)
    assert cut.truncated and len(cut.input_ids) + 49 == limit
    assert cut.input_ids == full.input_ids[: len(cut.input_ids)]  # only the answer's end is lost
    with pytest.raises(PromptTooLong):  # the question itself never gets cut
        PromptEncoder(tokenizer, max_length=60, overflow="truncate").encode(question, answer, 50)


def test_switches_change_the_wording():
    plain = build_question(RECORD, "mqa", 8, PromptOptions())
    timed = build_question(RECORD, "mqa", 8, PromptOptions(time_instruction=True, frame_times=True))
    assert "The provided video lasts for 2.500 seconds, and 8 frames are uniformly sampled from it." in timed
    assert "0.50s, 1.50s" in timed and "lasts" not in plain
    priors = build_question(RECORD, "mqa", 8, PromptOptions(prior_actions=True), use_priors=True)
    assert ("6.25 seconds ago, you started an action take plate. 3.00 seconds ago, you started an action put plate."
            in priors)
    assert "What action are you currently performing?" in priors
    assert build_answer(RECORD, "temporal") == "0.50, 2.00"
    assert "open the drawer" in build_question(RECORD, "temporal", 8, PromptOptions())


@pytest.mark.parametrize("change, message", [
    ({"options": ["only one"]}, "1 options"),
    ({"option_actions": ["1:2", "3:4"]}, "5 options but 2 option_actions"),
    ({"answer_index": 7}, "answer_index 7 outside"),
])
def test_inconsistent_questions_name_the_item(change, message):
    record = RECORD | {"option_actions": ["0:1", "0:2", "0:3", "0:4", "0:5"]} | change
    with pytest.raises(ValueError, match=f"P01_01_7: {message}"):
        build_question(record, "mqa", 8, PromptOptions())
