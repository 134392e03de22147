"""Conversations as training samples: every assistant turn labelled, descriptions given as conversations."""

import json

import pytest

from llavaction.prompts.encoding import PromptEncoder
from llavaction.prompts.tasks import prompt_turns
from llavaction.prompts.tokenizer import build_tokenizer
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tests.helpers import CONVERSATION


def test_every_assistant_turn_and_only_them_carry_labels():
    tokenizer = build_tokenizer(["The plate.", "The cup grows.", "What moves first?", "And then?"])
    record = {
        "narration_id": "v",
        "replay": True,
        "conversation": CONVERSATION,
        "clip_start_sec": 0.0,
        "clip_stop_sec": 12.0,
    }
    turns = prompt_turns(record, "qa", 8, PromptOptions())
    assert turns == [("What moves first?", "The plate."), ("And then?", "The cup grows.")]
    encoded = PromptEncoder(tokenizer).encode_turns(turns, visual=10)
    place = encoded.input_ids.index(IMAGE_TOKEN_INDEX)
    text = tokenizer.decode(encoded.input_ids[:place]) + "<image>" + tokenizer.decode(encoded.input_ids[place + 1 :])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nWhat moves "
        "first?<|im_end|>\n<|im_start|>assistant\nThe plate.<|im_end|>\n<|im_start|>user\nAnd then?"
        "<|im_end|>\n<|im_start|>assistant\nThe cup grows.<|im_end|>"
    )
    spans, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    spans.append(tokenizer.decode(current))
    assert spans == ["The plate.<|im_end|>", "The cup grows.<|im_end|>"]
    # the reference trainer's time sentence for replayed videos, the question's own text kept after it
    timed = prompt_turns(record, "qa", 64, PromptOptions(time_instruction=True))[0][0]
    assert timed == (
        "The video lasts for 12.00 seconds, and 64 frames are uniformly sampled from it. Please answer "
        "the following questions related to this video.\n\nWhat moves first?"
    )
    # too long: whole trailing exchanges go, never the visual tokens or the first question
    full = len(encoded.input_ids) + 9
    cut = PromptEncoder(tokenizer, max_length=full - 3, overflow="truncate").encode_turns(turns, 10)
    assert (
        cut.truncated
        and tokenizer.decode([t for t, label in zip(cut.input_ids, cut.labels) if label != IGNORE_INDEX])
        == "The plate.<|im_end|>"
    )


@pytest.mark.parametrize("line, message", [({"narration_id": "x"}, "needs narration_id and an answer")])
def test_descriptions_may_be_conversations(tmp_path, line, message):
    from llavaction.data.stages import Descriptions

    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"narration_id": "a", "conversation": CONVERSATION[:4]})
        + "\n"
        + json.dumps({"narration_id": "b", "answer": "I rinse."})
        + "\n"
    )
    found = Descriptions(path).by_id
    assert found["a"] == {"conversation": CONVERSATION[:4]} and found["b"]["qa_question"] is None
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=message):
        Descriptions(path)
