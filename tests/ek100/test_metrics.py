"""EPIC's action-recognition metrics against NumPy on the real validation split and a hand-computed example."""

import json

import numpy as np
import pytest
import torch

from llavaction.cli.evaluate import main as evaluate
from llavaction.ek100.annotations import EpicAnnotations
from llavaction.ek100.metrics import EpicActionMetrics


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
    intervals = ours.pop("intervals")  # clustered by video, around each top-k figure
    assert ours.pop("not_applicable") == {}  # the real split has tail classes and unseen participants
    assert intervals and all(i["low"] <= ours[name] <= i["high"] for name, i in intervals.items())
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
    assert "tail_noun_accuracy_at_1" not in out  # no tail noun among the segments: not applicable, never 0


def test_figures_without_tail_classes_or_unseen_participants_are_not_applicable(epic_dir, tmp_path, capsys):
    """Annotations that define no tail class and no unseen participant (a newcomer's own data): those figures are
    not applicable, said so, never 0.0."""
    import shutil

    from llavaction.cli.evaluate import main as evaluate

    own = tmp_path / "annotations"
    shutil.copytree(epic_dir, own)
    for name in (
        "EPIC_100_tail_verbs.csv",
        "EPIC_100_tail_nouns.csv",
        "EPIC_100_unseen_participant_ids_validation.csv",
    ):
        (own / name).unlink()
    segments = EpicAnnotations.load(own, "validation").segments[:40]
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "scores.npz",
        verb_output=rng.normal(size=(len(segments), 97)).astype(np.float32),
        noun_output=rng.normal(size=(len(segments), 300)).astype(np.float32),
        narration_id=np.array([s.narration_id for s in segments]),
    )
    args = ["ek100", "--scores", str(tmp_path / "scores.npz"), "--annotations", str(own), "--partial"]
    assert evaluate([*args, "--out", str(tmp_path / "ek100.json")]) == 0
    figures = json.loads((tmp_path / "ek100.json").read_text())
    inapplicable = [k for k in figures["not_applicable"]]
    assert sorted(inapplicable) == sorted(k for k in figures if k.startswith(("tail_", "unseen_")))
    assert all(figures[k] is None for k in inapplicable) and figures["all_verb_accuracy_at_1"] is not None
    assert (
        "tail_verb_accuracy_at_1" + " " * 9 + "     n/a  (not applicable: no tail verb segment"
        in capsys.readouterr().out
    )
