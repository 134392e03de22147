"""Data preparation as array tasks: the parts of N tasks, merged, equal one run sample for sample; a killed task
resumes; a missing or foreign part is refused; readers use the merged set unchanged."""

import json
import shutil

import pytest

from data_prep import extract_frames as extract_module
from data_prep.extract_frames import extract
from data_prep.job_array import ArrayJob
from data_prep.merge_shards import main as merge
from llavaction.data.shards import iter_samples, location_sizes, read_index, read_sizes
from llavaction.utils.files import OUTPUT_MARKER
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import extract_config


def samples_of(location) -> dict[str, dict]:
    """{key: every field but the URL} of a shard set, read as training and evaluation read it (counts checked)."""
    sizes = location_sizes([str(location)])
    return {s["__key__"]: {k: v for k, v in s.items() if k != "__url__"} for s in iter_samples(sizes, sizes)}


@pytest.fixture(scope="module")
def questions(demo_questions):
    return read_jsonl(demo_questions["train_mqa"])


@pytest.fixture(scope="module")
def single(questions, demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "shards"
    extract(questions, out, extract_config(demo_dir / "videos"))
    return out


def test_three_tasks_merged_equal_one_run(questions, single, demo_dir, tmp_path, capsys):
    out = tmp_path / "shards"
    for index in range(3):
        extract(questions, out, extract_config(demo_dir / "videos"), task=ArrayJob(index, 3))
    assert sorted(p.name for p in out.iterdir() if p.name != OUTPUT_MARKER) == [
        f"part-000{i}-of-0003" for i in range(3)
    ]
    assert merge(["--out", str(out)]) == 0
    merged, whole = samples_of(out), samples_of(single)
    assert merged.keys() == whole.keys() and merged == whole  # same keys, frame bytes and metadata
    assert sum(read_sizes(out).values()) == sum(read_sizes(single).values())
    entries = {e["key"]: e for shard in read_index(out).values() for e in shard}
    assert entries == {e["key"]: e for shard in read_index(single).values() for e in shard}  # same lines, digests
    from llavaction.data.sources import source_items

    assert len(source_items(str(out))) == len(source_items(str(single)))  # training plans the merged set as one
    parts = [sum(json.loads((p / "sizes.json").read_text()).values()) for p in sorted(out.iterdir()) if p.is_dir()]
    assert all(parts) and max(parts) - min(parts) <= max(parts) // 2 + 8  # balanced by frames decoded


def test_a_killed_task_resumes(questions, single, demo_dir, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    config = extract_config(demo_dir / "videos")
    real, calls = extract_module.decode_video, []

    def killed_after_one_video(job):
        calls.append(job.video_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(extract_module, "decode_video", killed_after_one_video)
    with pytest.raises(KeyboardInterrupt):
        extract(questions, out, config, task=ArrayJob(0, 2))
    monkeypatch.setattr(extract_module, "decode_video", real)
    assert not (out / "part-0000-of-0002" / "sizes.json").exists()
    extract(questions, out, config, task=ArrayJob(0, 2), resume=True)
    extract(questions, out, config, task=ArrayJob(1, 2))
    assert merge(["--out", str(out)]) == 0
    assert samples_of(out) == samples_of(single)


def test_missing_unfinished_and_foreign_parts_are_refused(questions, demo_dir, tmp_path, capsys):
    out = tmp_path / "shards"
    config = extract_config(demo_dir / "videos")
    extract(questions, out, config, task=ArrayJob(0, 2))
    assert merge(["--out", str(out)]) == 2
    assert "1 of the 2 parts are missing (task 1 first)" in capsys.readouterr().err
    extract(questions, out, extract_config(demo_dir / "videos", size=16), task=ArrayJob(1, 2))
    assert merge(["--out", str(out)]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "part-0001-of-0002: written with other settings" in error[0]
    other = [q | {"options": q["options"][::-1]} for q in questions]
    shutil.rmtree(out / "part-0001-of-0002")  # task 1 again, from another version of the question file
    extract(other, out, config, task=ArrayJob(1, 2))
    assert merge(["--out", str(out)]) == 2
    assert "written from other questions" in capsys.readouterr().err
    (out / "part-0001-of-0002" / "sizes.json").unlink()
    assert merge(["--out", str(out)]) == 2
    assert "unfinished (no sizes.json); rerun task 1 with --resume" in capsys.readouterr().err


def test_array_task_from_slurm(monkeypatch):
    assert ArrayJob.from_args(None, None) is None
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "8")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert ArrayJob.from_args(None, None) == ArrayJob(3, 8)
    assert ArrayJob.from_args(2, 1) == ArrayJob(1, 2)
    with pytest.raises(ValueError, match="task index 5 of 2"):
        ArrayJob.from_args(2, 5)
    costs = [5.0, 1.0, 1.0, 1.0, 4.0, 1.0, 3.0]
    shares = [ArrayJob(i, 3).share(costs) for i in range(3)]
    assert [u for share in shares for u in share] == list(range(len(costs)))  # contiguous, covering, disjoint


def test_replay_tasks_merged_equal_one_run(demo_dir, tmp_path):
    from data_prep.build_replay import main as build_replay
    from tests.helpers import write_bucket

    captions, qa = write_bucket(tmp_path / "178k", demo_dir / "videos")
    common = ["--conversations", str(captions), str(qa), "--videos", str(tmp_path / "178k")]
    assert build_replay([*common, "--out", str(tmp_path / "one.jsonl")]) == 0
    out = tmp_path / "array.jsonl"
    for index in range(2):
        assert build_replay([*common, "--out", str(out), "--num-tasks", "2", "--task-index", str(index)]) == 0
    assert merge(["--out", str(out)]) == 0
    assert read_jsonl(out) == read_jsonl(tmp_path / "one.jsonl")
    assert read_jsonl(tmp_path / "array.skipped.jsonl") == read_jsonl(tmp_path / "one.skipped.jsonl")


@pytest.mark.parametrize("count,index", [(1, 5), (3, 3), (0, 0), (2, -1)])
def test_an_impossible_task_index_is_refused(count, index):
    with pytest.raises(ValueError, match=f"task index {index} of {count} task"):
        ArrayJob.from_args(count, index)
