"""Bad annotations and prediction files: one line naming the file, line or segment; --skip-bad lists what it skips."""

import json
import shutil
from pathlib import Path

import pytest

from data_prep.build_mqa import main as build_mqa
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import one_line_error

HEADER = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
    "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
)


def row(nid: str, start: str, stop: str, verb: int, noun: int, narration: str = "take plate") -> str:
    return f"{nid},P01,P01_01,{start},{start},{stop},60,120,{narration},take,{verb},plate,{noun},['plate'],[{noun}]\n"


@pytest.fixture
def annotations(tmp_path, epic_dir) -> Path:
    """An annotation folder with a small hand-written validation split and the real class files."""
    folder = tmp_path / "ann"
    folder.mkdir()
    for name in ("EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv"):
        shutil.copy(epic_dir / name, folder / name)
    rows = [
        row(f"P01_01_{i}", f"00:00:{i:02d}.00", f"00:00:{i:02d}.50", i % 4, 2 + i % 3, f"take plate {i}")
        for i in range(12)
    ]
    (folder / "EPIC_100_validation.csv").write_text(HEADER + "".join(rows))
    return folder


def run_build(annotations: Path, out: Path, *extra, distractors: str = "random") -> int:
    return build_mqa(
        [
            "--annotations",
            str(annotations),
            "--split",
            "validation",
            "--distractors",
            distractors,
            "--out",
            str(out),
            *extra,
        ]
    )


def build_with_predictions(annotations: Path, predictions: Path, out: Path, *extra) -> int:
    return run_build(annotations, out, "--predictions", str(predictions), *extra, distractors="predictions")


def test_predictions_keyed_by_row_follow_the_csv_rows_across_a_skipped_row(annotations, tmp_path):
    """The reference's prediction files are keyed by the CSV's data row: a skipped bad row must not shift them."""
    path = annotations / "EPIC_100_validation.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("00:00:02.50", "00:00:01.00")  # data row 2: stop before start
    path.write_text("".join(lines))
    wrong = {0: "5:5", 1: "6:6", 2: "7:7", 3: "8:8", 4: "9:9", 5: "10:10", 6: "11:11"}
    predictions = {
        str(r): {"predictions": [f"{r}:{r + 20}", wrong[r % 7], "0:9", "1:9", "2:9", "3:9"]} for r in range(12)
    }
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    out = tmp_path / "q.jsonl"
    assert build_with_predictions(annotations, tmp_path / "p.json", out, "--skip-bad") == 0
    questions = {q["narration_id"]: q for q in read_jsonl(out)}
    assert "P01_01_2" not in questions
    for number in (1, 3, 4, 11):  # data row == the number in these narration ids
        assert f"{number}:{number + 20}" in questions[f"P01_01_{number}"]["option_actions"]


def test_annotation_faults(annotations, tmp_path, capsys):
    path = annotations / "EPIC_100_validation.csv"
    good = path.read_bytes()
    path.write_bytes(good.replace(b"take plate 0", b"take pl\xe4te", 1))  # latin-1, not UTF-8: data row 0, line 2
    assert run_build(annotations, tmp_path / "q.jsonl") == 2
    assert one_line_error(capsys) == f"error: {path}:2: not UTF-8 text"
    assert run_build(annotations, tmp_path / "q.jsonl", "--skip-bad") == 0
    assert len(read_jsonl(tmp_path / "q.jsonl")) == 11 and "1 bad rows skipped" in capsys.readouterr().err
    path.write_text(HEADER)
    assert run_build(annotations, tmp_path / "q.jsonl") == 2
    assert "holds no segment rows" in one_line_error(capsys)
    path.write_bytes(good)
    for mode in ("random", "annotations"):
        assert run_build(annotations, tmp_path / "q.jsonl", "--num-options", "13", "--distractors", mode) == 2
        assert one_line_error(capsys) == (
            f"error: --num-options 13 needs at least 13 distinct actions; the annotations in {annotations} hold 12"
        )
    assert run_build(annotations, tmp_path) == 2
    assert "an existing directory" in one_line_error(capsys)


def test_skip_bad_reports_the_other_split_too(annotations, tmp_path, capsys):
    (annotations / "EPIC_100_train.csv").write_text(HEADER + row("P02_01_0", "00:00:09.00", "00:00:01.00", 1, 2))
    assert run_build(annotations, tmp_path / "q.jsonl", "--skip-bad") == 0
    skipped = read_jsonl(tmp_path / "q.skipped.jsonl")
    assert [s["path"] for s in skipped] == [str(annotations / "EPIC_100_train.csv")] and skipped[0]["line"] == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "p.json: not valid JSON"),
        (json.dumps({"P01_01_0": {"predictions": ["open:drawer"]}}), "p.json: P01_01_0: action 'open:drawer' is not"),
        (json.dumps({"P01_01_0": ["1:2"]}), "p.json: P01_01_0: expected {'predictions'"),
        (json.dumps({}), "p.json: no predictions for P01_01_0 (data row 0)"),
    ],
)
def test_bad_prediction_files_name_file_and_segment(annotations, tmp_path, capsys, content, message):
    (tmp_path / "p.json").write_text(content)
    assert build_with_predictions(annotations, tmp_path / "p.json", tmp_path / "q.jsonl") == 2
    assert message in one_line_error(capsys)


def test_a_segment_past_its_video_end_is_a_bad_row(annotations, tmp_path, capsys):
    """Rows 10 and 11 end at 10.5 s and 11.5 s; the video lasts 9.4 s: there are no frames there (a rounding short of
    the end, as EK-100 has once, is kept)."""
    (annotations / "EPIC_100_video_info.csv").write_text("video_id,duration,fps,resolution\nP01_01,9.4,50,1920x1080\n")
    assert run_build(annotations, tmp_path / "q.jsonl") == 2
    path = annotations / "EPIC_100_validation.csv"
    assert one_line_error(capsys) == (
        f"error: {path}:12: P01_01_10 ends at 10.50 s, past the end of P01_01 (9.40 s in EPIC_100_video_info.csv)"
    )
    assert run_build(annotations, tmp_path / "q.jsonl", "--skip-bad") == 0
    assert len(read_jsonl(tmp_path / "q.jsonl")) == 10 and "2 bad rows skipped" in capsys.readouterr().err
    skipped = read_jsonl(tmp_path / "q.skipped.jsonl")
    assert [s["line"] for s in skipped] == [12, 13] and "past the end of P01_01" in skipped[0]["reason"]


def test_optional_csvs_that_change_figures_are_noted_when_absent(annotations, tmp_path, capsys):
    assert run_build(annotations, tmp_path / "q.jsonl") == 0
    err = capsys.readouterr().err
    assert "EPIC_100_tail_verbs.csv (no verb is tail)" in err
    assert "EPIC_100_unseen_participant_ids_validation.csv (no participant is unseen)" in err
    # a folder without a training CSV (a newcomer's own data): what that changes is said too
    assert "EPIC_100_train.csv (the action vocabulary (action_index) and the narration options come from the " in err
    assert "hard distractors are weighted by this split's own action counts" in err
    (annotations / "EPIC_100_tail_verbs.csv").write_text("verb\n0\n")
    assert run_build(annotations, tmp_path / "q.jsonl") == 0
    assert "EPIC_100_tail_verbs.csv" not in capsys.readouterr().err
