"""extract_frames --add: a store takes the clips it lacks, with its own clip rule, and is read as one set; two writers
never list a key twice; a plain extraction never replaces a store or a user's files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from data_prep.extract_frames import extract
from data_prep.extract_frames import main as extract_frames
from data_prep.job_array import ArrayJob
from data_prep.merge_shards import main as merge_shards
from data_prep.stores import clips_to_add, list_addition
from llavaction.data.shards import indexed_keys, iter_samples, read_index, read_sizes, shard_urls
from llavaction.data.store import check_clips
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import ROOT, extract_args, extract_config, one_line_exit


def add_args(questions, videos, store, *extra):
    """The tests' shards' clip rule (8 frames of 32 px, q90, squash), adding to `store`."""
    return extract_args(questions, videos, store, "--num-frames", "8", "--add", *extra)


def test_a_store_takes_the_clips_it_lacks_and_reads_as_one_set(demo_dir, demo_questions, demo_shards, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(demo_shards["validation_mqa"], store)  # the validation clips; the training ones are lacking
    train = demo_questions["train_mqa"]
    assert extract_frames(add_args(train, demo_dir / "videos", store)) == 0
    held = {k for entries in read_index(store).values() for k in (e["key"] for e in entries)}
    train_keys = {q["narration_id"] for q in read_jsonl(train)}
    assert held == train_keys | {q["narration_id"] for q in read_jsonl(demo_questions["validation_mqa"])}
    assert sum(read_sizes(store).values()) == len(held)
    check_clips({"train": read_jsonl(train)}, [str(store)])
    # the added frames are the ones the training set's own shards hold, byte for byte
    own = {s["__key__"]: s for s in iter_samples(shard_urls(demo_shards["train_mqa"]))}
    for sample in iter_samples(shard_urls(store)):
        if sample["__key__"] in train_keys:
            assert sample["000.jpg"] == own[sample["__key__"]]["000.jpg"]
            assert sample["007.jpg"] == own[sample["__key__"]]["007.jpg"]
    # the same file again: nothing to add, nothing decoded
    capsys.readouterr()
    assert extract_frames(add_args(train, demo_dir / "videos", store)) == 0
    assert "nothing to add" in capsys.readouterr().err
    # another clip rule, or a key the store holds for another clip: refused, the store unchanged
    before = (store / "sizes.json").read_bytes()
    error = one_line_exit(capsys, lambda: extract_frames(add_args(train, demo_dir / "videos", store, "--size", "16")))
    assert "its clips have size 32, this run asks 16; a store holds one clip rule" in error
    moved = [dict(q) for q in read_jsonl(train)]
    moved[0]["clip_start_sec"] += 0.5
    (tmp_path / "moved.jsonl").write_text("".join(json.dumps(q) + "\n" for q in moved))
    error = one_line_exit(
        capsys, lambda: extract_frames(add_args(tmp_path / "moved.jsonl", demo_dir / "videos", store))
    )
    assert "1 questions ask about another clip than" in error
    assert (store / "sizes.json").read_bytes() == before
    error = one_line_exit(capsys, lambda: extract_frames(add_args(train, demo_dir / "videos", tmp_path / "none")))
    assert "not a frame store" in error


def test_an_addition_by_array_tasks_is_listed_when_merged(demo_dir, demo_questions, demo_shards, tmp_path, capsys):
    """--add by 2 array tasks: the store is unchanged until merge_shards of the addition, which lists it; the store
    then holds what a single --add gives, sample for sample."""
    single, arrayed = tmp_path / "single", tmp_path / "arrayed"
    for store in (single, arrayed):
        shutil.copytree(demo_shards["validation_mqa"], store)
    train, videos = demo_questions["train_mqa"], demo_dir / "videos"
    assert extract_frames(add_args(train, videos, single)) == 0
    before = read_sizes(arrayed)
    for index in ("1", "0"):
        assert extract_frames(add_args(train, videos, arrayed, "--num-tasks", "2", "--task-index", index)) == 0
    assert read_sizes(arrayed) == before  # not listed before the merge
    (addition,) = arrayed.glob("add-*")
    assert "merge_shards --out " + str(addition) in capsys.readouterr().out
    assert merge_shards(["--out", str(addition)]) == 0
    listed = {name.split("/")[0] for name in read_sizes(arrayed)}
    assert addition.name in listed and sum(read_sizes(arrayed).values()) == sum(read_sizes(single).values())

    def samples(store):
        return {s["__key__"]: (s["json"], s["000.jpg"]) for s in iter_samples(shard_urls(store))}

    assert samples(arrayed) == samples(single)
    capsys.readouterr()
    assert extract_frames(add_args(train, videos, arrayed)) == 0
    assert "nothing to add" in capsys.readouterr().err


def test_two_additions_of_the_same_clips_never_list_a_key_twice(demo_dir, demo_questions, demo_shards, tmp_path):
    """Two additions of the same clips extracted before either is listed (two runs, each reading the store before
    the other listed): the second listing is refused under the store's lock, and the store stays readable."""
    store = tmp_path / "store"
    shutil.copytree(demo_shards["validation_mqa"], store)
    records, config = read_jsonl(demo_questions["train_mqa"]), extract_config(demo_dir / "videos")
    for name in ("add-first", "add-second"):
        extract(clips_to_add(records, store, config), store / name, config)
    list_addition(store, "add-first")
    before = (store / "sizes.json").read_bytes()
    with pytest.raises(
        ValueError, match=r"clips of .*add-second are listed in the store already .* store is unchanged"
    ):
        list_addition(store, "add-second")
    assert (store / "sizes.json").read_bytes() == before
    held = indexed_keys([str(store)])  # one place per key: readable by every reader
    assert set(held) == {r["narration_id"] for r in records} | {
        r["narration_id"] for r in read_jsonl(demo_questions["validation_mqa"])
    }
    list_addition(store, "add-first")  # listed already (a merge run twice): left as it is
    assert (store / "sizes.json").read_bytes() == before


@pytest.mark.slow
def test_two_concurrent_additions_into_one_store(demo_dir, demo_questions, demo_shards, tmp_path):
    """Two `extract_frames --add` of the same clips started together into one store (two question files about the
    same segments): the one that holds the store adds them, the other is refused at once in one line, or finds them
    there; either way each key is listed once."""
    store = tmp_path / "store"
    shutil.copytree(demo_shards["validation_mqa"], store)
    records = read_jsonl(demo_questions["train_mqa"])
    other = tmp_path / "train_other.jsonl"  # other questions (options), the same clips: another addition's name
    other.write_text("".join(json.dumps(r | {"options": list(reversed(r["options"]))}) + "\n" for r in records))
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    commands = [
        [sys.executable, "-m", "data_prep.extract_frames", *add_args(q, demo_dir / "videos", store)]
        for q in (demo_questions["train_mqa"], other)
    ]
    runs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    for code, err in results:
        if code == 2:
            errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and "Traceback" not in err and "is being written by pid" in errors[0], err
    held = indexed_keys([str(store)])
    assert {r["narration_id"] for r in records} <= set(held)
    assert len(list(store.glob("add-*/sizes.json"))) == 1  # one addition extracted; the other decoded nothing


def test_a_plain_extraction_never_replaces_a_store_or_a_users_files(
    demo_dir, demo_questions, demo_store, tmp_path, capsys
):
    """Without --add, an existing store is refused whoever built it (one run with additions, an array merged), and so
    is a folder holding a user's own index.json, sizes.json or report.json; --resume of a finished extraction leaves
    its listing (additions included) as it is."""
    videos, train = demo_dir / "videos", demo_questions["train_mqa"]
    store = tmp_path / "store"
    shutil.copytree(demo_store, store)  # the training clips, the validation ones added
    before = (store / "sizes.json").read_bytes()
    assert any(name.startswith("add-") for name in read_sizes(store))
    error = one_line_exit(capsys, lambda: extract_frames(extract_args(train, videos, store, "--num-frames", "8")))
    assert f"--out {store} is a frame store already (sizes.json): add the clips it lacks with --add" in error
    # --resume of the extraction that made it: finished, nothing to do, the addition still listed
    report = extract(read_jsonl(train), store, extract_config(videos), resume=True)
    assert report["written"] == len(read_jsonl(train)) and (store / "sizes.json").read_bytes() == before
    # a store built by array tasks and merge_shards (no _progress.json of its own): refused, with --resume too
    merged = tmp_path / "merged"
    for index in range(2):
        extract(read_jsonl(train), merged, extract_config(videos), task=ArrayJob(index, 2))
    assert merge_shards(["--out", str(merged)]) == 0
    listing = (merged / "sizes.json").read_bytes()
    for extra in ((), ("--resume",)):
        args = extract_args(train, videos, merged, "--num-frames", "8", *extra)
        assert "is a frame store already" in one_line_exit(capsys, lambda args=args: extract_frames(args))
    assert (merged / "sizes.json").read_bytes() == listing
    # an addition to the merged store, then merge_shards again: refused (it would unlist the addition)
    assert extract_frames(add_args(demo_questions["validation_mqa"], videos, merged)) == 0
    listing = (merged / "sizes.json").read_bytes()
    assert "merging again would unlist them" in one_line_exit(capsys, lambda: merge_shards(["--out", str(merged)]))
    assert (merged / "sizes.json").read_bytes() == listing
    # a user's own folder: index.json, sizes.json, report.json, or a thesis
    for name in ("index.json", "sizes.json", "report.json", "thesis.tex"):
        mine = tmp_path / f"mine_{name}"
        mine.mkdir()
        (mine / name).write_text('{"mine": 1}\n')
        error = one_line_exit(
            capsys, lambda mine=mine: extract_frames(extract_args(train, videos, mine, "--num-frames", "8"))
        )
        assert str(mine) in error and ("is a frame store already" in error or f"holds {name!r}" in error)
        assert sorted(p.name for p in mine.iterdir()) == [name] and (mine / name).read_text() == '{"mine": 1}\n'


def test_ctrl_c_during_an_addition_is_one_line_and_the_store_is_unchanged(
    demo_dir, demo_questions, demo_shards, tmp_path, capsys, monkeypatch
):
    from data_prep import extract_frames as module

    def interrupted(job):
        raise KeyboardInterrupt

    store = tmp_path / "store"
    shutil.copytree(demo_shards["validation_mqa"], store)
    before = snapshot_listing(store)
    monkeypatch.setattr(module, "decode_video", interrupted)
    assert extract_frames(add_args(demo_questions["train_mqa"], demo_dir / "videos", store)) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: interrupted (Ctrl-C)") and "Traceback" not in "\n".join(lines)
    assert snapshot_listing(store) == before


@pytest.mark.slow
def test_sigint_during_an_addition_by_worker_processes_is_one_line(demo_dir, demo_questions, demo_shards, tmp_path):
    """A real Ctrl-C (SIGINT to the process group) while 2 worker processes decode: one line from the command, no
    traceback from it or its workers, the store as it was, and the addition continues with --resume."""
    store = tmp_path / "store"
    shutil.copytree(demo_shards["validation_mqa"], store)
    before = snapshot_listing(store)
    args = add_args(demo_questions["train_mqa"], demo_dir / "videos", store, "--workers", "2", "--shard-size", "1")
    # each video's decoding made slow, in the workers too: a module they can import (a function of `python -c`'s
    # __main__ cannot be sent to a spawned worker)
    (tmp_path / "slow_decoding.py").write_text(
        "import time\nimport data_prep.decoding as d\nimport data_prep.extract_frames as e\n"
        "real = d.decode_video\n\n\ndef slow(job):\n    time.sleep(2)\n    return real(job)\n\n\n"
        "d.decode_video = slow\ne.decode_video = slow\n"
    )
    # Ctrl-C handled as in a terminal's foreground: a test run in the background (`cmd &`, nohup) inherits SIGINT
    # ignored, and Python then keeps ignoring it
    slow = (
        "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import sys, slow_decoding, data_prep.extract_frames as e\n"
        "print('started', flush=True)\n"
        f"sys.exit(e.main({[str(a) for a in args]!r}))\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    run = subprocess.Popen(
        [sys.executable, "-c", slow],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert run.stdout.readline().strip() == "started"
    time.sleep(3)  # the pool started, a video being decoded
    os.killpg(run.pid, signal.SIGINT)
    code, err = run.wait(timeout=120), run.stderr.read()
    run.stdout.close()
    run.stderr.close()
    assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted (Ctrl-C)")
    assert snapshot_listing(store) == before
    assert extract_frames(add_args(demo_questions["train_mqa"], demo_dir / "videos", store, "--resume")) == 0


def snapshot_listing(store):
    return (store / "sizes.json").read_bytes(), (store / "index.json").read_bytes()
