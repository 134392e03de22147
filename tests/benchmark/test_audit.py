"""The validity audit: counts on hand-made questions with planted collisions, duplicates and synonyms; the blind
baselines; the command on a built file."""

import csv
import json

import pytest

from data_prep.audit_mqa import main as audit_mqa
from data_prep.build_mqa import main as build_mqa
from llavaction.benchmark.audit import audit_questions, most_frequent_choice, most_similar_choice
from llavaction.ek100.lexicon import ClassLexicon
from tests.helpers import one_line_exit

VERBS = [("take", ["take", "grab", "pick-up"]), ("put", ["put", "place", "put-down"]), ("open", ["open"])]
NOUNS = [("cup", ["cup", "mug"]), ("plate", ["plate", "dish"]), ("lid", ["lid"]), ("board:chopping", ["board"])]


@pytest.fixture
def lexicon(tmp_path) -> ClassLexicon:
    for name, classes in (("EPIC_100_verb_classes.csv", VERBS), ("EPIC_100_noun_classes.csv", NOUNS)):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "key", "instances", "category"])
            writer.writerows([i, key, repr(instances), "x"] for i, (key, instances) in enumerate(classes))
    return ClassLexicon.load(tmp_path)


def question(nid, gt, options, answer):
    """A question on video P01_01 (or P01_02 for ids ending in 9); options as (text, 'verb:noun')."""
    return {
        "narration_id": nid,
        "video_id": "P01_02" if nid.endswith("9") else "P01_01",
        "verb_class": gt[0],
        "noun_class": gt[1],
        "narration": options[answer][0] if answer is not None else "take cup",
        "options": [text for text, _ in options],
        "option_actions": [action for _, action in options],
        "answer_index": answer,
    }


def test_synonyms_are_words_of_one_class_in_the_verb_or_the_noun(lexicon):
    assert lexicon.synonym_class("take cup", "grab the cup") == "verb 0"
    assert lexicon.synonym_class("pick up cup", "take cup") == "verb 0"  # 'up' is a particle
    assert lexicon.synonym_class("put plate", "put dish") == "noun 1"
    assert lexicon.synonym_class("take cup", "put cup") is None  # two classes
    assert lexicon.synonym_class("take cup", "take plate") is None
    assert lexicon.synonym_class("take cup", "take blue mug") is None  # 'blue' names no class
    assert lexicon.synonym_class("take cup", "grab mug") is None  # the verb and the noun both differ


def test_the_audit_counts_what_was_planted(lexicon):
    questions = [
        # a distractor of the ground truth's own action ('grab cup' is 0:0 too), which is also a synonym pair
        question(
            "P01_01_1", (0, 0), [("take cup", "0:0"), ("grab cup", "0:0"), ("put plate", "1:1"), ("open lid", "2:2")], 0
        ),
        # two options with one text, and a synonym pair in the noun ('put plate' / 'put dish')
        question(
            "P01_01_2",
            (1, 1),
            [("put plate", "1:1"), ("Put plate.", "1:2"), ("put dish", "1:0"), ("take lid", "0:2")],
            0,
        ),
        # the ground truth missing (a build without --benchmark)
        question(
            "P01_01_9",
            (2, 2),
            [("take cup", "0:0"), ("put lid", "1:2"), ("open plate", "2:1"), ("take board", "0:3")],
            None,
        ),
    ]
    audit = audit_questions(questions, lexicon, counts={(1, 1): 50, (0, 0): 60}, examples=1)
    assert audit["questions"] == 3 and audit["videos"] == 2 and audit["num_options"] == [4]
    collisions = audit["ground_truth_action_among_distractors"]
    assert (collisions["questions"], collisions["occurrences"]) == (1, 1)
    assert collisions["examples"][0]["options_of_its_action"] == ["grab cup"]
    assert audit["identical_options"]["questions"] == 1 and audit["identical_options"]["occurrences"] == 1
    assert audit["identical_options"]["examples"][0]["repeated"] == ["Put plate.", "put plate"]
    synonyms = audit["synonym_pairs"]
    assert (synonyms["questions"], synonyms["occurrences"]) == (2, 3)  # q1 take/grab; q2 put plate/dish twice
    assert synonyms["examples"][0]["pairs"] == [["take cup", "grab cup", "verb 0"]]
    assert audit["missing_ground_truth"]["questions"] == 1
    hardness = audit["distractor_hardness"]
    # q1: put plate, open lid -> neither; q2: 'Put plate.' 1:2 and 'put dish' 1:0 share the verb, take lid neither;
    # q3 (no answer): take cup, open plate (verb), put lid (noun), take board -> 1 verb, 1 noun, 2 neither
    assert hardness["distractors"] == 9
    assert (hardness["shares_verb"]["count"], hardness["shares_noun"]["count"], hardness["neither"]["count"]) == (
        3,
        1,
        5,
    )
    blind = audit["blind_baselines"]
    assert blind["chance"] == 25.0 and blind["most_frequent_action"]["questions"] == 2
    assert blind["most_frequent_action"]["value"] == pytest.approx(100.0)  # 0:0 and 1:1 are the frequent ones


def test_blind_rules():
    q = question(
        "P01_01_1", (0, 0), [("open lid", "2:2"), ("take cup", "0:0"), ("take plate", "0:1"), ("put cup", "1:0")], 1
    )
    assert most_frequent_choice(q, {(0, 1): 3, (1, 0): 3}) == 2  # the first of the two most frequent
    assert most_frequent_choice(q, {}) == 0
    # 'take cup' shares a word with 'take plate' and with 'put cup': the hub of the options
    assert most_similar_choice(q) == 1


def test_the_command_audits_a_built_file_as_text_and_json(demo_dir, tmp_path, capsys):
    questions = tmp_path / "val.jsonl"
    annotations = demo_dir / "annotations"
    build_mqa(["--annotations", str(annotations), "--split", "validation", "--out", str(questions), "--benchmark"])
    capsys.readouterr()
    assert audit_mqa([str(questions), "--annotations", str(annotations), "--out", str(tmp_path / "audit.json")]) == 0
    text = capsys.readouterr().out
    assert "val.jsonl (EK-100-MQA/annotations/K5+gt v1.0): 8 questions over 2 videos" in text
    assert "distractors of the ground truth's action (must be 0): 0 in 0 questions" in text
    (audit,) = json.loads((tmp_path / "audit.json").read_text()).values()
    assert audit["benchmark"]["name"] == "EK-100-MQA/annotations/K5+gt"
    assert audit["blind_baselines"]["most_frequent_action"]["counted_in"] == "EPIC_100_train.csv"
    assert audit["distractor_hardness"]["distractors"] == 8 * 4
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"narration_id": "x", "options": ["a"]}) + "\n")
    error = one_line_exit(capsys, lambda: audit_mqa([str(broken), "--annotations", str(annotations)]))
    assert error.startswith(f"error: {broken}:1: not an MQA question: it lacks option_actions")


def test_the_audit_names_its_examples_and_refuses_what_would_mislead_it(demo_dir, tmp_path, capsys):
    """The text names example questions (not only counts); an answer_index that names no option, or a card built
    from other annotation CSVs than --annotations, is refused in one line."""
    import shutil

    annotations = tmp_path / "annotations"
    shutil.copytree(demo_dir / "annotations", annotations)
    questions = tmp_path / "val.jsonl"
    build_mqa(["--annotations", str(annotations), "--split", "validation", "--out", str(questions)])
    records = [json.loads(line) for line in questions.read_text().splitlines()]
    twice = records[0] | {"options": [records[0]["options"][0]] * len(records[0]["options"])}
    unpinned = tmp_path / "unpinned.jsonl"
    unpinned.write_text("".join(json.dumps(r) + "\n" for r in [twice, *records[1:]]))
    capsys.readouterr()
    assert audit_mqa([str(unpinned), "--annotations", str(annotations)]) == 0
    assert (
        f"options with identical text: 4 in 1 questions, e.g. {records[0]['narration_id']}" in capsys.readouterr().out
    )
    wrong = records[0] | {"answer_index": len(records[0]["options"])}
    unpinned.write_text("".join(json.dumps(r) + "\n" for r in [wrong, *records[1:]]))
    error = one_line_exit(capsys, lambda: audit_mqa([str(unpinned), "--annotations", str(annotations)]))
    assert f"{unpinned}:1: answer_index 5 names no option of its 5" in error
    # the annotations changed since the build: the card's digests of them are stale
    train = annotations / "EPIC_100_train.csv"
    train.write_bytes(train.read_bytes().replace(b"\n", b"\r\n"))  # the same rows, other bytes
    error = one_line_exit(capsys, lambda: audit_mqa([str(questions), "--annotations", str(annotations)]))
    assert "its card records another EPIC_100_train.csv than" in error and "built from other annotations" in error
