"""Benchmark cards: the same build gives the same card anywhere; a question file changed after its build, or a card its
file contradicts, is refused."""

import json
import re

import pytest

from data_prep.build_mqa import main as build_mqa
from data_prep.extract_frames import main as extract_frames
from llavaction.benchmark.card import CardError, card_path, file_digest, read_card
from llavaction.evaluation.questions import read_questions
from tests.helpers import extract_args, one_line_exit


def build(annotations, out, *extra):
    assert build_mqa(["--annotations", str(annotations), "--split", "validation", "--out", str(out), *extra]) == 0
    return json.loads(card_path(out).read_text())


def test_the_same_build_gives_the_same_card_anywhere(demo_dir, tmp_path):
    annotations = demo_dir / "annotations"
    first = build(annotations, tmp_path / "a" / "val.jsonl", "--distractors", "random", "--num-options", "3")
    again = build(annotations, tmp_path / "b" / "val.jsonl", "--distractors", "random", "--num-options", "3")
    assert first == again and (tmp_path / "a" / "val.card.json").exists()
    assert first["benchmark"] == "EK-100-MQA" and first["name"] == "EK-100-MQA/random/K3"
    assert (first["tier"], first["num_options"], first["ground_truth_forced"], first["seed"]) == ("random", 3, False, 0)
    assert first["questions"]["digest"] == file_digest(tmp_path / "a" / "val.jsonl")
    assert first["questions"]["count"] == 8 and first["questions"]["without_ground_truth"] == 0
    assert first["inputs"]["EPIC_100_validation.csv"] == file_digest(annotations / "EPIC_100_validation.csv")
    assert "EPIC_100_train.csv" in first["inputs"]  # every CSV of the folder: train feeds the distractors
    other = build(annotations, tmp_path / "c" / "val.jsonl", "--distractors", "random", "--seed", "1", "--benchmark")
    assert other["name"] == "EK-100-MQA/random/K5+gt" and other["questions"]["digest"] != first["questions"]["digest"]


def test_a_question_file_changed_after_its_build_is_refused(demo_dir, tmp_path, capsys):
    questions = tmp_path / "val.jsonl"
    build(demo_dir / "annotations", questions)
    assert read_card(questions)["name"] == "EK-100-MQA/annotations/K5"
    lines = questions.read_text().splitlines(keepends=True)
    edited = json.loads(lines[0]) | {"answer_index": 0, "answer_letter": "A"}
    questions.write_text(json.dumps(edited) + "\n" + "".join(lines[1:]))
    with pytest.raises(CardError, match=r"val.jsonl: its digest sha256:.* is not the one its card .*val.card.json"):
        read_questions([questions])
    error = one_line_exit(capsys, lambda: extract_frames(extract_args(questions, demo_dir / "videos", tmp_path / "s")))
    assert "val.card.json records" in error and not (tmp_path / "s").exists()
    card_path(questions).unlink()  # without its card the file is used unpinned
    assert read_card(questions) is None and len(read_questions([questions])[str(questions)]) == 8


@pytest.mark.parametrize(
    "edit, claim",
    [
        ({"num_options": 3}, "it claims num_options 3, but the file's questions have 5 options"),
        ({"tier": "random"}, "its name 'EK-100-MQA/annotations/K5' is not its build's (tier random"),
        ({"tier": "hard"}, "tier 'hard'; expected EK-100-MQA and one of"),
        ({"name": "EK-100-MQA/random/K5"}, "its name 'EK-100-MQA/random/K5' is not its build's"),
        ({"tier": "random", "name": "EK-100-MQA/random/K5", "num_options": 4}, "claims num_options 4"),
        ({"questions": "count"}, "it claims None questions"),
        ({"ground_truth_forced": True, "name": "EK-100-MQA/annotations/K5+gt"}, None),
        ({"predictions_file": "avion.json"}, "it names predictions file 'avion.json' for tier 'annotations'"),
    ],
)
def test_a_card_that_its_file_contradicts_is_refused(demo_dir, tmp_path, capsys, edit, claim):
    """A hand-edited card (num_options 3 on a 5-option file, another tier) is not carried into results: every reader
    checks what it claims against the file it describes."""
    questions = tmp_path / "val.jsonl"
    build(demo_dir / "annotations", questions)
    card = json.loads(card_path(questions).read_text())
    if edit == {"questions": "count"}:
        card["questions"]["count"] = None
    else:
        card |= edit
    card_path(questions).write_text(json.dumps(card))
    if claim is None:  # a forced ground truth the file bears out (every question has it): a true claim
        assert read_card(questions)["ground_truth_forced"] is True
        return
    with pytest.raises(CardError, match=re.escape(claim)):
        read_questions([questions])
    error = one_line_exit(capsys, lambda: extract_frames(extract_args(questions, demo_dir / "videos", tmp_path / "s")))
    assert "val.card.json: " in error and "the card was edited" in error and not (tmp_path / "s").exists()


def test_a_forced_ground_truth_the_file_lacks_is_refused(demo_dir, tmp_path):
    questions = tmp_path / "val.jsonl"
    build(demo_dir / "annotations", questions)
    lines = [json.loads(line) for line in questions.read_text().splitlines()]
    lines[0] |= {"answer_index": None, "answer_letter": None}
    questions.write_text("".join(json.dumps(r) + "\n" for r in lines))
    card = json.loads(card_path(questions).read_text())
    card["questions"]["digest"] = file_digest(questions)  # a card rewritten by hand for the edited file
    card |= {"ground_truth_forced": True, "name": card["name"] + "+gt"}
    card_path(questions).write_text(json.dumps(card))
    with pytest.raises(CardError, match=r"claims 0 questions without the ground truth .* but the file has 1"):
        read_card(questions)
