"""Question files checked against the shards before any forward pass: missing and stale questions refused."""

import json

import pytest

from llavaction.utils.jsonl import read_jsonl


def test_evaluation_finds_missing_and_stale_questions_before_predicting(demo_questions, demo_shards, tmp_path):
    from llavaction.evaluation.questions import check_against_shards, read_questions

    shards = [str(demo_shards["validation_mqa"])]
    questions = read_jsonl(demo_questions["validation_mqa"])
    check_against_shards({"q.jsonl": questions}, shards)
    with pytest.raises(ValueError, match=r"q.jsonl: 1 questions have no frames in the shards .*\['NOPE_1'\]"):
        check_against_shards({"q.jsonl": questions + [questions[0] | {"narration_id": "NOPE_1"}]}, shards)
    # v2 of the question file, the same ids, other option order: the shards hold v1's, so they are refused
    v2 = [dict(q) for q in questions]
    v2[3]["options"] = v2[3]["options"][::-1]
    v2[5]["answer_index"] = (v2[5]["answer_index"] + 1) % len(v2[5]["options"])
    with pytest.raises(ValueError, match=r"v2.jsonl: 2 of its 8 questions differ from the shards' copy .* options \["):
        check_against_shards({"v2.jsonl": v2}, shards)
    (tmp_path / "dup.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions + questions[:1]))
    with pytest.raises(ValueError, match=r"dup.jsonl:9: question .* is asked twice \(first at .*dup.jsonl:1\)"):
        read_questions([tmp_path / "dup.jsonl"])
