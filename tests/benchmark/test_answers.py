"""The EK-100-MQA answer rule: the lenient letter parse, the paper's rule against the option text, prediction
records."""

import pytest

from llavaction.benchmark.answers import (
    paper_answer_text,
    paper_correct,
    parse_choice,
    prediction_record,
    reference_exact_correct,
)

OPTIONS = ["take plate", "open drawer", "wash cup", "put pan", "cut onion"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", 1),
        ("B.", 1),
        ("(B)", 1),
        ("B. open drawer", 1),
        ("The answer is B", 1),
        ("the answer is: (C)", 2),
        ("open drawer", 1),
        ("I think you wash cup now.", 2),
        ("D) put pan and more", 3),
        ("E", 4),
        ("F", None),
        ("nothing useful", None),
        ("", None),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text, OPTIONS) == expected


@pytest.mark.parametrize(
    "generation, text",
    [
        # the reference's process_raw_pred on the answers a model gives
        ("A. open drawer", "open drawer"),
        ("B. close drawer.", "close drawer"),
        ("C. wash cup,", "wash cup"),  # a trailing comma is stripped first
        ("The answer is C. wash cup", "wash cup"),
        ("C. wash cup. Because the tap runs.", "wash cup"),
        ("A. take plate\nB. open drawer", "open drawer"),  # the last lettered line
        ("open drawer", "open drawer"),  # no 'X. ': the whole answer
        ("put spatula into rack.", "put spatula into rack"),  # ... up to its sentence end, as the ground truth
        ("None. open drawer", "open drawer"),
        # where the reference cut at any '.': a period counts only before a space or at the end
        ("D. put 2.5 cups", "put 2.5 cups"),
        # a sentence whose space went missing ends at its period, as the reference reads it
        ("B. close drawer.Then I open it", "close drawer"),
    ],
)
def test_paper_answer_text(generation, text):
    assert paper_answer_text(generation) == text


def test_paper_rule_against_the_option_text():
    assert paper_correct("B. open drawer", "open drawer") and paper_correct("E. open drawer", "open drawer")
    assert not paper_correct("B", "open drawer") and not paper_correct("B. open the drawer", "open drawer")
    # 41 of the 9,668 validation narrations end with '.': the reference could never score them right
    assert paper_correct("A. rinse knife.", "rinse knife.") and not reference_exact_correct(
        "A. rinse knife.", "rinse knife."
    )
    assert reference_exact_correct("B. open drawer.", "open drawer")
    # the reference scores an answer that runs on without a space right; the headline rule agrees
    assert paper_correct("B. close drawer.Then I open it", "close drawer")
    assert reference_exact_correct("B. close drawer.Then I open it", "close drawer")
    # an answer without a letter: the reference compares it whole, so a narration ending in '.' matches itself
    assert paper_correct("put spatula into rack.", "put spatula into rack.")
    assert reference_exact_correct("put spatula into rack.", "put spatula into rack.")
    assert paper_correct("put spatula into rack.", "put spatula into rack")
    meta = {"narration_id": "x", "options": OPTIONS, "answer_index": 1}
    record = prediction_record(meta, [0.0] * 5, "E. open drawer")
    assert record["correct"] and not record["letter_correct"] and record["letter_choice_index"] == 4
    assert record["rule_choice_index"] == 1  # the option the paper's rule reads: the right one
    record = prediction_record(meta, [0.0] * 5, "I do not know")
    assert not record["correct"] and record["parse_failed"] and record["letter_choice_index"] is None
    assert record["rule_choice_index"] is None  # the answer matches no option
