"""EK-100 annotations: class texts and ids, the real validation split, prior actions, bad rows named by file and
line."""

import shutil

import pytest

from llavaction.ek100.annotations import (
    AnnotationError,
    EpicAnnotations,
    Segment,
    action_id,
    find_prior_actions,
    format_timestamp,
    noun_text,
    parse_timestamp,
    read_segments,
)


def test_class_texts_and_ids():
    assert noun_text("pan:dust") == "dust pan"
    assert noun_text("plate") == "plate"
    assert noun_text("machine:sous:vide") == "sous vide machine"  # the reference's parts[1:] + parts[:1]
    assert noun_text("oil:olive:bottle") == "olive bottle oil"
    assert action_id(12, 34) == 12034
    assert parse_timestamp("00:01:02.50") == pytest.approx(62.5)
    assert parse_timestamp(format_timestamp(3723.45)) == pytest.approx(3723.45)


def test_real_validation_split(epic_dir):
    ann = EpicAnnotations.load(epic_dir, "validation")
    assert len(ann.segments) == 9668
    assert len(ann.verbs) == 97 and len(ann.nouns) == 300
    assert ann.unseen_participants == {"P18", "P32"}
    assert ann.action_text(1, 2) == "put plate"
    # dense index: the reference's label map, "verb:noun" strings sorted over the pairs of every split CSV present
    names = [f"{v}:{n}" for v, n in ann.vocabulary.pairs]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert [ann.vocabulary.index[p] for p in ann.vocabulary.pairs] == list(range(len(ann.vocabulary)))
    assert names.index("0:10") < names.index("0:2")  # string order, not numeric
    numeric = sorted(ann.vocabulary.pairs)
    assert sum(a != b for a, b in zip(numeric, ann.vocabulary.pairs)) > 0.9 * len(numeric)
    assert ann.videos["P01_11"].fps == pytest.approx(59.94, abs=0.01)


def _segment(nid, start, stop, verb=0, noun=0):
    return Segment(nid, "P01", "P01_01", start, stop, 1, 2, f"n{nid}", verb, noun)


def test_prior_actions_need_two_close_predecessors():
    segments = [_segment("a", 0, 1), _segment("b", 2, 3, 1, 1), _segment("c", 5.5, 6), _segment("d", 10, 11)]
    priors = find_prior_actions(segments, ["take", "put"], ["plate", "pan:dust"])
    assert priors["a"] == [] and priors["b"] == []
    assert [p.narration_id for p in priors["c"]] == ["a", "b"]  # gaps 1.0 and 2.5 s
    assert priors["c"][1].text == "put dust pan"
    assert priors["c"][0].offset_sec == 5.5 and priors["c"][1].offset_sec == 3.5
    assert priors["d"] == []  # gap 4 s
    narrated = find_prior_actions(segments, ["take", "put"], ["plate", "pan:dust"], representation="narration")
    assert [p.text for p in narrated["c"]] == ["na", "nb"]


def test_prior_actions_order_rounding_and_overlaps():
    # ordered by stop time, ties in file order; offsets rounded to 2 decimals
    segments = [_segment("a", 0.004, 1), _segment("b", 1.5, 2), _segment("c", 2.0, 2), _segment("d", 3.123, 4)]
    priors = find_prior_actions(segments, ["take"], ["plate"])
    assert [p.narration_id for p in priors["d"]] == ["b", "c"]
    assert [p.offset_sec for p in priors["d"]] == [1.62, 1.12]
    assert [p.narration_id for p in priors["c"]] == ["a", "b"]
    # a long earlier segment that starts after the current one would give a negative offset: left out
    overlapping = [_segment("a", 0, 1), _segment("b", 1.5, 5), _segment("c", 1.2, 5.5)]
    assert find_prior_actions(overlapping, ["take"], ["plate"])["c"] == []
    shifted = [overlapping[0], overlapping[1], _segment("c", 1.6, 5.5)]
    assert [p.offset_sec for p in find_prior_actions(shifted, ["take"], ["plate"])["c"]] == [1.6, 0.1]


def test_noun_texts_from_v2_when_present(tmp_path, epic_dir):
    for name in ("EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv", "EPIC_100_validation.csv"):
        shutil.copy(epic_dir / name, tmp_path / name)
    v2 = (epic_dir / "EPIC_100_noun_classes.csv").read_text().replace("\n1,spoon,", "\n1,spoon:tea,", 1)
    (tmp_path / "EPIC_100_noun_classes_v2.csv").write_text(v2 + "300,hand:left,\"['hand:left']\",hand\n")
    ann = EpicAnnotations.load(tmp_path, "validation")
    assert ann.nouns[1] == "spoon:tea" and ann.action_text(0, 1) == "take tea spoon"


HEADER = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
    "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
)


GOOD = "P01_01_0,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,60,120,take plate,take,0,plate,2,['plate'],[2]\n"


@pytest.mark.parametrize(
    "row, reason",
    [
        (GOOD.replace("00:00:02.00", "00:00:xx"), "unparseable timestamp"),
        (GOOD.replace("00:00:02.00", "00:00:00.50"), "before start"),
        (GOOD.replace(",60,120,", ",60,30,"), "stop 00:00:02.00 (frame 30) is before start 00:00:01.00 (frame 60)"),
        (GOOD.replace(",0,plate,2,", ",120,plate,2,"), "verb_class 120 outside"),
        (GOOD.replace(",0,plate,2,", ",0,plate,301,"), "noun_class 301 outside"),
        (GOOD, "duplicated narration_id"),
    ],
)
def test_bad_rows_name_file_line_and_reason(tmp_path, row, reason):
    path = tmp_path / "EPIC_100_validation.csv"
    path.write_text(HEADER + GOOD + row)
    with pytest.raises(AnnotationError) as err:
        read_segments(path, 97, 300)
    assert f"{path}:3:" in str(err.value) and reason in str(err.value)
    segments, skipped = read_segments(path, 97, 300, skip_bad=True)
    assert len(segments) == 1 and len(skipped) == 1 and skipped[0].line == 3 and reason in skipped[0].reason


def test_missing_column(tmp_path):
    path = tmp_path / "EPIC_100_validation.csv"
    path.write_text(HEADER.replace(",all_noun_classes", "") + GOOD.rsplit(",", 1)[0] + "\n")
    with pytest.raises(AnnotationError, match=r":1: missing column\(s\) all_noun_classes"):
        read_segments(path, 97, 300)


def test_load_reports_skipped(tmp_path, epic_dir):
    for name in ("EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv"):
        shutil.copy(epic_dir / name, tmp_path / name)
    (tmp_path / "EPIC_100_validation.csv").write_text(HEADER + GOOD + GOOD)
    with pytest.raises(AnnotationError):
        EpicAnnotations.load(tmp_path, "validation")
    ann = EpicAnnotations.load(tmp_path, "validation", skip_bad=True)
    assert len(ann.segments) == 1 and len(ann.skipped) == 1
