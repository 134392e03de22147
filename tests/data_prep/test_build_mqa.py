"""build_mqa on the real EK-100 CSVs: benchmark questions, hard distractors, predictions, representations, tasks."""

import csv
import json
import random
import string
from collections import Counter
from types import SimpleNamespace

import pytest

from data_prep.build_mqa import main as build_mqa
from data_prep.build_mqa import narration_distractor
from data_prep.distractors import annotation_distractors
from llavaction.ek100.annotations import EpicAnnotations, parse_action
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import one_line_exit

FIELDS = (
    "narration_id",
    "video_id",
    "participant_id",
    "start_sec",
    "stop_sec",
    "start_frame",
    "stop_frame",
    "fps",
    "narration",
    "verb_class",
    "noun_class",
    "action_id",
    "options",
    "option_actions",
    "answer_index",
    "answer_letter",
    "prior_actions",
)


def run(tmp_path, epic_dir, *extra, split="validation", name="q.jsonl"):
    out = tmp_path / name
    build_mqa(["--annotations", str(epic_dir), "--split", split, "--seed", "3", "--out", str(out), *extra])
    return read_jsonl(out)


def check_question(q, k=5):
    assert all(f in q for f in FIELDS)
    assert len(q["options"]) == k and len(set(q["options"])) == k
    assert len(set(q["option_actions"])) == k
    gt = f"{q['verb_class']}:{q['noun_class']}"
    if q["answer_index"] is not None:
        assert q["option_actions"][q["answer_index"]] == gt
        assert q["option_actions"].count(gt) == 1
        assert q["answer_letter"] == string.ascii_uppercase[q["answer_index"]]


def test_benchmark_on_real_validation(tmp_path, epic_dir):
    questions = run(tmp_path, epic_dir, "--distractors", "random")
    assert len(questions) == 9668
    for q in questions:
        check_question(q)
        assert q["answer_index"] is not None


def test_annotation_distractors_share_verb_or_noun(tmp_path, epic_dir):
    questions = run(tmp_path, epic_dir, "--distractors", "annotations", "--num-options", "4")
    related = 0
    for q in questions:
        check_question(q, 4)
        for action in q["option_actions"]:
            v, n = parse_action(action)
            related += v == q["verb_class"] or n == q["noun_class"]
    assert related / (4 * len(questions)) > 0.95  # only topped up uniformly when too few related actions exist


def test_annotation_distractors_weighted_by_frequency():
    vocabulary = [(0, 0), (0, 1), (0, 2), (5, 5)]
    counts = {(0, 1): 1000, (0, 2): 0}
    picks = [annotation_distractors((0, 0), vocabulary, counts, 1, random.Random(i))[0] for i in range(300)]
    assert (5, 5) not in picks and picks.count((0, 1)) > 250


def write_predictions(path, ann, key_by_row=False, rank_gt_at=None, total=10):
    predictions = {}
    for row, s in enumerate(ann.segments):
        wrong = [
            f"{v}:{n}"
            for v, n in ann.vocabulary.pairs[row % 50 : row % 50 + total + 1]
            if (v, n) != (s.verb_class, s.noun_class)
        ]
        ranked = wrong[:total]
        if rank_gt_at is not None:
            ranked.insert(rank_gt_at, s.action)
        predictions[str(row) if key_by_row else s.narration_id] = {"predictions": ranked}
    path.write_text(json.dumps(predictions))
    return predictions


def test_predictions_validation_top_k(tmp_path, epic_dir):
    ann = EpicAnnotations.load(epic_dir, "validation")
    preds = write_predictions(tmp_path / "p.json", ann, key_by_row=True, rank_gt_at=None)
    plain = run(tmp_path, epic_dir, "--distractors", "predictions", "--predictions", str(tmp_path / "p.json"))
    bench = run(
        tmp_path,
        epic_dir,
        "--distractors",
        "predictions",
        "--predictions",
        str(tmp_path / "p.json"),
        "--benchmark",
        name="b.jsonl",
    )
    assert all(q["answer_index"] is None and q["answer_letter"] is None for q in plain)
    for row, (p, b) in enumerate(zip(plain[:500], bench[:500])):
        top = preds[str(row)]["predictions"][:5]
        assert sorted(p["option_actions"]) == sorted(top)
        assert sorted(b["option_actions"]) == sorted(top[:4] + [f"{b['verb_class']}:{b['noun_class']}"])
        check_question(b)


def test_predictions_train_samples_from_top_2k(tmp_path, epic_dir):
    ann = EpicAnnotations.load(epic_dir, "train")
    preds = write_predictions(tmp_path / "p.json", ann, rank_gt_at=2, total=14)
    questions = run(
        tmp_path, epic_dir, "--distractors", "predictions", "--predictions", str(tmp_path / "p.json"), split="train"
    )
    for q in questions:
        check_question(q)
        top10 = preds[q["narration_id"]]["predictions"][:10]
        assert set(q["option_actions"]) <= set(top10)


def test_missing_predictions_name_the_segment(tmp_path, epic_dir, capsys):
    (tmp_path / "p.json").write_text("{}")
    args = [
        "--annotations",
        str(epic_dir),
        "--split",
        "validation",
        "--distractors",
        "predictions",
        "--predictions",
        str(tmp_path / "p.json"),
        "--out",
        str(tmp_path / "q.jsonl"),
    ]
    assert build_mqa(args) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"error: {tmp_path / 'p.json'}: no predictions for P01_11_0 (data row 0)")
    )


def test_narration_representation(tmp_path, epic_dir):
    ann = EpicAnnotations.load(epic_dir, "validation")
    questions = run(tmp_path, epic_dir, "--distractors", "random", "--representation", "narration")
    for q in questions[:2000]:
        check_question(q)
        assert q["options"][q["answer_index"]] == q["narration"]
        for text, action in zip(q["options"], q["option_actions"]):
            if action != f"{q['verb_class']}:{q['noun_class']}":
                v, n = parse_action(action)
                assert text in ann.narration_counts[(v, n)] or text == ann.action_text(v, n)
    keys = run(tmp_path, epic_dir, "--distractors", "random", "--representation", "official_key", name="k.jsonl")
    assert all(q["options"][q["answer_index"]] == ann.action_text(q["verb_class"], q["noun_class"]) for q in keys)


def test_narration_distractors_follow_annotation_frequency():
    """As the reference's random.choice over the list of narrations with repeats: P(text) = count / total."""
    counts = {(3, 4): Counter({"take the cup": 6, "pick up cup": 3, "grab cup": 1})}
    ann = SimpleNamespace(narration_counts=counts, action_text=lambda v, n: "take cup")
    rng = random.Random(0)
    drawn = Counter(narration_distractor((3, 4), set(), ann, rng) for _ in range(20000))
    assert drawn["take the cup"] / 20000 == pytest.approx(0.6, abs=0.015)
    assert drawn["pick up cup"] / 20000 == pytest.approx(0.3, abs=0.015)
    assert drawn["grab cup"] / 20000 == pytest.approx(0.1, abs=0.01)
    again = random.Random(0)
    assert [narration_distractor((3, 4), set(), ann, again) for _ in range(5)] == [
        narration_distractor((3, 4), set(), ann, r) for r in [random.Random(0)] for _ in range(5)
    ]
    # a text already among the options is never drawn again; none free -> the class text
    assert {narration_distractor((3, 4), {"take the cup"}, ann, rng) for _ in range(200)} == {"pick up cup", "grab cup"}
    assert narration_distractor((3, 4), {"take the cup", "pick up cup", "grab cup"}, ann, rng) == "take cup"


def test_deterministic_whatever_the_row_order(tmp_path, epic_dir):
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for path in epic_dir.glob("*.csv"):
        if path.name != "EPIC_100_validation.csv":
            (shuffled / path.name).write_bytes(path.read_bytes())
    with open(epic_dir / "EPIC_100_validation.csv", newline="") as f:
        rows = list(csv.reader(f))
    body = rows[1:]
    random.Random(0).shuffle(body)
    with open(shuffled / "EPIC_100_validation.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + body)
    for mode in ("random", "annotations"):
        a = {q["narration_id"]: q for q in run(tmp_path, epic_dir, "--distractors", mode, name="a.jsonl")}
        b = {q["narration_id"]: q for q in run(tmp_path, shuffled, "--distractors", mode, name="b.jsonl")}
        assert a == b


def test_other_tasks(tmp_path, epic_dir):
    run(
        tmp_path,
        epic_dir,
        "--distractors",
        "random",
        "--narration-out",
        str(tmp_path / "n.jsonl"),
        "--temporal-out",
        str(tmp_path / "t.jsonl"),
    )
    videos = EpicAnnotations.load(epic_dir, "validation").videos
    narration = read_jsonl(tmp_path / "n.jsonl")
    assert all(r["task"] == "narration" and r["answer"] == r["narration"] for r in narration)
    for r in read_jsonl(tmp_path / "t.jsonl"):
        assert (
            r["clip_start_sec"] >= 0 and r["clip_start_sec"] <= r["start_sec"] and r["clip_stop_sec"] >= r["stop_sec"]
        )
        padding = (r["start_sec"] - r["clip_start_sec"]) + (r["clip_stop_sec"] - r["stop_sec"])
        assert padding <= 5.0 + 1e-6
        if r["start_sec"] > 5 and r["clip_stop_sec"] < videos[r["video_id"]].duration_sec - 0.01:
            assert padding == pytest.approx(5.0, abs=2e-3)
        start, end = (float(x) for x in r["answer"].split(", "))
        assert r["answer"] == f"{round(start, 2)}, {round(end, 2)}"  # printed as Python prints a float
        assert r["clip_start_sec"] == round(r["clip_start_sec"], 2)
        assert start == round(r["start_sec"] - r["clip_start_sec"], 2)
        assert end == round(r["stop_sec"] - r["clip_start_sec"], 2)


def test_bad_arguments(tmp_path, epic_dir, capsys):
    base = ["--annotations", str(epic_dir), "--out", str(tmp_path / "q.jsonl")]
    for args, message in (
        (["--split", "validation", "--distractors", "predictions"], "--predictions FILE goes with"),
        (["--split", "train", "--distractors", "random", "--benchmark"], "--benchmark applies to the validation"),
        (["--split", "train", "--num-options", "1"], "--num_options must be between 2 and 26, got 1"),
        (["--split", "test"], "--split: expected one of train, validation, got test"),
    ):
        assert message in one_line_exit(capsys, lambda args=args: build_mqa(base + args))
    assert not (tmp_path / "q.jsonl").exists()


def test_sweep_builds_every_tier_and_k_over_the_same_segments(demo_dir, tmp_path):
    annotations = demo_dir / "annotations"
    out = tmp_path / "val.jsonl"
    args = ["--annotations", str(annotations), "--split", "validation", "--out", str(out), "--benchmark"]
    assert build_mqa([*args, "--sweep", "--sweep-options", "2", "5", "10"]) == 0
    listed = json.loads((tmp_path / "val.sweep.json").read_text())["builds"]
    assert [(b["tier"], b["num_options"]) for b in listed] == [
        (t, k) for t in ("random", "annotations") for k in (2, 5, 10)
    ]
    ids = None
    for entry in listed:
        questions = read_jsonl(tmp_path / entry["file"])
        card = json.loads((tmp_path / entry["file"].replace(".jsonl", ".card.json")).read_text())
        assert card["name"] == entry["name"] == f"EK-100-MQA/{entry['tier']}/K{entry['num_options']}+gt"
        assert all(len(q["options"]) == entry["num_options"] for q in questions)
        assert ids in (None, [q["narration_id"] for q in questions])  # the same segments in every build
        ids = [q["narration_id"] for q in questions]
    # a build of the sweep is the file a single build with its tier and K writes
    assert (
        build_mqa([*args, "--distractors", "annotations", "--num-options", "5", "--out", str(tmp_path / "one.jsonl")])
        == 0
    )
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "val.annotations.K5.jsonl").read_bytes()
    assert not out.exists()


def test_sweep_arguments_are_checked(demo_dir, tmp_path, capsys):
    args = ["--annotations", str(demo_dir / "annotations"), "--split", "validation", "--out", str(tmp_path / "v.jsonl")]
    error = one_line_exit(capsys, lambda: build_mqa([*args, "--sweep", "--sweep-options", "2", "30"]))
    assert "--sweep_options must be between 2 and 26, got 30" in error
    error = one_line_exit(capsys, lambda: build_mqa([*args, "--sweep", "--sweep-options", "1"]))
    assert "--sweep_options must be between 2 and 26, got 1" in error
    error = one_line_exit(capsys, lambda: build_mqa([*args, "--num-options", "27"]))
    assert "--num_options must be between 2 and 26, got 27" in error
    error = one_line_exit(capsys, lambda: build_mqa([*args, "--sweep", "--sweep-tiers", "random", "predictions"]))
    assert "--predictions FILE goes with --sweep_tiers predictions" in error
