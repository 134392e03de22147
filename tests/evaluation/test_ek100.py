"""EPIC figures of scores files, refused scores, the challenge submission zip, candidate re-ranking."""

import json
import zipfile

import numpy as np
import pytest
import torch

from llavaction.cli.evaluate import main as evaluate
from llavaction.evaluation.candidates import ABSENT_CLASS_SCORE, candidate_class_scores
from llavaction.evaluation.ek100 import ScoresError, ek100_metrics, load_scores


def test_scores_file_errors(tmp_path, epic_dir):
    np.savez(
        tmp_path / "bad.npz",
        verb_output=np.zeros((2, 96)),
        noun_output=np.zeros((2, 300)),
        narration_id=np.array(["P01_11_0", "P01_11_1"]),
    )
    with pytest.raises(ValueError, match=r"verb_output has shape \(2, 96\)"):
        load_scores(tmp_path / "bad.npz")
    np.savez(
        tmp_path / "alien.npz",
        verb_output=np.zeros((1, 97)),
        noun_output=np.zeros((1, 300)),
        narration_id=np.array(["P99_99_9"]),
    )
    with pytest.raises(ValueError, match="P99_99_9"):
        ek100_metrics(load_scores(tmp_path / "alien.npz"), epic_dir, "validation")


@pytest.mark.parametrize("command", ["ek100", "submission"])
def test_non_finite_and_duplicated_scores_are_refused(tmp_path, epic_dir, command, capsys):
    ids = np.array(["P01_11_0", "P01_11_1", "P01_11_10"])
    verbs, nouns = np.zeros((3, 97), np.float32), np.zeros((3, 300), np.float32)
    nouns[1, 5] = np.nan
    np.savez(tmp_path / "nan.npz", verb_output=verbs, noun_output=nouns, narration_id=ids)
    np.savez(
        tmp_path / "dup.npz",
        verb_output=verbs,
        noun_output=np.zeros_like(nouns),
        narration_id=np.array(["P01_11_0", "P01_11_1", "P01_11_0"]),
    )
    rest = (
        ["--annotations", str(epic_dir), "--partial"]
        if command == "ek100"
        else ["--sls-pt", "1", "--sls-tl", "1", "--sls-td", "1"]
    )
    for name, message in (
        ("nan", "noun_output holds NaN or infinite scores in 1 rows, e.g. P01_11_1"),
        ("dup", "duplicated narration ids P01_11_0"),
    ):
        out = tmp_path / f"{name}.out"
        assert evaluate([command, "--scores", str(tmp_path / f"{name}.npz"), *rest, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {tmp_path / name}.npz: {message}"] and not out.exists()
    with pytest.raises(ScoresError):
        load_scores(tmp_path / "nan.npz")


def test_submission_zip(tmp_path):
    torch.save(
        {
            "verb_output": torch.randn(3, 97),
            "noun_output": torch.randn(3, 300),
            "narration_id": ["P01_101_0", "P01_101_1", "P01_101_2"],
        },
        tmp_path / "scores.pt",
    )
    evaluate(
        [
            "submission",
            "--scores",
            str(tmp_path / "scores.pt"),
            "--sls-pt",
            "2",
            "--sls-tl",
            "3",
            "--sls-td",
            "4",
            "--out",
            str(tmp_path / "test.zip"),
        ]
    )
    with zipfile.ZipFile(tmp_path / "test.zip") as archive:
        assert archive.namelist() == ["test.json"]
        payload = json.loads(archive.read("test.json"))
    assert payload["version"] == "0.2" and payload["challenge"] == "action_recognition"
    assert (payload["sls_pt"], payload["sls_tl"], payload["sls_td"]) == (2, 3, 4)
    assert set(payload["results"]) == {"P01_101_0", "P01_101_1", "P01_101_2"}
    entry = payload["results"]["P01_101_0"]
    assert len(entry["verb"]) == 97 and len(entry["noun"]) == 300


def test_candidate_reranking_rule():
    record = {"narration_id": "P01_11_0", "scores": [2.0, 1.0, 0.0], "option_actions": ["3:7", "3:9", "4:7"]}
    scores = candidate_class_scores([record])
    p = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    assert scores["verb_output"][0, 3] == pytest.approx(np.log(p[0] + p[1]), rel=1e-5)
    assert scores["noun_output"][0, 7] == pytest.approx(np.log(p[0] + p[2]), rel=1e-5)
    assert scores["verb_output"][0, 0] == ABSENT_CLASS_SCORE and scores["verb_output"].shape == (1, 97)
    # a hand-edited question file: an unknown class, or not an action at all
    for action, message in (
        ("97:7", "option action 97:7 names an unknown class"),
        ("3:-1", "action '3:-1' is not of the form 'verb:noun'"),
        ("open:drawer", "action 'open:drawer' is not of the form 'verb:noun'"),
    ):
        with pytest.raises(ValueError, match=f"predictions: P01_11_0: {message}"):
            candidate_class_scores([record | {"option_actions": ["3:7", action, "4:7"]}])


def test_a_submission_is_written_whole(tmp_path, monkeypatch):
    """A full disk while writing keeps the earlier submission byte for byte and leaves nothing half-written."""
    import errno

    from llavaction.evaluation.ek100 import write_submission

    scores = {
        "narration_id": np.array(["P01_101_0"]),
        "verb_output": np.zeros((1, 97)),
        "noun_output": np.zeros((1, 300)),
    }
    out = tmp_path / "test.zip"
    write_submission(scores, out, 2, 3, 4)
    before = out.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", full)
    with pytest.raises(OSError, match="No space left"):
        write_submission(scores, out, 1, 1, 1)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["test.zip"]


def test_an_action_models_scores_become_build_mqas_predictions(demo_dir, tmp_path):
    """`evaluate candidates`: per segment the top actions of verb x noun scores, best first, which build_mqa asks as
    the paper's benchmark (the top 5 in rank order, the ground truth in place of the fifth when absent)."""
    from data_prep.build_mqa import main as build_mqa
    from llavaction.ek100.annotations import EpicAnnotations

    ann = EpicAnnotations.load(demo_dir / "annotations", "validation")
    segments = ann.segments
    rng = np.random.default_rng(0)
    verbs, nouns = rng.normal(size=(len(segments), 97)), rng.normal(size=(len(segments), 300))
    verbs[:, len(ann.verbs) :] = nouns[:, len(ann.nouns) :] = -100.0  # the demo's classes only
    verbs[0, segments[0].verb_class] = nouns[0, segments[0].noun_class] = (
        10.0  # the first segment's action ranked first
    )
    np.savez(
        tmp_path / "scores.npz",
        verb_output=verbs.astype(np.float32),
        noun_output=nouns.astype(np.float32),
        narration_id=np.array([s.narration_id for s in segments]),
    )
    out = tmp_path / "predictions.json"
    assert evaluate(["candidates", "--scores", str(tmp_path / "scores.npz"), "--out", str(out), "--top", "10"]) == 0
    ranked = json.loads(out.read_text())
    assert len(ranked) == len(segments) and all(len(r["predictions"]) == 10 for r in ranked.values())
    first = segments[0]
    assert ranked[first.narration_id]["predictions"][0] == f"{first.verb_class}:{first.noun_class}"
    scores_of = [
        verbs[0, int(a.split(":")[0])] + nouns[0, int(a.split(":")[1])]
        for a in ranked[first.narration_id]["predictions"]
    ]
    assert scores_of == sorted(scores_of, reverse=True)  # best first
    questions = tmp_path / "val.jsonl"
    args = ["--annotations", str(demo_dir / "annotations"), "--split", "validation", "--distractors", "predictions"]
    assert build_mqa([*args, "--predictions", str(out), "--benchmark", "--out", str(questions)]) == 0
    asked = {q["narration_id"]: q for q in map(json.loads, questions.read_text().splitlines())}
    assert sorted(asked[first.narration_id]["option_actions"]) == sorted(ranked[first.narration_id]["predictions"][:5])
    # an action outside the class lists: one line naming the file and the segment
    ranked[first.narration_id]["predictions"][1] = "90:250"
    out.write_text(json.dumps(ranked))
    assert build_mqa([*args, "--predictions", str(out), "--benchmark", "--out", str(tmp_path / "bad.jsonl")]) == 2
