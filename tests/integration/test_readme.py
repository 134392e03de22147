"""README's "First hour on the demo" and "Your own data" run as written: their commands (and YAML), read from README
itself, on a small copy of the demo laid out as `make demo` leaves it (demo_data/, runs/demo/checkpoints/last.ckpt)
and as one's own data (my_data/)."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def readme_block(section: str, language: str) -> str:
    """A README section's first code block in `language`."""
    text = (ROOT / "README.md").read_text()
    return text.split(f"## {section}\n", 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def readme_commands(section: str) -> list[list[str]]:
    """The commands of a README section's first bash block (continuation lines joined, comments left out)."""
    joined = readme_block(section, "bash").replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_first_hour_commands_run_as_written(demo_dir, demo_questions, demo_store, tmp_path):
    data = tmp_path / "demo_data"
    for name in ("annotations", "videos", "tokenizer"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).symlink_to(demo_dir / name)
    (data / "questions").mkdir()
    for ours, theirs in (("val_mqa", "validation_mqa"), ("train_mqa", "train_mqa")):
        (data / "questions" / f"{ours}.jsonl").symlink_to(demo_questions[theirs])
    (data / "shards").mkdir()
    (data / "shards" / "mqa").symlink_to(demo_store)
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    (tmp_path / "train.py").symlink_to(ROOT / "train.py")
    env = os.environ | {"PYTHONPATH": str(ROOT)}

    def run(command: list[str]) -> None:
        if command[0] == ".venv/bin/python":
            command = [sys.executable, *command[1:]]
        elif command[0] == ".venv/bin/llavaction":  # the console command of this checkout
            command = [sys.executable, "-m", "llavaction", *command[1:]]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr[-3000:]}"

    # what `make demo` leaves, in one short epoch
    run(
        [sys.executable, str(ROOT / "train.py"), "fit", "--config", "experiments/demo.yaml"]
        + ["--trainer.max_epochs=1", "--data.loader.samples_per_epoch=32", "--trainer.check_val_every_n_epoch=1"]
    )
    assert (tmp_path / "runs" / "demo" / "checkpoints" / "last.ckpt").exists()
    commands = readme_commands("First hour on the demo")
    assert len(commands) == 9
    for command in commands:
        run(command)
    made_here = ("eval/results.json", "report/index.html", "seen.png", "lmms_task/ek100_mqa.yaml", "prompts.jsonl")
    for made in made_here + ("val_random_k3.card.json", "eval_random_k3/results.json"):
        assert (tmp_path / "runs" / "demo" / made).stat().st_size > 0, made
    assert (tmp_path / "runs" / "demo" / "plan.jsonl").read_text().count("\n") >= 32
    asked = [json.loads(line) for line in open(tmp_path / "runs" / "demo" / "eval_random_k3" / "predictions.jsonl")]
    assert len(asked) == 8 and all(len(p["options"]) == 3 for p in asked)  # its questions over the stored frames
    # "Your own data": the demo's CSVs and videos as one's own, its YAML written as README gives it
    for name in ("annotations", "videos"):
        (tmp_path / "my_data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "my_data" / name).symlink_to(demo_dir / name)
    (tmp_path / "my_data.yaml").write_text(readme_block("Your own data", "yaml"))
    commands = readme_commands("Your own data")
    assert len(commands) == 7 and commands[-1][-2:] == ["--config", "my_data.yaml"]
    for command in commands[:-1]:
        run(command)
    run([*commands[-1], "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1"])  # one epoch, validated
    mine = tmp_path / "runs" / "mine"
    assert (mine / "eval_before" / "results.json").exists() and (mine / "start" / "config.json").exists()
    (result,) = mine.rglob("validation_results.json")
    assert "val/ek100/all_verb_accuracy_at_1" in json.loads(result.read_text())  # the heads over one's vocabulary
