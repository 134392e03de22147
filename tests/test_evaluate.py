import json
import zipfile

import numpy as np
import pytest
import torch

from llavaction.epic import EpicAnnotations
from llavaction.evaluate import main as evaluate
from llavaction.evaluation.candidates import ABSENT_CLASS_SCORE, candidate_class_scores
from llavaction.evaluation.ek100 import ScoresError, ek100_metrics, load_scores
from llavaction.metrics import (
    EpicActionMetrics,
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


def numpy_epic(verb_scores, noun_scores, verbs, nouns, verb_tail, noun_tail, unseen):
    """An independent computation of the EPIC definitions."""

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    out = {}
    top_v5 = np.argsort(-verb_scores, 1)[:, :5]
    top_n5 = np.argsort(-noun_scores, 1)[:, :5]
    vp, nq = softmax(verb_scores), softmax(noun_scores)
    action_hits = []
    for i in range(len(verbs)):
        tv = np.argsort(-vp[i])[:100]
        tn = np.argsort(-nq[i])[:100]
        pairs = np.outer(vp[i][tv], nq[i][tn])
        best = np.argsort(-pairs.ravel())[:5]
        ranked = [(tv[b // len(tn)], tn[b % len(tn)]) for b in best]
        action_hits.append([(v == verbs[i] and n == nouns[i]) for v, n in ranked])
    action_hits = np.array(action_hits)
    verb_hits = top_v5 == verbs[:, None]
    noun_hits = top_n5 == nouns[:, None]
    masks = {
        "all": np.ones(len(verbs), bool),
        "tail_verb": verb_tail,
        "tail_noun": noun_tail,
        "tail_action": verb_tail | noun_tail,
        "unseen": unseen,
    }
    for kind, hits in (("verb", verb_hits), ("noun", noun_hits), ("action", action_hits)):
        for k in (1, 5):
            out[f"all_{kind}_accuracy_at_{k}"] = 100 * hits[:, :k].any(1).mean()
        out[f"tail_{kind}_accuracy_at_1"] = 100 * hits[masks[f"tail_{kind}"], 0].mean()
        out[f"unseen_{kind}_accuracy_at_1"] = 100 * hits[masks["unseen"], 0].mean()
    return out


def test_ek100_metrics_equal_numpy_on_the_real_validation_split(epic_dir, tmp_path):
    ann = EpicAnnotations.load(epic_dir, "validation")
    segments = ann.segments[::3]  # spread over the split, so unseen participants are in it
    rng = np.random.default_rng(0)
    verbs = np.array([s.verb_class for s in segments])
    nouns = np.array([s.noun_class for s in segments])
    verb_scores = rng.normal(size=(len(segments), 97)).astype(np.float32)
    noun_scores = rng.normal(size=(len(segments), 300)).astype(np.float32)
    verb_scores[np.arange(len(verbs)), verbs] += rng.uniform(0, 4, len(verbs))  # better than chance
    noun_scores[np.arange(len(nouns)), nouns] += rng.uniform(0, 5, len(nouns))
    np.savez(
        tmp_path / "scores.npz",
        verb_output=verb_scores,
        noun_output=noun_scores,
        narration_id=np.array([s.narration_id for s in segments]),
    )
    args = [
        "ek100",
        "--scores",
        str(tmp_path / "scores.npz"),
        "--annotations",
        str(epic_dir),
        "--out",
        str(tmp_path / "ek100.json"),
    ]
    assert evaluate(args) == 2  # a third of the split: an error without --partial
    assert evaluate(args + ["--partial"]) == 0
    ours = json.loads((tmp_path / "ek100.json").read_text())
    assert ours.pop("segments") == len(segments) and ours.pop("split_segments") == 9668
    expected = numpy_epic(
        verb_scores,
        noun_scores,
        verbs,
        nouns,
        np.array([s.verb_class in ann.tail_verbs for s in segments]),
        np.array([s.noun_class in ann.tail_nouns for s in segments]),
        np.array([s.participant_id in ann.unseen_participants for s in segments]),
    )
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-3), key


def test_metric_on_a_hand_computed_example():
    metric = EpicActionMetrics()
    verb = torch.full((2, 97), -5.0)
    noun = torch.full((2, 300), -5.0)
    verb[0, 3], noun[0, 7] = 5.0, 5.0  # right verb and noun
    verb[1, 1], noun[1, 2] = 5.0, 5.0  # right verb, wrong noun (label 4)
    metric.update(
        verb,
        noun,
        torch.tensor([3, 1]),
        torch.tensor([7, 4]),
        torch.tensor([False, True]),
        torch.tensor([False, False]),
        torch.tensor([False, True]),
    )
    out = {k: float(v) for k, v in metric.compute().items()}
    assert out["all_verb_accuracy_at_1"] == 100 and out["all_noun_accuracy_at_1"] == 50
    assert out["all_action_accuracy_at_1"] == 50 and out["tail_verb_accuracy_at_1"] == 100
    assert out["tail_action_accuracy_at_1"] == 0 and out["unseen_noun_accuracy_at_1"] == 0


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


def run_mqa(ckpt, demo_questions, demo_shards, out, *extra):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = [
        sys.executable,
        "-m",
        "llavaction.evaluate",
        "mqa",
        "--questions",
        str(demo_questions["validation_mqa"]),
        "--shards",
        str(demo_shards["validation_mqa"]),
        "--checkpoint",
        str(ckpt),
        "--batch-size",
        "3",
        "--num-workers",
        "0",
        "--max-new-tokens",
        "12",
        "--out",
        str(out),
        *extra,
    ]
    result = subprocess.run(
        args, cwd=out.parent, capture_output=True, text=True, timeout=600, env=os.environ | {"PYTHONPATH": str(root)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), [
        json.loads(line) for line in open(out / "predictions.jsonl")
    ]


def original_checkpoint_at(demo_dir, folder):
    """A random-init tiny model in the original checkpoint layout, with the demo tokenizer."""
    from transformers import AutoTokenizer

    from llavaction.model import LlavaVideoModel, preset

    torch.manual_seed(0)
    LlavaVideoModel(preset("tiny")).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(demo_dir / "tokenizer")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def original_checkpoint(demo_dir, tmp_path_factory):
    return original_checkpoint_at(demo_dir, tmp_path_factory.mktemp("ckpt"))


@pytest.mark.slow
def test_mqa_identical_at_world_sizes_1_2_3(original_checkpoint, demo_questions, demo_shards, tmp_path):
    one, predictions_one = run_mqa(
        original_checkpoint, demo_questions, demo_shards, tmp_path / "one", "--mode", "score"
    )
    for devices in ("2", "3"):
        other, predictions = run_mqa(
            original_checkpoint,
            demo_questions,
            demo_shards,
            tmp_path / devices,
            "--devices",
            devices,
            "--mode",
            "score",
        )
        assert one["count"] == other["count"] == 8 and one["accuracy"] == other["accuracy"]
        assert [p["rule_choice_index"] for p in predictions_one] == [p["rule_choice_index"] for p in predictions]
    assert set(one["breakdown"]) >= {"verb_head", "verb_tail", "seen_participants", "unseen_participants"}
    assert list((tmp_path / "one").glob("*_samples_ek100_mqa.jsonl")) and list(
        (tmp_path / "one").glob("*_results.json")
    )


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
    assert results["settings"] == {
        "num_frames": 8,
        "time_instruction": False,
        "frame_times": False,
        "prior_actions": "none",
    }


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


def test_head_scores_and_candidates(demo_dir, demo_questions, demo_shards, tmp_path):
    from transformers import AutoTokenizer

    from llavaction.model import LlavaVideoModel, preset

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
    from llavaction.evaluate import main as evaluate
    from llavaction.jsonl import read_jsonl

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


@pytest.mark.slow
def test_mqa_on_two_nodes_equals_one_process(original_checkpoint, demo_questions, demo_shards, tmp_path):
    """--num-nodes 2 x 1 process on one machine (NODE_RANK, MASTER_ADDR=127.0.0.1, as the training test): the same
    predictions as one process, every question once."""
    import os
    import subprocess
    import sys

    from tests.test_cluster import ROOT, free_port

    one, predictions_one = run_mqa(
        original_checkpoint, demo_questions, demo_shards, tmp_path / "one", "--mode", "score"
    )
    out, port = tmp_path / "nodes", free_port()
    args = [sys.executable, "-m", "llavaction.evaluate", "mqa", "--questions", str(demo_questions["validation_mqa"])]
    args += ["--shards", str(demo_shards["validation_mqa"]), "--checkpoint", str(original_checkpoint)]
    args += ["--mode", "score", "--batch-size", "3", "--num-workers", "0", "--num-nodes", "2", "--out", str(out)]
    processes = [
        subprocess.Popen(
            args,
            env=os.environ
            | {
                "PYTHONPATH": str(ROOT),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NODE_RANK": str(node),
                "WORLD_SIZE": "2",
            },
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs[0][1][-3000:] + outputs[1][1][-3000:]
    results = json.loads((out / "results.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert results["count"] == one["count"] == 8 and results["accuracy"] == one["accuracy"]
    assert [p["rule_choice_index"] for p in predictions] == [p["rule_choice_index"] for p in predictions_one]


def test_an_original_checkpoint_is_read_once(original_checkpoint, demo_shards, monkeypatch):
    """One config.json read for its settings, its architecture and its weights; one DataModule linked as train.py."""
    from pathlib import Path

    from llavaction.args import EvaluationOptions, LoaderOptions
    from llavaction.evaluation.checkpoints import LoadedCheckpoint

    reads, real = [], Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self.name) or real(self, *a, **k))
    loaded = LoadedCheckpoint.open(original_checkpoint)
    module = loaded.module(EvaluationOptions(("letter",)))
    settings = loaded.question_settings([str(demo_shards["validation_mqa"])])
    data = loaded.datamodule([str(demo_shards["validation_mqa"])], settings, LoaderOptions(num_workers=0))
    assert reads.count("config.json") == 1 and module.model is not None
    assert data.hparams.tokens_per_frame == module.tokens_per_frame and data.tokenizer_path == module.tokenizer_path
    assert loaded.precision == "32-true" and settings.num_frames == 8
