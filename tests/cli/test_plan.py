"""`llavaction plan`: the table of an epoch and its rows, and bad settings refused in one line."""

import json

import pytest


def test_plan_cli_prints_the_table_and_refuses_bad_settings(demo_dir, demo_shards, tmp_path, capsys):
    from llavaction.cli.plan import main as plan
    from tests.helpers import demo_args

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
    from tests.helpers import demo_args, one_line_exit

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
