"""Typed command options (llavaction.utils.options): one dataclass per command, parsed by jsonargparse with `--config`,
`--print_config` and `--help`; both spellings of an option, lists, flags; errors in one line; the console command."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import yaml

from llavaction.utils.options import Command, dispatch, main_of, parse
from tests.helpers import one_line_exit


@dataclass(frozen=True)
class Sample:
    """A command of the tests.

    Args:
        questions: files.
        out: a folder.
        mode: how.
        num_frames: frames (default: the checkpoint's).
        flag: a switch.
        maybe: a switch that may stay unset.
    """

    questions: list[Path]
    out: Path
    mode: Literal["generate", "score"] = "generate"
    num_frames: int | None = None
    flag: bool = False
    maybe: bool | None = None

    def __post_init__(self):
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}")


def values(args: list[str]) -> dict:
    return parse(Sample, args, "sample")[0]


def test_both_spellings_lists_and_flags():
    given = values(["--questions", "a.jsonl", "b.jsonl", "--out", "o", "--num-frames", "8", "--flag", "--no-maybe"])
    assert given == {
        "questions": [Path("a.jsonl"), Path("b.jsonl")],
        "out": Path("o"),
        "mode": "generate",
        "num_frames": 8,
        "flag": True,
        "maybe": False,
    }
    assert values(["--questions", '["a.jsonl"]', "--out=o", "--num_frames=8", "--flag=false"])["flag"] is False
    assert values(["--questions+", "a.jsonl", "--questions+", "b.jsonl", "--out", "o"])["questions"] == [
        Path("a.jsonl"),
        Path("b.jsonl"),
    ]


def test_config_file_and_print_config(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("questions: [q.jsonl]\nout: results\nmode: score\n")
    assert values(["--config", str(config), "--num_frames", "4"]) | {"num_frames": 4} == values(
        ["--questions", "q.jsonl", "--out", "results", "--mode", "score", "--num-frames", "4"]
    )
    with pytest.raises(SystemExit) as exit_info:
        parse(Sample, ["--config", str(config), "--print_config"], "sample")
    assert exit_info.value.code in (0, None)
    assert yaml.safe_load(capsys.readouterr().out) == {
        "questions": ["q.jsonl"],
        "out": "results",
        "mode": "score",
        "num_frames": None,
        "flag": False,
        "maybe": None,
        "debug": False,
    }


def test_every_error_is_one_line(capsys):
    main = main_of(Sample, lambda options: 0, "sample")
    for args, message in (
        (["--out", "o"], "error: the following arguments are required: questions"),
        (
            ["--questions", "q", "--out", "o", "--mode", "scor"],
            "error: --mode: expected one of generate, score, got scor",
        ),
        (["--questions", "q", "--out", "o", "--num-frames", "x"], "num_frames"),
        (["--questions", "q", "--out", "o", "--bogus", "1"], "unrecognized arguments: --bogus"),
        (["--questions", "q", "--out", "o", "--num-frames", "0"], "error: num_frames must be at least 1, got 0"),
    ):
        assert message in one_line_exit(capsys, lambda args=args: main(args))


def test_commands_and_the_console(capsys):
    commands = {"run": Command(Sample, lambda options: len(options.questions), "run it")}
    assert dispatch(commands, ["run", "--questions", "a", "b", "--out", "o"], "tool", "a tool") == 2
    assert dispatch(commands, ["--help"], "tool", "a tool") == 0 and "run it" in capsys.readouterr().out
    assert "unknown command 'walk'" in one_line_exit(capsys, lambda: dispatch(commands, ["walk"], "tool", "a tool"))
    from llavaction.cli.console import COMMANDS, main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in COMMANDS)
    assert "unknown command" in one_line_exit(capsys, lambda: main(["nothing"]))


def test_a_malformed_training_source_is_one_line_with_its_own_reason(demo_dir, demo_shards, tmp_path, capsys):
    """jsonargparse lists why each type of `data.train` (a list of sources, or null) refused the value; the line says
    the reason of the list's type, not null's."""
    from llavaction.cli.train import main as train
    from tests.fit_helpers import demo_args

    args = demo_args(demo_dir, demo_shards, tmp_path / "run")
    for value, reason in [
        ('[{"path": "x", "task": "mqaa"}]', "--data.train: task 'mqaa' not in mqa, narration, temporal, qa"),
        ('{"path": "x"}', "--data.train: expected a list, given a dict"),
        (
            '[{"pth": "x", "task": "mqa"}]',
            "--data.train: TaskSource.__init__() got an unexpected keyword argument 'pth'",
        ),
    ]:
        error = one_line_exit(capsys, lambda value=value: train([*args, f"--data.train={value}"]))
        assert error == f"error: {reason}"
    assert not (tmp_path / "run").exists()
