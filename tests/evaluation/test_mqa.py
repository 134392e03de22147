"""`llavaction evaluate mqa`: the paper's rule by default, action heads' outputs, stale shards refused first."""

import json
import time
from pathlib import Path

import pytest

from llavaction.benchmark.answers import (
    paper_correct,
)
from llavaction.cli.evaluate import main as evaluate
from llavaction.evaluation.ek100 import load_scores
from llavaction.utils.files import mark_folder
from tests.helpers import one_line_exit, run_mqa


def test_mqa_generate_mode_is_the_default_and_the_papers_rule(
    original_checkpoint, demo_questions, demo_shards, tmp_path
):
    results, predictions = run_mqa(original_checkpoint, demo_questions, demo_shards, tmp_path / "gen")
    assert results["mode"] == "generate" and results["count"] == 8
    assert all(isinstance(p["generation"], str) for p in predictions)
    assert results["parse_failures"] == sum(p["letter_choice_index"] is None for p in predictions)
    assert all(p["correct"] == (p["rule_choice_index"] == p["answer_index"]) for p in predictions)  # one rule
    for p in predictions:
        assert p["correct"] == paper_correct(p["generation"], p["options"][p["answer_index"]])
        assert len(p["scores"]) == len(p["options"])  # the letter logits of the same pass
    assert results["accuracy"] == pytest.approx(100 * sum(p["correct"] for p in predictions) / 8)
    assert {"letter_accuracy", "reference_exact_accuracy"} <= set(results)
    for part in results["breakdown"].values():  # head/tail, seen/unseen: each figure with its interval too
        assert (part["interval"] is None) == (part["count"] == 0)
        assert part["count"] == 0 or part["interval"]["low"] <= part["accuracy"] <= part["interval"]["high"]
    assert results["settings"] == {
        "num_frames": 8,
        "time_instruction": False,
        "frame_times": False,
        "prior_actions": "none",
    }
    # the question file's benchmark card travels into the results
    (card,) = results["benchmark"].values()
    assert card["name"] == "EK-100-MQA/annotations/K5" and card["questions_digest"].startswith("sha256:")


def test_head_scores_and_candidates(demo_dir, demo_questions, demo_shards, tmp_path):
    from transformers import AutoTokenizer

    from llavaction.model.llava_video import LlavaVideoModel, preset

    ckpt = tmp_path / "ckpt"
    LlavaVideoModel(preset("tiny", vision_supervision="one_token", action_types=(97, 300, 500))).save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(str(demo_dir / "tokenizer")).save_pretrained(ckpt)
    # an original-layout checkpoint with heads, through the default (generate) path
    results, predictions = run_mqa(ckpt, demo_questions, demo_shards, tmp_path / "out", "--candidates", "7")
    assert results["mode"] == "generate"
    scores = load_scores(tmp_path / "out" / "head_scores.npz")
    assert scores["verb_output"].shape == (8, 97) and scores["noun_output"].shape == (8, 300)
    assert "verb_scores" not in predictions[0]
    candidates = json.loads((tmp_path / "out" / "head_candidates.json").read_text())
    assert set(candidates) == {p["narration_id"] for p in predictions}
    first = next(iter(candidates.values()))["predictions"]
    assert len(first) == 7 and len(set(first)) == 7 and all(":" in a for a in first)


def test_stale_shards_are_refused_before_the_model_loads(
    original_checkpoint, demo_questions, demo_shards, tmp_path, capsys
):
    """Shards built from v1 of a question file, evaluated with v2 (same ids, other options): one line, nothing
    written, by evaluate mqa and by lmms-export."""
    from llavaction.utils.jsonl import read_jsonl

    v2 = read_jsonl(demo_questions["validation_mqa"])
    v2[0]["options"] = v2[0]["options"][1:] + v2[0]["options"][:1]
    path = tmp_path / "v2.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in v2))
    shards = str(demo_shards["validation_mqa"])
    for command in (["mqa", "--checkpoint", str(original_checkpoint)], ["lmms-export"]):
        out = tmp_path / command[0]
        assert evaluate([*command, "--questions", str(path), "--shards", shards, "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and "v2.jsonl: 1 of its 8 questions differ from the shards' copy" in error[0]
        assert "options" in error[0] and not out.exists()


def test_another_question_file_over_the_shards_as_a_frame_store(
    original_checkpoint, demo_dir, demo_questions, demo_shards, tmp_path, capsys
):
    """A K=3 build of the same segments asked over the K=5 shards (--frames): its questions, its card; the same file
    with --shards is stale, and one of the two is required."""
    from data_prep.build_mqa import main as build_mqa

    k3 = tmp_path / "k3.jsonl"
    annotations = str(demo_dir / "annotations")
    build_mqa(["--annotations", annotations, "--split", "validation", "--num-options", "3", "--out", str(k3)])
    capsys.readouterr()
    results, predictions = run_mqa(
        original_checkpoint, demo_questions, demo_shards, tmp_path / "k3", questions=k3, frames_as="--frames"
    )
    assert results["count"] == 8 and all(len(p["options"]) == 3 for p in predictions)
    assert [card["name"] for card in results["benchmark"].values()] == ["EK-100-MQA/annotations/K3"]
    shards = str(demo_shards["validation_mqa"])
    for extra in (["--shards", shards], ["--shards", shards, "--frames", shards], []):
        out = tmp_path / "refused"
        code = evaluate(
            ["mqa", "--checkpoint", str(original_checkpoint), "--questions", str(k3), "--out", str(out), *extra]
        )
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(error) == 1 and not out.exists(), error
        assert ("differ from the shards' copy" if len(extra) == 2 else "--shards (built from these") in error[0]


def test_the_difficulty_sweep_evaluates_each_build_over_one_store(
    original_checkpoint, demo_dir, demo_shards, tmp_path, capsys, monkeypatch
):
    from data_prep.build_mqa import main as build_mqa
    from llavaction.data import store
    from llavaction.evaluation.checkpoints import LoadedCheckpoint

    opened, checked = [], []
    real_open, real_clips = LoadedCheckpoint.open.__func__, store.store_clips
    monkeypatch.setattr(LoadedCheckpoint, "open", classmethod(lambda cls, *a: opened.append(a) or real_open(cls, *a)))
    monkeypatch.setattr(store, "store_clips", lambda stores: checked.append(stores) or real_clips(stores))

    annotations = str(demo_dir / "annotations")
    sweep = ["--sweep", "--sweep-options", "2", "4", "--benchmark"]
    build_mqa(["--annotations", annotations, "--split", "validation", "--out", str(tmp_path / "v.jsonl"), *sweep])
    out = tmp_path / "difficulty"  # the sweep's index stands for its four files
    args = ["difficulty", "--questions", str(tmp_path / "v.sweep.json"), "--frames", str(demo_shards["validation_mqa"])]
    args += ["--checkpoint", str(original_checkpoint), "--mode", "score", "--num-workers", "0", "--out", str(out)]
    capsys.readouterr()
    assert evaluate(args) == 0
    table = json.loads((out / "difficulty.json").read_text())
    builds = [(r["tier"], r["num_options"]) for r in table["rows"]]
    assert builds == [("annotations+gt", 2), ("annotations+gt", 4), ("random+gt", 2), ("random+gt", 4)]
    for row in table["rows"]:
        assert row["low"] <= row["accuracy"] <= row["high"] and row["count"] == 8
        assert row["chance"] == 100 / row["num_options"]
        assert (out / Path(row["file"]).stem / "predictions.jsonl").exists()
    assert (out / "difficulty.png").read_bytes().startswith(b"\x89PNG")
    assert "random+gt        K=4" in capsys.readouterr().out
    assert len(opened) == 1  # the checkpoint read once for the four builds
    assert len(checked) == 4  # each build's clips checked once, before its forward pass


def test_an_evaluation_replaces_its_folder_whole_and_refuses_a_foreign_one(
    original_checkpoint, demo_questions, demo_shards, tmp_path, capsys
):
    out = tmp_path / "eval"
    args = ["mqa", "--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    args += ["--checkpoint", str(original_checkpoint), "--mode", "score", "--num-workers", "0", "--out", str(out)]
    assert evaluate(args) == 0
    first = sorted(p.name for p in out.iterdir())
    time.sleep(1.1)  # the lmms-eval layout's files are stamped to the second
    assert evaluate(args) == 0
    assert len(sorted(out.glob("*_results.json"))) == 1 and len(sorted(p.name for p in out.iterdir())) == len(first)
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    error = one_line_exit(capsys, lambda: evaluate(args))
    assert "holds 'notes.txt', which llavaction evaluate mqa did not write" in error and (out / "notes.txt").exists()
    # a folder another command wrote (an export), or a run folder: refused, nothing touched
    (out / "notes.txt").unlink()
    mark_folder(out, "llavaction export", sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    error = one_line_exit(capsys, lambda: evaluate(args))
    assert f"--out {out}: it is the output of llavaction export" in error
