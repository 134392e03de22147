"""Bad inputs and faults a researcher will hit: each is a clear one-line error naming the file, line, segment or shard,
or a counted skip; never a silently wrong figure (README, "Reliability")."""

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from data_prep.build_mqa import main as build_mqa
from data_prep.extract_frames import main as extract_main
from llavaction.data.stages import TaskSource
from llavaction.jsonl import read_jsonl
from llavaction.shards import ShardError, iter_shard, read_sizes
from tests.helpers import extract_args
from tests.test_datamodule import datamodule
from tests.test_training import ROOT, demo_args

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


def one_line_error(capsys) -> str:
    """The command's error: one line `error: ...` at the end of its stderr, no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "\n".join(err), err
    return errors[0]


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


def test_extract_frames_faults(demo_dir, demo_questions, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    records = read_jsonl(demo_questions["validation_mqa"])
    questions.write_text("".join(json.dumps(r) + "\n" for r in records[:3]))
    videos = demo_dir / "videos"
    assert extract_main(extract_args(questions, videos, tmp_path / "out")) == 0
    capsys.readouterr()
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in records[3:6]))
    assert extract_main(extract_args(other, videos, tmp_path / "out", "--resume")) == 2
    assert "written from other questions" in one_line_error(capsys)
    missing = [r | {"video_id": "D09_999", "narration_id": f"D09_999_{i}"} for i, r in enumerate(records[:2])]
    (tmp_path / "gone.jsonl").write_text("".join(json.dumps(r) + "\n" for r in missing))
    assert extract_main(extract_args(tmp_path / "gone.jsonl", videos, tmp_path / "empty")) == 2
    assert "no sample written, every one of the 2 was skipped" in one_line_error(capsys).split(": ", 2)[2]
    with pytest.raises(ShardError, match=f"{tmp_path / 'empty'}: the shard set holds no sample"):
        read_sizes(tmp_path / "empty")
    assert extract_main(extract_args(questions, videos, questions)) == 2
    assert "an existing file" in one_line_error(capsys)
    (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n{oops\n")
    assert extract_main(extract_args(tmp_path / "bad.jsonl", videos, tmp_path / "x")) == 2
    assert (
        one_line_error(capsys) == f"error: {tmp_path / 'bad.jsonl'}:2: not valid JSON (Expecting property name "
        "enclosed in double quotes)"
    )


def truncated_copy(source: Path, target: Path, keep_samples: int) -> None:
    """A copy of a shard set whose first shard ends cleanly after keep_samples samples (a tar cut at a sample
    boundary), while sizes.json still lists the full count."""
    shutil.copytree(source, target)
    first = sorted(target.glob("shard-*.tar"))[0]
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        keys = []
        kept = []
        for member in members:
            key = member.name.split(".")[0]
            if key not in keys:
                keys.append(key)
            if len(keys) > keep_samples:
                break
            kept.append((member, tar.extractfile(member).read()))
    with tarfile.open(first, "w") as tar:
        import io

        for member, data in kept:
            tar.addfile(member, io.BytesIO(data))


def test_truncated_shards(demo_dir, demo_shards, tmp_path, caplog):
    truncated_copy(demo_shards["validation_mqa"], tmp_path / "val", keep_samples=2)
    url = sorted((tmp_path / "val").glob("shard-*.tar"))[0]
    with pytest.raises(ShardError, match=f"{url}: 2 samples, sizes.json lists 8; the shard is truncated"):
        list(iter_shard(str(url), expected=8))
    dm = datamodule(demo_dir, demo_shards, val=[str(tmp_path / "val")])
    with pytest.raises(ShardError, match="truncated"):
        list(dm.val_dataloader())  # evaluation: an error, not fewer questions
    # training: a shard cut inside a sample is a counted skip that says so
    truncated_copy(demo_shards["train_mqa"], tmp_path / "train", keep_samples=8)
    first = sorted((tmp_path / "train").glob("shard-*.tar"))[0]
    first.write_bytes(first.read_bytes()[: len(first.read_bytes()) // 2 + 7])
    dm = datamodule(
        demo_dir,
        demo_shards,
        train=[TaskSource(str(tmp_path / "train"), "mqa")],
        samples_per_epoch=40,
        shuffle_buffer=2,
    )
    with caplog.at_level(logging.WARNING):
        batches = list(dm.train_dataloader())
    assert len(batches) == 10
    assert any("the shard is truncated" in r.message and "skipped so far" in r.message for r in caplog.records)
    # every planned sample the cut shard could not give is counted, not the one event
    readable = 0
    with pytest.raises(ShardError):
        for _ in iter_shard(str(first), expected=read_sizes(tmp_path / "train")[first.name]):
            readable += 1
    planner = dm.epoch_planner(world_size=1, num_workers=0)
    plan = planner.slot(0, 0, 0)
    shard = [Path(u).name for u in planner.sources[0].urls].index(first.name)
    lost = sum(
        1
        for batch in plan.batches
        for p in batch
        if not p.padding and planner.item_of(plan, p)[:2] >= (shard, readable) and planner.item_of(plan, p)[0] == shard
    )
    assert lost > 1 and sum(b["skipped_samples"]["unreadable_shard"] for b in batches) == lost


def test_train_cli_errors_are_one_line_and_the_demo_checkpoints_every_epoch(demo_dir, demo_shards, tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    args = demo_args(demo_dir, demo_shards, tmp_path / "bad", '--data.val=["/no/such/shards"]')
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: /no/such/shards/sizes.json not found; build the shards with: python -m data_prep.extract_frames "
        "--questions Q.jsonl --videos DIR --out /no/such/shards"
    )
    assert "Traceback" not in result.stderr
    start = time.perf_counter()
    args = demo_args(demo_dir, demo_shards, tmp_path / "tok", "--model.tokenizer=/no/such/tokenizer")
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "tokenizer /no/such/tokenizer: no such file or directory" in result.stderr
    assert time.perf_counter() - start < 60  # no hub retries
    # a config validating every 4 epochs still leaves a checkpoint after the first one (to resume a killed demo)
    from llavaction.cli import main as cli

    cli(
        demo_args(
            demo_dir, demo_shards, tmp_path / "demo", "--trainer.max_epochs=1", "--data.loader.samples_per_epoch=8"
        )
    )
    assert (tmp_path / "demo" / "checkpoints" / "last.ckpt").exists()


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


def test_bad_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: expected a JSON object"):
        read_jsonl(tmp_path / "x.jsonl")


def test_one_writer_per_output_and_a_dead_writers_lock_is_taken_over(demo_dir, demo_questions, tmp_path):
    from llavaction.files import exclusive_output, lock_path

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(demo_questions["validation_mqa"])[:2]))
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "data_prep.extract_frames", *extract_args(questions, demo_dir / "videos", out)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with exclusive_output(out):  # another job writing this folder right now
        busy = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    error = busy.stderr.strip().splitlines()
    assert busy.returncode == 2 and len(error) == 1, busy.stderr[-2000:]
    assert f"{out} is being written by pid {os.getpid()}" in error[0] and "choose another output" in error[0]
    assert not (out / "sizes.json").exists()
    # a writer killed while holding the folder leaves its lock; the next run on this host takes it over
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from llavaction.files import exclusive_output\nwith exclusive_output({str(out)!r}):"
            "\n    print('held', flush=True)\n    import time; time.sleep(60)",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert lock_path(out).exists()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "sizes.json").exists() and not lock_path(out).exists()
    # two runs started together into one folder: one writes it, the other is refused, the output is whole
    shutil.rmtree(out)
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is being written by pid" in refused or "holds an earlier run" in refused
    assert sum(read_sizes(out).values()) == 2 and not lock_path(out).exists()


def one_line_exit(capsys, call) -> str:
    """Run a CLI's main in this process: exit status 2 and one error line, the last on stderr (after any progress
    bars), which is returned."""
    try:
        code = call()
    except SystemExit as exit_info:  # argparse's one-line error
        code = exit_info.code
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in lines, lines
    return errors[0]


def test_counts_are_positive_integers_checked_where_read(demo_dir, demo_shards, demo_questions, tmp_path, capsys):
    from llavaction.evaluate import main as evaluate
    from llavaction.train import main as train

    for override, message in (
        ("--data.loader.batch_size=0", "data.loader.batch_size must be an integer >= 1, got 0"),
        ("--data.loader.batch_size=-1", "data.loader.batch_size must be an integer >= 1, got -1"),
        ("--data.num_frames=0", "data.num_frames must be an integer >= 1, got 0"),
        ("--data.loader.samples_per_epoch=0", "data.loader.samples_per_epoch must be an integer >= 1 or null"),
    ):
        args = demo_args(demo_dir, demo_shards, tmp_path / "run", override)
        assert message in one_line_exit(capsys, lambda args=args: train(args))
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    for bad, message in (
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--num-frames", "-3"], "argument --num-frames: must be at least 1, got -3"),
        (["--precision", "bf16"], "argument --precision: invalid choice"),
    ):
        args = ["mqa", *common, "--checkpoint", "x", "--out", str(tmp_path / "o"), *bad]
        assert message in one_line_exit(capsys, lambda args=args: evaluate(args))


def test_interrupted_writes_leave_nothing_under_the_final_name(tmp_path, monkeypatch):
    import errno

    from llavaction.files import atomic_output
    from llavaction.jsonl import write_jsonl

    class FullDisk:
        """A stream that fails as a full disk does, after some bytes."""

        def __init__(self, stream):
            self.stream, self.written = stream, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.stream.write(data)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    target = tmp_path / "predictions.jsonl"
    with pytest.raises(OSError, match=f"{target}: No space left on device"):
        with atomic_output(target) as stream:
            full = FullDisk(stream)
            for i in range(100):
                full.write(json.dumps({"i": i}) + "\n")
    assert list(tmp_path.iterdir()) == []  # no final file, no temporary one
    write_jsonl(target, [{"i": 1}])
    assert read_jsonl(target) == [{"i": 1}]
    # a writer killed mid-write leaves only its hidden temporary file, which the next run of the folder removes
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\nfrom llavaction.files import atomic_output\n"
            f"with atomic_output({str(tmp_path / 'sizes.json')!r}) as f:\n    f.write('{{')\n    f.flush()\n"
            "    os._exit(9)",
        ],
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == 9 and not (tmp_path / "sizes.json").exists()
    from llavaction.files import remove_stale_temporaries

    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


def test_a_checkpoint_that_cannot_be_written_leaves_no_checkpoint(demo_dir, demo_shards, tmp_path, monkeypatch):
    import errno

    import lightning as L

    from llavaction.cli import main as cli

    real = L.Trainer.save_checkpoint

    def fail_midway(self, filepath, weights_only=False, storage_options=None):
        real(self, filepath, weights_only, storage_options)
        Path(filepath).write_bytes(Path(filepath).read_bytes()[:1000])  # part of it reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(L.Trainer, "save_checkpoint", fail_midway)
    root = tmp_path / "full"
    with pytest.raises(OSError, match=r"step=2.ckpt: the checkpoint was not written \(No space left on device"):
        cli(demo_args(demo_dir, demo_shards, root, "--trainer.max_epochs=1", "--data.loader.samples_per_epoch=8"))
    assert list((root / "checkpoints").iterdir()) == []  # neither last.ckpt nor its partial file


def test_unreadable_files_are_one_line_naming_them(demo_dir, demo_shards, demo_questions, tmp_path, capsys):
    import numpy as np
    import torch

    from llavaction.evaluate import main as evaluate
    from llavaction.train import main as train

    text = tmp_path / "text.ckpt"
    text.write_text("not a checkpoint")
    cut = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, cut)
    cut.write_bytes(cut.read_bytes()[:200])
    common = ["--questions", str(demo_questions["validation_mqa"]), "--shards", str(demo_shards["validation_mqa"])]
    for bad in (text, cut):
        args = ["mqa", *common, "--checkpoint", str(bad), "--out", str(tmp_path / "o")]
        assert f"{bad}: not a readable checkpoint" in one_line_exit(capsys, lambda args=args: evaluate(args))
        args = [*demo_args(demo_dir, demo_shards, tmp_path), f"--ckpt_path={bad}"]
        assert f"{bad}: not a readable checkpoint" in one_line_exit(capsys, lambda args=args: train(args))
    whole = tmp_path / "whole.npz"
    np.savez(whole, verb_output=np.zeros((1, 97)), noun_output=np.zeros((1, 300)), narration_id=np.array(["a"]))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "cut.npz").write_bytes(whole.read_bytes()[:100])
    np.savez(
        tmp_path / "objects.npz",
        verb_output=np.zeros((1, 97)),
        noun_output=np.zeros((1, 300)),
        narration_id=np.array(["a"], dtype=object),
    )
    for name, message in (
        ("empty.npz", "not a readable scores file"),
        ("cut.npz", "not a readable scores file"),
        ("objects.npz", "holds object arrays"),
    ):
        args = ["ek100", "--scores", str(tmp_path / name), "--annotations", str(demo_dir / "annotations")]
        args += ["--out", str(tmp_path / "e.json")]
        assert f"{tmp_path / name}: {message}" in one_line_exit(capsys, lambda args=args: evaluate(args))


def test_a_worker_error_is_one_line(demo_questions, demo_shards, demo_dir, tmp_path, capsys):
    """A validation shard cut at a sample boundary, read in a DataLoader worker: the worker's error, one line."""
    from llavaction.evaluate import main as evaluate
    from tests.test_evaluate import original_checkpoint_at

    truncated_copy(demo_shards["validation_mqa"], tmp_path / "val", keep_samples=2)
    checkpoint = original_checkpoint_at(demo_dir, tmp_path / "ckpt")
    args = ["mqa", "--questions", str(demo_questions["validation_mqa"]), "--shards", str(tmp_path / "val")]
    args += ["--checkpoint", str(checkpoint), "--num-workers", "1", "--mode", "score", "--out", str(tmp_path / "o")]
    line = one_line_exit(capsys, lambda: evaluate(args))
    assert "the shard is truncated" in line and "shard-000000.tar" in line and "Traceback" not in line


def test_build_replay_with_every_record_skipped_writes_its_skip_list(tmp_path, capsys):
    from data_prep.build_replay import main as build_replay

    records = [{"id": "a", "video": "gone.mp4", "conversations": [{"from": "human", "value": "?"}]}]
    (tmp_path / "c.json").write_text(json.dumps(records))
    out = tmp_path / "replay.jsonl"
    args = ["--conversations", str(tmp_path / "c.json"), "--videos", str(tmp_path), "--out", str(out)]
    line = one_line_exit(capsys, lambda: build_replay(args))
    assert "all 1 were skipped" in line and read_jsonl(tmp_path / "replay.skipped.jsonl")[0]["id"] == "a"
    assert not out.exists()
