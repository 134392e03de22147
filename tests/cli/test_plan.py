"""`llavaction plan`: the table of an epoch and its rows, and bad settings refused in one line."""

import json

import pytest


def test_plan_cli_prints_the_table_and_refuses_bad_settings(demo_dir, demo_shards, tmp_path, capsys):
    from llavaction.cli.plan import main as plan
    from tests.fit_helpers import demo_args

    args = demo_args(demo_dir, demo_shards, tmp_path)[1:]  # what `train.py fit` takes, without the subcommand
    assert plan([*args, "--world-size=2", "--data.loader.samples_per_epoch=20"]) == 0
    out = capsys.readouterr().out
    assert "20 samples over 2 rank(s)" in out and "batches a rank" in out
    source_lines = [line.split() for line in out.splitlines() if line[:1].isdigit() and "train_mqa" in line]
    assert [int(row[3]) for row in source_lines] == [13, 7]  # weights 1 : 0.5 of 20
    assert [row[7] for row in source_lines] == ["mqa", "narration"]  # each source's task
    assert plan([*args, "--data.loader.samples_per_epoch=null"]) == 2
    assert "samples_per_epoch, which is null" in capsys.readouterr().err
    subset = json.dumps([{"path": str(demo_shards["train_mqa"]), "task": "mqa", "weight": "first:10%"}])
    size_only = f"--data.train={subset}"
    assert plan([*args, size_only, "--data.loader.samples_per_epoch=null"]) == 0
    assert "samples over 1 rank(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        plan([*args, "--world-size=0"])
    with pytest.raises(ValueError, match="sampling strategy 'first:-1'"):
        from llavaction.data.options import TaskSource

        TaskSource("x", "mqa", "first:-1")


def test_a_missing_question_file_names_its_build_command(demo_dir, demo_shards, tmp_path, capsys):
    from llavaction.cli.plan import main as plan
    from tests.fit_helpers import demo_args
    from tests.helpers import one_line_exit

    args = demo_args(demo_dir, demo_shards, tmp_path)[1:]
    source = json.dumps([{"frames": str(demo_shards["train_mqa"]), "questions": "nowhere/q.jsonl", "task": "mqa"}])
    error = one_line_exit(capsys, lambda: plan([*args, f"--data.train={source}"]))
    assert error == (
        "error: nowhere/q.jsonl: no such question file; build it with: python -m data_prep.build_mqa --annotations "
        "DIR --split train|validation --out nowhere/q.jsonl"
    )


def test_the_plan_library_run_as_a_command_names_the_command():
    import subprocess
    import sys

    from tests.helpers import ROOT

    ran = subprocess.run(
        [sys.executable, "-m", "llavaction.data.plan", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert ran.returncode == 1 and "the command is `llavaction plan --config CONFIG`" in ran.stderr


def test_plan_shows_an_epoch_resumed_on_another_world(demo_dir, demo_shards, tmp_path, capsys):
    """--ckpt_path: the epoch a resume on 2 ranks continues, after 4 ranks read a step of it (3 batches each): the
    rows read before, then those read after, numbered in the epoch; together the whole epoch's, each once."""
    from collections import Counter

    from llavaction.cli.plan import main as plan
    from llavaction.data.options import TaskSource
    from tests.fit_helpers import demo_args
    from tests.helpers import datamodule, loader_state, write_checkpoint

    shards = str(demo_shards["train_mqa"])
    train = [TaskSource(shards, "mqa", 1.0), TaskSource(shards, "narration", 0.5)]  # demo_args' sources
    dm = datamodule(demo_dir, demo_shards, train=train, batch_size=1, samples_per_epoch=24, shuffle_buffer=200)
    checkpoint = write_checkpoint(tmp_path / "four.ckpt", loader_state(dm, 4, 3, accumulate=3))
    args = demo_args(demo_dir, demo_shards, tmp_path)[1:]
    args += ["--data.loader.batch_size=1", "--data.loader.samples_per_epoch=24", "--trainer.accumulate_grad_batches=3"]
    assert plan([*args, "--world-size=4", f"--out={tmp_path / 'whole.jsonl'}"]) == 0
    out = tmp_path / "resumed.jsonl"
    assert plan([*args, "--world-size=2", f"--ckpt_path={checkpoint}", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "resume: trainer.accumulate_grad_batches 3 -> 6: the global batch stays 12" in printed
    assert (
        "epoch 0, read before the resume: 12 samples over 4 rank(s) x 1 loader worker(s), batch 1: batches 0 to 2"
        in printed
    )
    assert (
        "epoch 0, read after the resume: 12 samples over 2 rank(s) x 1 loader worker(s), batch 1: batches 6 to 11"
        in printed
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["part"], r["rank"]) for r in rows} == {("before", r) for r in range(4)} | {
        ("after", r) for r in range(2)
    }
    assert sorted({r["batch"] for r in rows if r["part"] == "after"}) == list(range(6, 12))
    whole = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    assert Counter(r["key"] for r in rows if not r["padding"]) == Counter(r["key"] for r in whole if not r["padding"])
    # at the checkpoint's own layout: the same plan, split where it stopped
    assert plan([*args, "--world-size=4", f"--ckpt_path={checkpoint}", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "batches 3 to 5 of each rank" in printed and "planned anew" not in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [
        {k: v for k, v in r.items() if k != "part"} for r in rows
    ] != whole  # another order: rank by rank, part by part
    assert sorted(map(json.dumps, ({k: v for k, v in r.items() if k != "part"} for r in rows))) == sorted(
        map(json.dumps, whole)
    )
