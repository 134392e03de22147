"""The error-analysis report of an evaluation: tables, figures, gallery, comparisons, refused inputs, escaping."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llavaction.cli.analyze import main as analyze
from llavaction.evaluation.report_html import strip_file
from tests.helpers import ROOT, one_line_exit, original_checkpoint_at, run_mqa


@pytest.fixture(scope="module")
def evaluations(demo_dir, demo_questions, demo_shards, tmp_path_factory):
    """Evaluations of the demo questions: a random-init tiny model by the paper's rule and by letter scores, and
    another random-init model by letter scores."""
    root = tmp_path_factory.mktemp("evals")
    checkpoint = original_checkpoint_at(demo_dir, root / "ckpt")
    run_mqa(checkpoint, demo_questions, demo_shards, root / "generate")
    run_mqa(checkpoint, demo_questions, demo_shards, root / "score", "--mode", "score")
    other = original_checkpoint_at(demo_dir, root / "other_ckpt", seed=1)
    run_mqa(other, demo_questions, demo_shards, root / "other_score", "--mode", "score")
    return root


def build(evaluations, demo_dir, demo_shards, out, *extra, results="generate"):
    assert (
        analyze(
            [
                str(evaluations / results),
                "--shards",
                str(demo_shards["validation_mqa"]),
                "--annotations",
                str(demo_dir / "annotations"),
                "--out",
                str(out),
                *extra,
            ]
        )
        == 0
    )
    return json.loads((out / "analysis.json").read_text())


def test_report_tables_figures_and_gallery(evaluations, demo_dir, demo_shards, tmp_path):
    analysis = build(evaluations, demo_dir, demo_shards, tmp_path / "report")
    count = analysis["count"]
    assert count == 8
    for table in ("by_verb", "by_noun", "by_duration", "by_options_sharing_verb_or_noun", "by_participants"):
        assert sum(entry["count"] for entry in analysis[table]) == count, table
        assert all(e["low"] <= e["accuracy"] <= e["high"] for e in analysis[table]), table  # each with its interval
    for kind in ("verb", "noun"):
        confusion = analysis[f"{kind}_confusion"]
        assert np.array(confusion["counts"]).sum() == count  # the top 15 covers the demo's 8 classes
    names = {entry["name"] for entry in analysis["by_verb"]}
    assert names <= {"move-left", "move-right", "lift", "lower", "grow", "shrink", "appear", "disappear"}
    page = (tmp_path / "report" / "index.html").read_text()
    for figure in ("verbs.png", "nouns.png", "verb_confusion.png", "duration.png", "hardness.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 0 and figure in page
    assert any(name in page for name in names)
    items = analysis["gallery"]["items"]
    assert len(items) == sum(
        1 for line in open(evaluations / "generate" / "predictions.jsonl") if not json.loads(line)["correct"]
    )
    assert all((tmp_path / "report" / "strips" / strip_file(key)).stat().st_size > 0 for key in items)
    assert page.count("class=item ") == len(items)
    # one rule: the confusion counts are those of the options the paper's rule chose, recomputed from the records
    records = [json.loads(line) for line in open(evaluations / "generate" / "predictions.jsonl")]
    names = {entry["key"]: entry["name"] for entry in analysis["by_verb"]}
    confusion = analysis["verb_confusion"]
    expected = np.zeros_like(np.array(confusion["counts"]))
    for record in records:
        chosen = record["rule_choice_index"]
        column = "none" if chosen is None else names[int(record["option_actions"][chosen].split(":")[0])]
        column = column if column in confusion["columns"] else "other"
        expected[confusion["rows"].index(names[record["verb_class"]]), confusion["columns"].index(column)] += 1
    assert expected.tolist() == confusion["counts"]
    by_verb = {entry["name"]: entry for entry in analysis["by_verb"]}
    for row_name, counts in zip(confusion["rows"], confusion["counts"]):  # the bars never exceed the diagonal
        assert counts[confusion["columns"].index(row_name)] >= by_verb[row_name]["correct"]


def test_comparing_two_evaluations_and_a_sampled_gallery(evaluations, demo_dir, demo_shards, tmp_path):
    analysis = build(
        evaluations,
        demo_dir,
        demo_shards,
        tmp_path / "compare",
        "--compare",
        str(evaluations / "other_score"),
        "--gallery-size",
        "2",
        results="score",
    )
    ours = {
        json.loads(line)["narration_id"]: json.loads(line)["correct"]
        for line in open(evaluations / "score" / "predictions.jsonl")
    }
    theirs = {
        json.loads(line)["narration_id"]: json.loads(line)["correct"]
        for line in open(evaluations / "other_score" / "predictions.jsonl")
    }
    differing = sorted(k for k in ours if ours[k] != theirs[k])
    assert set(analysis["gallery"]["items"]) <= set(differing)
    assert len(analysis["gallery"]["items"]) == min(2, len(differing))
    # the paired comparison: B (this evaluation) less A (--compare), with its interval over the 2 videos
    comparison = analysis["comparison"]
    expected = 100 * (sum(ours.values()) - sum(theirs.values())) / len(ours)
    assert comparison["difference"]["value"] == pytest.approx(expected, abs=1e-3)
    assert comparison["difference"]["clusters"] == 2 and comparison["questions"] == 8
    assert 0 < comparison["p_value"] <= 1
    low, high = analysis["accuracy_interval"]["low"], analysis["accuracy_interval"]["high"]
    assert low <= analysis["accuracy"] <= high
    assert "paired p =" in (tmp_path / "compare" / "index.html").read_text()


def test_evaluate_compare_gives_the_difference_its_interval_and_p(evaluations, tmp_path, capsys):
    from llavaction.cli.evaluate import main as evaluate

    same = [str(evaluations / "generate"), str(evaluations / "generate" / "predictions.jsonl")]
    assert evaluate(["compare", *same, "--out", str(tmp_path / "same.json")]) == 0
    assert "B - A: +0.0 points [+0.0, +0.0], p = 1.000 (8 questions, 2 videos)" in capsys.readouterr().out
    result = json.loads((tmp_path / "same.json").read_text())
    assert result["difference"]["value"] == 0 and result["p_value"] == 1
    assert evaluate(["compare", str(evaluations / "other_score"), str(evaluations / "score")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("A: ") and lines[1].startswith("B: ") and lines[2].startswith("B - A: ")
    assert lines[2].endswith("(both scored by letter scores)")


def test_evaluations_scored_by_different_rules_are_not_compared(evaluations, demo_dir, demo_shards, tmp_path, capsys):
    """The paper's rule on greedy answers against letter scoring: a difference between rules, not models; refused by
    `evaluate compare` and `analyze --compare`, each naming both rules. A file that names no rule is refused too."""
    from llavaction.cli.evaluate import main as evaluate

    generate, score = str(evaluations / "generate"), str(evaluations / "score")
    error = one_line_exit(capsys, lambda: evaluate(["compare", score, generate]))
    assert f"{score} is scored by letter scores, {generate} by the paper's rule on greedy answers" in error
    args = [generate, "--shards", str(demo_shards["validation_mqa"]), "--compare", score, "--out", str(tmp_path / "r")]
    error = one_line_exit(capsys, lambda: analyze(args))
    assert "is scored by letter scores" in error and not (tmp_path / "r").exists()
    bare = write_predictions(tmp_path / "bare", [json.loads(line) for line in open(Path(score) / "predictions.jsonl")])
    error = one_line_exit(capsys, lambda: evaluate(["compare", str(bare), score]))
    assert f"{bare}: no results.json names the rule" in error


def test_another_build_of_the_questions_is_refused(evaluations, tmp_path, capsys):
    """Two builds of one split (4 and 5 options) share their ids but not their questions: not comparable."""
    from llavaction.cli.evaluate import main as evaluate

    records = records_with(evaluations)
    four = [r | {"options": r["options"][:4], "answer_index": min(r["answer_index"], 3)} for r in records]
    other = write_predictions(tmp_path / "four", four)
    assert evaluate(["compare", str(other), str(evaluations / "generate")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "8 questions were asked otherwise in the two evaluations" in error and "different builds" in error


def test_missing_evaluation_is_one_line(tmp_path, demo_shards, capsys):
    assert (
        analyze(
            [str(tmp_path / "nothing"), "--shards", str(demo_shards["validation_mqa"]), "--out", str(tmp_path / "r")]
        )
        == 2
    )
    assert capsys.readouterr().err.strip().startswith(f"error: {tmp_path / 'nothing' / 'predictions.jsonl'}: not found")


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(evaluations, demo_dir, demo_shards, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    build(evaluations, demo_dir, demo_shards, tmp_path / "report")
    page = (tmp_path / "report" / "index.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--window-size=1300,2400"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert 'data-status="ready"' in dom.stdout, dom.stderr[-2000:]  # the page's script ran to the end
    assert 'data-broken-figures="0"' in dom.stdout  # every figure loaded
    artefacts = ROOT / "test-artifacts"
    artefacts.mkdir(exist_ok=True)
    shot = subprocess.run(
        [browser, *flags, f"--screenshot={artefacts / 'analyze_report.png'}", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and (artefacts / "analyze_report.png").stat().st_size > 10_000, shot.stderr[-2000:]


def records_with(evaluations, **changes) -> list[dict]:
    records = [json.loads(line) for line in open(evaluations / "generate" / "predictions.jsonl")]
    return [r | changes for r in records]


def write_predictions(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("duplicated", "appears twice"),
        ("empty", "holds no prediction"),
        ("missing field", "a prediction without correct"),
        ("contradiction", "predictions.jsonl:3: correct is True but rule_choice_index"),
        ("different questions", "answered different questions (8 and 7, 7 in both); compare them on the 7 shared"),
    ],
)
def test_reports_refuse_inputs_that_would_mislead(evaluations, demo_dir, demo_shards, tmp_path, capsys, case, message):
    records = records_with(evaluations)
    compare = []
    if case == "duplicated":
        records = records + records[:1]
    elif case == "empty":
        records = []
    elif case == "missing field":
        del records[2]["correct"]
    elif case == "contradiction":  # an edited record: its flag says right, its chosen option says otherwise
        records[2] |= {"correct": True, "rule_choice_index": (records[2]["answer_index"] + 1) % 5}
    else:
        compare = ["--compare", str(write_predictions(tmp_path / "other", records[1:]))]
    folder = write_predictions(tmp_path / "eval", records)
    args = [str(folder), "--shards", str(demo_shards["validation_mqa"]), "--out", str(tmp_path / "r"), *compare]
    assert analyze(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0] and ("predictions.jsonl" in error[0] or compare), error
    if compare:  # asked for, the shared questions are compared and the report says so
        assert analyze([*args, "--intersection"]) == 0
        analysis = json.loads((tmp_path / "r" / "analysis.json").read_text())
        assert analysis["count"] == 7 and "7 questions both evaluations answered" in analysis["gallery"]["note"]


def test_hostile_strings_are_escaped_everywhere(evaluations, demo_dir, demo_shards, tmp_path):
    hostile = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
    records = records_with(evaluations)
    for record in records:
        record["options"] = [hostile + option for option in record["options"]]
        record["generation"] = hostile
        record["correct"], record["rule_choice_index"] = False, None
    folder = write_predictions(tmp_path / "eval" / hostile.replace("/", "_"), records)
    out = tmp_path / "report"
    assert analyze([str(folder), "--shards", str(demo_shards["validation_mqa"]), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "<script>alert" not in page and "<img src=x" not in page and "onerror=alert(2)>" not in page
    assert page.count("<script>") == 1  # the page's own
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert all(p.parent == out / "strips" for p in out.rglob("*.jpg"))  # no file outside the report
    from llavaction.evaluation.report_html import item_html, text

    row = records[0] | {"narration_id": '../../x" onload="alert(3)', "verb_class": 0, "noun_class": 0}
    html = item_html(row, "wrong", {0: hostile}, {0: hostile}, None)
    assert 'onload="alert' not in html and "../../x" not in html.split("src=")[1].split(">")[0]
    assert text('"<&') == "&quot;&lt;&amp;"
