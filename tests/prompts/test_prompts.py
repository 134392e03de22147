"""Prompts against literal strings of the reference LLaVAction code (format_llava_prompt, format_task_related_prompt,
format_time_instruction, the temporal-detection data) inside the qwen_1_5 ChatML template."""

import pytest

from llavaction.prompts.encoding import PromptEncoder, PromptTooLong, chat_prompt
from llavaction.prompts.formats import ClipTiming, SplicedVideo
from llavaction.prompts.tasks import answer_text, user_text
from llavaction.prompts.tokenizer import build_tokenizer
from llavaction.prompts.wording import PromptError, PromptOptions
from llavaction.utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tests.helpers import RECORD

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"


PERSPECTIVE = (
    "You are seeing this video from egocentric view and you are the person. Your hands are sometimes "
    "interacting with objects. What action are you doing? "
)


OPTIONS = "A. take plate, B. open drawer, C. wash cup, D. put pan, E. cut onion"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(RECORD["options"] + [RECORD["narration"]])


def test_mqa_prompt_is_the_reference_string():
    expected = (
        SYSTEM + "<image>\n" + PERSPECTIVE + "Given multiple choices, format your answer briefly such as "
        "'A. move knife'. \nHere are the options of actions you are selecting:\n"
        + OPTIONS
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat_prompt(user_text(RECORD, "mqa", 8, PromptOptions())) == expected
    assert answer_text(RECORD, "mqa") == "B. open drawer"


def test_time_instruction_glued_to_the_task_prompt():
    text = user_text(RECORD, "mqa", 64, PromptOptions(time_instruction=True))
    assert text.startswith(
        "The provided video lasts for 2.390 seconds, and 64 frames are uniformly sampled from it." + PERSPECTIVE
    )
    timed = user_text(RECORD, "narration", 4, PromptOptions(time_instruction=True, frame_times=True))
    assert timed.startswith(
        "The provided video lasts for 2.390 seconds, and 4 frames are uniformly sampled from it."
        "These frames are located at 0.00s, 0.60s, 1.20s, 1.79s. The video duration is 2.390 "
        "seconds. " + PERSPECTIVE
    )


def test_prior_actions_branch():
    text = user_text(RECORD, "mqa", 8, PromptOptions(), use_priors=True)
    assert text == (
        PERSPECTIVE + "\n6.25 seconds ago, you started an action take plate. 3.0 seconds ago, you started "
        "an action put plate. What action are you currently performing? Here are the options of actions "
        "you can select:\n" + OPTIONS
    )


def test_narration_temporal_and_description_prompts():
    assert user_text(RECORD, "narration", 8, PromptOptions()) == (
        PERSPECTIVE + " What action are you performing? Give a short sentence such as 'move knife'."
    )
    assert answer_text(RECORD, "narration") == "open the drawer"
    assert user_text(RECORD, "temporal", 8, PromptOptions()) == (
        "The provided video contains an action 'open the drawer' that lasts 1.5 seconds. What is the relative start "
        "and end time of the action in seconds? Format it as 'start_timestamp: end_timestamp' and round to 2 decimal "
        "places."
    )
    assert answer_text(RECORD, "temporal") == "0.5, 2.0"
    caption = user_text(RECORD | {"qa_question": None, "qa_answer": "I open it."}, "qa", 8, PromptOptions())
    assert caption == (
        PERSPECTIVE + " Describe in details what you see from the video frames. You must talk in the "
        "first person perspective. Try to focus on what you are doing. "
    )
    asked = user_text(RECORD | {"qa_question": "Why?", "qa_answer": "."}, "qa", 8, PromptOptions(time_instruction=True))
    assert asked.endswith("sampled from it.Why?")


def test_replay_gets_the_reference_trainers_time_sentence():
    record = {
        "replay": True,
        "qa_question": "What happens?",
        "qa_answer": "A dog runs.",
        "clip_start_sec": 0.0,
        "clip_stop_sec": 31.456,
    }
    assert user_text(record, "qa", 64, PromptOptions()) == "What happens?"
    assert user_text(record, "qa", 64, PromptOptions(time_instruction=True)) == (
        "The video lasts for 31.46 seconds, and 64 frames are uniformly sampled from it. Please answer the following "
        "questions related to this video.\nWhat happens?"
    )


def test_encoding_matches_the_rendered_text(tokenizer):
    encoder = PromptEncoder(tokenizer)
    question = user_text(RECORD, "mqa", 8, PromptOptions())
    encoded = encoder.encode(question, answer_text(RECORD, "mqa"), visual=40)
    assert encoded.input_ids.count(IMAGE_TOKEN_INDEX) == 1
    place = encoded.input_ids.index(IMAGE_TOKEN_INDEX)
    text = tokenizer.decode(encoded.input_ids[:place]) + "<image>" + tokenizer.decode(encoded.input_ids[place + 1 :])
    assert text == chat_prompt(question) + "B. open drawer<|im_end|>"
    labelled = [i for i, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "B. open drawer<|im_end|>"
    assert all(label == IGNORE_INDEX or label == i for i, label in zip(encoded.input_ids, encoded.labels))


def test_prompt_without_answer_ends_at_assistant_turn(tokenizer):
    encoder = PromptEncoder(tokenizer)
    encoded = encoder.encode("Q?", None, visual=4)
    assert tokenizer.decode(encoded.input_ids[-3:]).endswith("assistant\n")
    assert set(encoded.labels) == {IGNORE_INDEX}
    assert len(set(encoder.letter_token_ids(26))) == 26


def test_too_long_error_or_truncate(tokenizer):
    question = user_text(RECORD, "narration", 8, PromptOptions())
    answer = "a long description " * 30
    full = PromptEncoder(tokenizer).encode(question, answer, visual=50)
    limit = len(full.input_ids) + 49 - 10
    with pytest.raises(PromptTooLong, match="P01_01_7"):
        PromptEncoder(tokenizer, max_length=limit).encode(question, answer, 50, name="P01_01_7")
    cut = PromptEncoder(tokenizer, max_length=limit, overflow="truncate").encode(question, answer, 50)
    assert cut.truncated and len(cut.input_ids) + 49 == limit
    assert cut.input_ids == full.input_ids[: len(cut.input_ids)]  # only the answer's end is lost
    with pytest.raises(PromptTooLong):  # the question itself never gets cut
        PromptEncoder(tokenizer, max_length=60, overflow="truncate").encode(question, answer, 50)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"options": ["only one"]}, "1 options"),
        ({"options": []}, "0 options"),
        ({"option_actions": ["1:2", "3:4"]}, "5 options but 2 option_actions"),
        ({"answer_index": 7}, "answer_index 7 outside"),
    ],
)
def test_inconsistent_questions_name_the_item(change, message):
    record = RECORD | {"option_actions": ["0:1", "0:2", "0:3", "0:4", "0:5"]} | change
    with pytest.raises(PromptError, match=f"P01_01_7: {message}"):
        user_text(record, "mqa", 8, PromptOptions())


def test_each_backbone_reads_the_prompt_in_its_own_template():
    """LLaVA-Video: the qwen_1_5 template with `<image>\\n`; Qwen2.5-VL: its template's default system turn and a
    vision block; Qwen3-VL: no system turn; the reference's wording after the clip in every case."""
    from llavaction.model.qwen_vl.presets import qwen_preset
    from llavaction.model.qwen_vl.prompt import VIDEO_BLOCK as QWEN_VIDEO_BLOCK

    question = user_text(RECORD, "mqa", 8, PromptOptions())
    llava = chat_prompt(question)
    assert llava.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n")
    qwen25 = chat_prompt(question, qwen_preset("qwen2_5_vl", "tiny").chat_format())
    assert qwen25 == llava.replace("<image>\n", QWEN_VIDEO_BLOCK)
    qwen3 = chat_prompt(question, qwen_preset("qwen3_vl", "tiny").chat_format())
    assert qwen3 == f"<|im_start|>user\n{QWEN_VIDEO_BLOCK}{question}<|im_end|>\n<|im_start|>assistant\n"


def test_visual_ids_lay_out_each_backbones_clip(tokenizer):
    from llavaction.model.qwen_vl.presets import qwen_preset
    from llavaction.prompts.formats import ACTION_TOKEN_INDEX

    encode = PromptEncoder(tokenizer)._ids
    qwen25 = qwen_preset("qwen2_5_vl", "tiny", vision_supervision="one_token", action_types=(1, 2, 3))
    ids, length = qwen25.chat_format().visual_ids(ClipTiming.even(7, 3.5), 384, encode)
    video, start, end = (
        qwen25.hf["video_token_id"],
        qwen25.hf["vision_start_token_id"],
        qwen25.hf["vision_end_token_id"],
    )
    # 7 frames: the last repeated to 4 groups of two; 384 px -> 392: 28 x 28 patches, 196 tokens a group
    assert ids == [start, *[video] * 4 * 196, end, ACTION_TOKEN_INDEX] and length == len(ids)
    qwen3 = qwen_preset("qwen3_vl", "tiny").chat_format()
    ids, _ = qwen3.visual_ids(ClipTiming((15, 45, 75, 105), 30.0, 120), 384, encode)
    # frames at 0.5, 1.5, 2.5, 3.5 s: groups stamped at their first and last frame's mean, 144 tokens a group
    stamps = [tokenizer.decode(encode(f"<{t} seconds>")) for t in ("1.0", "3.0")]
    text = tokenizer.decode([i for i in ids if i not in (qwen3.video_token_id,)])
    assert text.count("seconds>") == 2 and all(s in text for s in stamps) and ids.count(qwen3.video_token_id) == 288
    llava_ids, llava_length = SplicedVideo(tokens_per_frame=210, action_tokens=1).visual_ids(
        ClipTiming.even(64, 2.0), 384, encode
    )
    assert llava_ids == [IMAGE_TOKEN_INDEX] and llava_length == 64 * 210 + 1
